"""No process outlives its command (issue 12): ``consist audit`` killed with
SIGTERM or SIGKILL leaves no worker behind; SIGTERM stops it like Ctrl-C. Real
subprocesses, real signals, the process table read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("consist_spatial")
psutil = pytest.importorskip("psutil")

sys.path.insert(0, str(Path(__file__).parent))
import audit_data  # noqa: E402


def _start_audit(root: Path, out: Path, workers: int = 2) -> subprocess.Popen[str]:
    env = {**os.environ, "CONSIST_PLUGINS": "spatial"}
    cmd = [sys.executable, "-m", "consist.cli.main", "audit", str(root), "--out", str(out), "--workers", str(workers), "--chunk-size", "1", "--no-report"]
    # a new session: the signal goes to the parent only, as `kill PID` does (not Ctrl-C to a group)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _wait_for_workers(proc: subprocess.Popen[str], n: int, timeout: float = 120) -> list[int]:
    end = time.monotonic() + timeout
    parent = psutil.Process(proc.pid)
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"audit ended early: {proc.returncode} {proc.stderr.read() if proc.stderr else ''}")
        kids = [c.pid for c in parent.children(recursive=True) if "multiprocessing" in " ".join(_cmdline(c))]
        if len(kids) >= n:
            return kids
        time.sleep(0.1)
    raise AssertionError("the audit never started its workers")


def _cmdline(p: object) -> list[str]:
    try:
        return list(p.cmdline())  # type: ignore[attr-defined]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_gone(pids: list[int], timeout: float = 20) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and _alive(pids):
        time.sleep(0.1)
    return _alive(pids)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_audit_leaves_no_worker_alive(tmp_path, sig):
    root, _truth = audit_data.build(tmp_path / "photos")
    proc = _start_audit(root, tmp_path / "out")
    workers: list[int] = []
    try:
        workers = _wait_for_workers(proc, 2)
        time.sleep(0.2)  # the workers are busy (or blocked waiting for tasks)
        os.kill(proc.pid, sig)
        _out, err = proc.communicate(timeout=60)
        left = _wait_gone(workers)
        assert not left, f"workers still alive after {sig.name}: {left}"
        if sig == signal.SIGTERM:  # shuts down like Ctrl-C: the resume hint, exit 130, no traceback
            assert proc.returncode == 130, err
            assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
        # never leave a process of this test behind -- only this test's: the session's
        # other children (the PostgreSQL server of the store tests) must live on
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)


SCRIPT = """
import consist
result = consist.audit({root!r}, {out!r}, workers=2, report=False)
print("AUDITED", len(result.rows))
"""


def test_audit_from_a_plain_script_without_a_main_guard(tmp_path):
    root, truth = audit_data.build(tmp_path / "photos")
    script = tmp_path / "plain_script.py"
    script.write_text(SCRIPT.format(root=str(root), out=str(tmp_path / "out")))
    env = {**os.environ, "CONSIST_PLUGINS": "spatial"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("AUDITED") == 1 and f"AUDITED {len(truth)}" in proc.stdout  # ran once, not once per worker
    assert "BrokenProcessPool" not in proc.stderr


def test_audit_from_a_module_run_with_dash_m_without_a_main_guard(tmp_path):
    root, _truth = audit_data.build(tmp_path / "photos")
    (tmp_path / "plain_module.py").write_text(SCRIPT.format(root=str(root), out=str(tmp_path / "out")))
    env = {**os.environ, "CONSIST_PLUGINS": "spatial", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "plain_module"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("AUDITED") == 1
