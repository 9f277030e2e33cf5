"""Bad input to consist audit: each problem one line naming the file, listed in
summary.json; the audit goes on; exit codes as documented."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

pytest.importorskip("consist_spatial")

import consist

sys.path.insert(0, str(Path(__file__).parent))
import audit_data


def _huge_png(path: Path, side: int = 20_000) -> None:
    """A tiny file whose header claims a 400-megapixel image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _truth = audit_data.build(tmp_path_factory.mktemp("messy") / "photos")
    good = next((root / "cat").glob("*.jpg"))
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / "notes.jpg").write_text("these are not pixels\n")
    (root / "coffee" / "truncated.jpg").write_bytes(good.read_bytes()[:500])
    _huge_png(root / "coffee" / "huge.png")
    unicode_name = root / "hubble" / "Zürich 東京.jpg"
    shutil.copy(next((root / "hubble").glob("*.jpg")), unicode_name)
    raw = os.fsencode(root / "astronaut") + b"/caf\xe9.jpg"  # not UTF-8
    with open(raw, "wb") as fh:
        fh.write(next((root / "astronaut").glob("*.jpg")).read_bytes())
    (root / "single").mkdir()
    shutil.copy(next((root / "cat").glob("*.jpg")), root / "single" / "only.jpg")
    return root


def test_bad_files_are_reported_by_name_and_the_audit_continues(messy: Path, tmp_path: Path) -> None:
    res = consist.audit(messy, tmp_path / "out", workers=1, report=True)
    s = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    messages = [f["message"] for f in s["failures"]]
    for name, problem in (("empty.jpg", "empty file"), ("notes.jpg", "not an image"), ("truncated.jpg", ""), ("huge.png", "MP")):
        hits = [m for m in messages if name in m]
        assert hits and problem in hits[0], (name, messages)
        assert all("\n" not in m for m in hits)
    rows = {r.sample: r for r in res.rows}
    assert rows["cat/empty.jpg"].status == "unreadable" and not rows["cat/empty.jpg"].flagged
    assert rows["hubble/Zürich 東京.jpg"].status in ("ok", "flagged")  # unicode names are fine
    assert not any(sid.startswith("astronaut/caf") for sid in rows)  # a non-UTF-8 name: reported, skipped
    bad_name = [f for f in s["failures"] if f["kind"] == "bad_name"]
    assert len(bad_name) == 1 and "caf\\xe9.jpg" in bad_name[0]["message"] and "not valid UTF-8" in bad_name[0]["message"]
    assert s["singleton_labels"] == ["single"]
    assert rows["single/only.jpg"].flagged and rows["single/only.jpg"].suggested_label == "cat"
    assert s["counts"]["unreadable"] == 4 and s["counts"]["flagged"] == 3
    # every output could be written despite the odd names
    assert (tmp_path / "out" / "audit.csv").stat().st_size > 0 and (tmp_path / "out" / "report.html").exists()
    json.loads((tmp_path / "out" / "audit.jsonl").read_text(encoding="utf-8").splitlines()[0])


def test_csv_problems_are_listed_not_fatal(messy: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,class,photographer\n"
        "cat/cat0.jpg,cat,ann\n"
        "cat/cat0.jpg,cat,ann\n"  # duplicate row
        "cat/gone.jpg,cat,bob\n"  # missing file
        "cat/cat2.jpg,cat,carl\n"
        "coffee/cof0.jpg,coffee,dora\n"
        "coffee/cat1.jpg,coffee,dora\n"
        "coffee/cof2.jpg,coffee,eve\n",
        encoding="utf-8",
    )
    res = consist.audit(messy, tmp_path / "out", labels=labels, label_column="class", workers=1, report=False)
    s = res.summary
    kinds = sorted(f["kind"] for f in s["failures"])
    assert kinds == ["duplicate", "missing_file"]
    assert any("gone.jpg" in f["message"] for f in s["failures"])
    rows = {r.sample: r for r in res.rows}
    assert rows["cat/cat0.jpg"].meta == {"photographer": "ann"}  # extra columns kept
    text = (tmp_path / "out" / "audit.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0].endswith(",photographer") and "carl" in text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONSIST_PLUGINS": "spatial"}
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=env, timeout=120)


def test_unusable_input_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = _cli("audit", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no images found" in r.stderr and "empty" in r.stderr
    (tmp_path / "ds" / "a").mkdir(parents=True)
    bad = tmp_path / "nolabel.csv"
    bad.write_text("path,kind\na/x.jpg,cat\n", encoding="utf-8")
    r = _cli("audit", str(tmp_path / "ds"), "--labels", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "nolabel.csv: no 'label' column" in r.stderr and "--label-column" in r.stderr
    r = _cli("audit", str(tmp_path / "ds"), "--labels", str(bad), "--label-column", "missing", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no column 'missing'" in r.stderr
    r = _cli("audit", str(tmp_path / "ds"), "--out", str(tmp_path / "o"), "--executor", "ftp://x")
    assert r.returncode == 2 and "unknown executor" in r.stderr
