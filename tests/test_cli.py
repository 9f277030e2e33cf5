"""The command line, run as users run it: a real process, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import consist
from consist import Sample


def run(*args, env=None, cwd=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=e, cwd=cwd, timeout=300)


@pytest.fixture
def db(tmp_path):
    uri = f"sqlite:///{tmp_path / 'cli.db'}"
    s = consist.open_store(uri)
    s.put([Sample("a", uri="/img/a.png", label="cat"), Sample("b", uri="/img/b.png", label="dog")])
    s.close()
    return uri


def test_plugins_json_lists_first_party_plugins():
    r = run("plugins", "--json")
    assert r.returncode == 0, r.stderr
    by_name = {p["name"]: p for p in json.loads(r.stdout)}
    assert {"spatial", "topological", "semantic"} <= set(by_name)
    spatial = by_name["spatial"]
    assert spatial["checkers"] == ["spatial"] and spatial["retrievers"] == ["asmk"]
    assert "geometric" in spatial["checker_descriptions"]["spatial"]
    builtin = {p["name"]: p for p in json.loads(run("plugins", "--all", "--json").stdout)}["consist.builtin.retrieval"]
    assert builtin["embedders"] == ["tiny"] and builtin["retrievers"] == ["vector"]
    human = run("plugins").stdout
    assert "checker:    spatial - geometric" in human and "retrievers: asmk" in human


def test_plugins_kill_switch():
    r = run("plugins", "--json", env={"CONSIST_PLUGINS": "none"})
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = run("plugins", "--all", "--json", env={"CONSIST_PLUGINS": "none"})
    assert {p["name"] for p in json.loads(r.stdout)} >= {"consist.builtin.defaults"}


def test_correct_history_undo_round_trip(db):
    r = run("correct", "a", "lynx", "--box", "1,2,30,40", "--store", db, "--json")
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)
    assert [e["action"] for e in entries] == ["relabel", "region"]
    h = json.loads(run("history", "--store", db, "--json").stdout)
    assert h[0]["action"] == "region" and h[1]["action"] == "relabel" and h[1]["provenance"] == "user"
    human = run("history", "--store", db)
    assert "'cat' -> 'lynx'" in human.stdout
    # undoing the relabel first is refused: the region change came later
    r = run("undo", str(h[1]["seq"]), "--store", db)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "changed again" in r.stderr
    assert run("undo", "--last", "--store", db).returncode == 0
    assert run("undo", str(h[1]["seq"]), "--store", db).returncode == 0
    s = consist.open_store(db)
    assert s.get("a").label == "cat" and s.get("a").region is None


def test_store_info_json(db):
    r = run("store", "info", "--store", db, "--json")
    info = json.loads(r.stdout)
    assert info["samples"] == 2 and info["per_label"] == {"cat": 1, "dog": 1}


@pytest.mark.parametrize(
    "args, expect",
    [
        (("history", "--store", "nosuch://x"), "no store for the URI scheme 'nosuch'"),
        (("correct", "zz", "cat", "--store", "{db}"), "no sample 'zz'"),
        (("correct", "a", "--box", "5,5,1,1", "--store", "{db}"), "expected x0,y0,x1,y1"),
        (("undo", "999", "--store", "{db}"), "no history entry #999"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(db, args, expect):
    r = run(*[a.format(db=db) for a in args])
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert expect in r.stderr and len(lines) <= 3  # click usage errors add a usage line


def test_corrupt_store_file(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    r = run("history", "--store", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(bad) in r.stderr


def test_log_json_emits_json_lines_on_stderr():
    r = run("--log-json", "plugins", "--json", env={"CONSIST_PLUGINS": "no-such-plugin"})
    assert r.returncode == 0 and json.loads(r.stdout) == []  # stdout stays pure JSON
    events = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert events and events[0]["event"] == "unknown_plugin_names" and events[0]["level"] == "warning"
    assert events[0]["unknown"] == ["no-such-plugin"]
    human = run("plugins", env={"CONSIST_PLUGINS": "no-such-plugin"})
    assert "unknown_plugin_names" in human.stderr and not human.stderr.lstrip().startswith("{")


def test_recognition_demo_runs_end_to_end_and_corrects(tmp_path):
    r = run("demo", "--recognize", "--out", str(tmp_path / "demo"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert "spatial" in report["checkers"]
    s = report["summary"]
    assert s["queries"] == 5
    assert s["final_correct"] == 5, report["results"]
    assert s["corrected"] >= 1 and s["final_correct"] > s["recognizer_correct"]
    for res in report["results"]:
        d = res["decision"]
        spatial = [v for v in d["votes"] if v["checker"] == "spatial" and v["label"] == res["truth"]]
        assert spatial and spatial[0]["evidence"]["inliers"] >= 15
        assert any(loc["checker"] == "spatial" for loc in d["localisations"])
    # verified queries were written back, with history
    store = consist.open_store(report["store"])
    assert len(store) == 15 + s["adapted"] and s["adapted"] >= 3
    assert any(e.provenance.value == "auto" for e in store.history(limit=None))
    # the human output names decisions and evidence
    human = run("demo", "--recognize", "--out", str(tmp_path / "demo"))
    assert "CORRECTED" in human.stdout and "spatial" in human.stdout


def test_mistyped_store_path_is_an_error_not_a_new_store(tmp_path):
    r = run("store", "info", "--store", str(tmp_path / "typo" / "store.db"))
    assert r.returncode == 2 and "no such store" in r.stderr
    assert not (tmp_path / "typo").exists()
