"""Outputs that cannot hurt whoever opens them (issue 12): spreadsheet formula
injection in every CSV consist writes, terminal escapes in what it prints, the label
filter of report.html, the store as the one truth of --apply, a locked --out."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from consist.csvcells import FORMULA_TRIGGERS, csv_cell, read_csv_cell

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cli(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "CONSIST_PLUGINS": "spatial", **(env or {})}
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=full, timeout=timeout)


#: folder names (labels) a spreadsheet would run as formulas
HOSTILE = {"cat": "=1+1", "coffee": "-2+3", "astronaut": "@SUM(A1)", "hubble": "+hubble"}


@pytest.fixture(scope="module")
def hostile_audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from audit_data import build

    base = tmp_path_factory.mktemp("hostile")
    root, _ = build(base / "photos")
    for old, new in HOSTILE.items():
        (root / old).rename(root / new)
    out = base / "out"
    proc = _cli("audit", str(root), "--out", str(out), "--workers", "1", "--apply", "--min-witnesses", "1", "--min-confidence", "0.5", "--no-report")
    assert proc.returncode == 0, proc.stderr
    return out


def test_cells_round_trip() -> None:
    for v in ["=1+1", "+x", "-1", "@a", "\tx", "\rx", "'=x", "''+y", "'plain", "plain", "", "a=b"]:
        written = csv_cell(v)
        assert not written.startswith(FORMULA_TRIGGERS)
        assert read_csv_cell(written) == v
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("plain") == "plain" and csv_cell("'plain") == "'plain"


def _cells(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_no_csv_cell_is_a_formula(hostile_audit: Path) -> None:
    out = hostile_audit
    files = [out / "audit.csv", out / "labels.corrected.csv", out / "label_changes.csv"]
    changes = _cells(out / "label_changes.csv")
    assert len(changes) > 1, "the fixture should apply at least one change"
    for f in files:
        for row in _cells(f):
            for cell in row:
                assert not cell.startswith(FORMULA_TRIGGERS), (f.name, cell)
    given = {read_csv_cell(r[1]) for r in _cells(out / "audit.csv")[1:]}
    assert given == set(HOSTILE.values())  # the originals, read back


def test_corrected_labels_read_back_with_the_original_labels(hostile_audit: Path) -> None:
    from consist.datasets import read_dataset

    ds = read_dataset(hostile_audit.parent / "photos", hostile_audit / "labels.corrected.csv")
    assert set(ds.labels()) <= set(HOSTILE.values())
    assert not ds.problems
