"""The README's main command: `consist demo` audits the built-in dataset and finds
the planted label errors (real scikit-image photos; nothing downloaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("consist_spatial")


def test_demo_audit_finds_the_planted_errors(tmp_path: Path) -> None:
    env = {**os.environ, "CONSIST_PLUGINS": "spatial"}
    r = subprocess.run([sys.executable, "-m", "consist.cli.main", "demo", "--out", str(tmp_path / "demo"), "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    p = rep["planted"]
    assert p["errors"] == 5 and p["found"] >= 4 and p["suggestion_right"] == p["found"]
    assert p["false_flags"] == []
    s = rep["summary"]
    assert s["counts"]["unreadable"] == 1 and any("scan-truncated.jpg" in f["message"] for f in s["failures"])
    assert (tmp_path / "demo" / "audit" / "report.html").exists()
    # the human output names the issues and the report
    human = subprocess.run([sys.executable, "-m", "consist.cli.main", "demo", "--out", str(tmp_path / "demo")], capture_output=True, text=True, env=env, timeout=600)
    assert human.returncode == 0, human.stderr
    assert "flagged" in human.stdout and "report.html" in human.stdout and "planted label errors: 5" in human.stdout
