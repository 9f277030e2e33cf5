"""The semantic benchmark keeps running (overhead part only: no shared data needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_semantic_overhead_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_semantic.py"), "--skip-audit", "-n", "50", "--json"], capture_output=True, text=True, timeout=300, check=True)
    data = json.loads(out.stdout)
    ov = data["overhead"]
    assert ov["client_per_reflection"]["n"] == 50 and ov["client_per_reflection"]["median_ms"] > 0
    assert ov["cache_hit"]["median_ms"] < ov["round_trip_instant_server"]["median_ms"]
    assert data["audit"] is None and data["targets"][0]["metric"].startswith("client overhead")
