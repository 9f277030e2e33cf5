"""--resume after Ctrl-C and kill -9: no sample lost, none verified twice, the same
verdicts as an uninterrupted run. Real subprocesses, real signals."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("consist_spatial")

import consist
from consist.audit.journal import Journal, read_journal

sys.path.insert(0, str(Path(__file__).parent))
import audit_data


def _start(root: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CONSIST_PLUGINS": "spatial"}
    cmd = [sys.executable, "-m", "consist.cli.main", "audit", str(root), "--out", str(out), "--workers", "1", "--chunk-size", "1", "--no-report", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen[str], timeout: float = 120) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            lines = path.read_bytes().count(b"\n")
            if lines >= n:
                return lines
        if proc.poll() is not None:
            raise AssertionError(f"audit ended early: {proc.returncode} {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


def test_interrupt_then_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    root, truth = audit_data.build(tmp_path / "photos")
    out = tmp_path / "out"
    journal = out / ".audit" / "verified.jsonl"
    n = len(truth)

    proc = _start(root, out)
    _wait_for_lines(journal, 2, proc)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    after_ctrl_c = len(list(read_journal(journal)))
    assert 2 <= after_ctrl_c < n

    proc = _start(root, out, "--resume")
    _wait_for_lines(journal, after_ctrl_c + 2, proc)
    proc.kill()  # kill -9: no clean-up at all
    proc.wait(timeout=30)
    killed_at = [r["id"] for r in read_journal(journal)]
    assert len(killed_at) == len(set(killed_at)) and after_ctrl_c + 2 <= len(killed_at) < n

    proc = _start(root, out, "--resume")
    _stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"resuming: {len(killed_at)} of {n} samples already verified" in err
    ids = [r["id"] for r in read_journal(journal)]
    assert sorted(ids) == sorted(truth)  # every sample once
    raw_ids = [json.loads(line)["id"] for line in journal.read_text(encoding="utf-8").splitlines()]
    assert len(raw_ids) == len(set(raw_ids))  # not even a duplicate line on disk
    with open(out / "audit.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["sample"] for r in rows) == sorted(truth)

    # the same verdicts as an uninterrupted run (features from the same cache)
    clean = consist.audit(root, tmp_path / "clean", store=f"sqlite:///{out / 'store.db'}", workers=1, report=False)
    expect = {r.sample: (r.flagged, r.suggested_label, r.status) for r in clean.rows}
    got = {r["sample"]: (r["flagged"] == "true", r["suggested_label"] or None, r["status"]) for r in rows}
    assert got == expect


def test_resume_refuses_other_options(tmp_path: Path) -> None:
    root, _ = audit_data.build(tmp_path / "photos")
    out = tmp_path / "out"
    (out / ".audit").mkdir(parents=True)
    (out / ".audit" / "run.json").write_text(json.dumps({"fingerprint": "something else"}))
    env = {**os.environ, "CONSIST_PLUGINS": "spatial"}
    r = subprocess.run([sys.executable, "-m", "consist.cli.main", "audit", str(root), "--out", str(out), "--resume"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "cannot --resume" in r.stderr


def test_journal_drops_a_torn_last_line_and_never_writes_an_id_twice(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path, resume=False) as j:
        assert j.append([{"id": "a", "v": 1}, {"id": "b", "v": 2}]) == 2
    with open(path, "ab") as fh:
        fh.write(b'{"id": "c", "v"')  # the write kill -9 interrupted
    assert [r["id"] for r in read_journal(path)] == ["a", "b"]
    with Journal(path, resume=True) as j:
        assert j.done == {"a", "b"}
        assert j.append([{"id": "b", "v": 9}, {"id": "c", "v": 3}]) == 1
    assert [(r["id"], r["v"]) for r in read_journal(path)] == [("a", 1), ("b", 2), ("c", 3)]
    assert path.read_bytes().endswith(b"\n")
