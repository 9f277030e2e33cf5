"""Hostile inputs (issue 12): symbolic-link loops, 16-bit and float images, paths
outside the dataset, changed pixels under --resume, unbounded reads. Real files in
tmp_path, the real command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from consist.datasets import read_dataset

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONSIST_PLUGINS": os.environ.get("CONSIST_PLUGINS", "spatial")}
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=env, timeout=timeout)


def _photo(path: Path, seed: int, side: int = 96) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------ 1. symlink loops


def test_symlink_loop_is_reported_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(3):
        _photo(root / "a" / f"a{i}.png", i)
        _photo(root / "b" / f"b{i}.png", 10 + i)
    os.symlink("..", root / "a" / "loop")  # photos/a/loop -> photos
    os.symlink("../b", root / "a" / "other")  # a second path to b's images
    ds = read_dataset(root)
    assert sorted(it.id for it in ds) == [f"a/a{i}.png" for i in range(3)] + [f"b/b{i}.png" for i in range(3)]
    assert {it.id: it.label for it in ds} == {**{f"a/a{i}.png": "a" for i in range(3)}, **{f"b/b{i}.png": "b" for i in range(3)}}
    loops = [p for p in ds.problems if p.kind == "symlink_loop"]
    assert sorted(p.path for p in loops) == ["a/loop", "a/other"]
    assert all("symbolic link" in p.message and "\n" not in p.message for p in loops)


def test_symlink_loop_audit_finishes(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(3):
        _photo(root / "a" / f"a{i}.png", i)
        _photo(root / "b" / f"b{i}.png", 10 + i)
    os.symlink("..", root / "a" / "loop")
    proc = _cli("audit", str(root), "--out", str(tmp_path / "out"), "--workers", "1", "--no-report", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "a/loop" in proc.stderr and "symbolic link" in proc.stderr
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["samples"] == 6
