"""The benchmark scripts must keep running (their figures are not asserted here:
speed targets live in the benchmarks themselves, see benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["bench_engine.py", "bench_store.py"])
def test_benchmark_quick_run_prints_targets(script):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    targets = report["targets"]
    assert targets and all({"metric", "measured", "target"} <= set(t) for t in targets)


def test_review_benchmark_quick_run_prints_targets():
    pytest.importorskip("fastapi")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_review.py"), "--quick", "--no-browser", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["samples"] == 1000 and report["api"]["n_errors"] == 0
    assert {t["metric"].split(" at ")[0] for t in report["targets"]} >= {"time to first page"}


SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "landmark-multiview").is_dir(), reason="needs ../shared/data (not in CI)")
def test_spatial_benchmark_quick_run(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_spatial.py"), "--quick", "--json", "--quiet", "--data", str(SHARED), "--cache", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    auc = report["auc"]["landmark-multiview"]["pipelines"][0]
    assert auc["pipeline"] == "sift+nn" and 0.0 <= auc["auc_score"] <= 1.0
    assert any(t["metric"].startswith("sift extraction") for t in report["targets"])


def test_topological_benchmark_scaling_and_propagation_without_shared_data(tmp_path):
    """The synthetic-graph part needs no photos: it must run everywhere (CI too)."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_topological.py"), "--skip", "retrieval,tr,build", "--scales", "1000", "--queries", "10", "--json", "--quiet", "--cache", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)["scaling"]["rows"]
    assert rows and rows[0]["nodes"] == 1000 and rows[0]["edges"] > 0 and rows[0]["propagation_ms_mean"] > 0


@pytest.mark.parametrize("script", ["bench_paris_pixels.py", "bench_learned_cuda.py"])
def test_pixel_and_cuda_benchmarks_parse_their_options(script):
    """No shared data and no GPU needed: the options parse and --help names them."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--features" in r.stdout and "--cache" in r.stdout


def test_pixel_benchmark_without_the_dev_set_says_so(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_paris_pixels.py"), "--data", str(tmp_path), "--cache", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "revisitop-paris-dev" in r.stderr
