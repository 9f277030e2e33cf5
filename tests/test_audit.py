"""consist audit end to end on real photos (scikit-image views with planted label
errors): verdicts, outputs, --apply, the CLI, the Python API."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("consist_spatial")

import consist
from consist.audit import AuditConfig
from consist.audit.outputs import CSV_COLUMNS

sys.path.insert(0, str(Path(__file__).parent))
import audit_data

ENV_PLUGINS = {"CONSIST_PLUGINS": "spatial"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return audit_data.build(tmp_path_factory.mktemp("audit-data") / "photos")


@pytest.fixture(scope="module")
def audited(dataset, tmp_path_factory):
    root, truth = dataset
    out = tmp_path_factory.mktemp("audit-out")
    result = consist.audit(root, out, workers=1)
    return result, out, truth


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {**os.environ, **ENV_PLUGINS, **(env or {})}
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def test_planted_errors_are_flagged_with_the_right_suggestion_and_nothing_else(audited):
    result, _out, truth = audited
    rows = {r.sample: r for r in result.rows}
    assert set(rows) == set(truth)
    wrong = {sid for sid, true in truth.items() if sid.split("/")[0] != true}
    assert len(wrong) == 2
    for sid in wrong:
        r = rows[sid]
        assert r.flagged and r.status == "flagged" and r.basis == "verified", r
        assert r.suggested_label == truth[sid]
        assert r.confidence is not None and r.confidence > 0.5
        assert r.evidence_label == truth[sid] and r.evidence_inliers >= 15
        assert f"not {r.given_label!r}" in r.reason
    for sid in set(truth) - wrong:
        assert not rows[sid].flagged, rows[sid]
        assert rows[sid].status == "ok" and rows[sid].suggested_label == rows[sid].given_label


def test_outputs_one_row_per_sample_with_required_columns(audited):
    _result, out, truth = audited
    with open(out / "audit.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [c for c in CSV_COLUMNS if c not in rows[0]] == []
    assert sorted(r["sample"] for r in rows) == sorted(truth)
    assert rows[0]["flagged"] == "true"  # flagged first
    lines = [json.loads(x) for x in (out / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(x["sample"] for x in lines) == sorted(truth)
    flagged = [x for x in lines if x["flagged"]]
    assert flagged and all(x["decision"]["votes"] and x["edges"] for x in flagged)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["counts"]["samples"] == len(truth) and summary["counts"]["flagged"] == 2
    assert summary["per_label"]["hubble"]["flagged"] == 1 and summary["per_label"]["astronaut"]["suggested_into"] == 1
    assert summary["timings"]["verify_s"] > 0 and summary["failures"] == []


def test_report_is_self_contained_and_shows_flagged_first(audited):
    _result, out, _truth = audited
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert page.count('<section class="card"') == 2
    first_card = page.index('<section class="card"')
    assert first_card < page.index('id="samples"')
    assert "data:image/jpeg;base64," in page and "<polygon" in page and "<line" in page
    assert 'id="f-label"' in page and 'id="f-conf"' in page


def test_api_returns_a_table(audited):
    result, _out, _truth = audited
    records = result.to_records()
    assert len(records) == len(result) and {"sample", "given_label", "suggested_label", "flagged", "confidence"} <= set(records[0])
    pd = pytest.importorskip("pandas")
    df = result.to_pandas()
    assert isinstance(df, pd.DataFrame) and int(df["flagged"].sum()) == 2


def test_warm_rerun_reuses_the_feature_cache_and_gives_the_same_verdicts(audited, dataset, tmp_path):
    result, out, _truth = audited
    root, _ = dataset
    again = consist.audit(root, tmp_path / "again", store=f"sqlite:///{out / 'store.db'}", workers=1, report=False)
    assert again.summary["features"]["extracted"] == 0 and again.summary["features"]["cached"] == len(result)
    assert [(r.sample, r.flagged, r.suggested_label, r.status) for r in again.rows] == [(r.sample, r.flagged, r.suggested_label, r.status) for r in result.rows]


def test_apply_writes_a_new_file_and_records_history(dataset, audited, tmp_path):
    root, truth = dataset
    _result, out, _ = audited
    store = f"sqlite:///{tmp_path / 'store.db'}"
    import shutil

    shutil.copy(out / "store.db", tmp_path / "store.db")
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    res = consist.audit(root, tmp_path / "applied", store=store, workers=1, apply=True, report=False)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == before  # input untouched
    applied = res.summary["applied"]
    assert applied["changed"] == 2
    with open(applied["corrected_csv"], newline="", encoding="utf-8") as fh:
        corrected = {r["path"]: r["label"] for r in csv.DictReader(fh)}
    assert corrected == truth  # both planted errors corrected, nothing else changed
    s = consist.open_store(store)
    try:
        entries = [e for e in s.history(limit=None) if e.action == "relabel"]
        assert len(entries) == 2 and all(e.provenance.value == "auto" and "consist audit --apply" in e.reason for e in entries)
        wrong = next(sid for sid, t in truth.items() if sid.startswith("hubble/") and t == "astronaut")
        assert s.get(wrong).label == "astronaut"
        s.undo(entries[0].seq)  # nothing lost: the old label comes back
        assert s.get(entries[0].sample_id).label == entries[0].before["label"]
    finally:
        s.close()


def test_a_sample_nothing_verifies_gets_an_answer_from_retrieval_not_a_flag(tmp_path, dataset):
    """A photo of something no other image shows is not verified either way: it gets
    the retrieval-based status "plausible" (its own status, not "ok"), with a low
    P(wrong) that comes from the collection's estimated noise rate."""
    import shutil

    import skimage.data
    from PIL import Image

    root, _ = dataset
    ds = tmp_path / "ds"
    shutil.copytree(root, ds)
    Image.fromarray(skimage.data.brick()).save(ds / "cat" / "lonely.png")  # a wall in the cat folder
    res = consist.audit(ds, tmp_path / "out", workers=1, report=False, k=4)
    row = next(r for r in res.rows if r.sample == "cat/lonely.png")
    assert row.status == "plausible" and row.basis == "retrieval" and not row.flagged, row
    assert row.suggested_label == "cat" and row.confidence is not None and row.confidence < 0.5
    assert "no neighbour verifies it" in row.reason


def test_cli_prints_issues_and_report_path_and_exit_codes(dataset, audited, tmp_path):
    root, _ = dataset
    _res, out, _ = audited
    store = f"sqlite:///{out / 'store.db'}"
    r = run_cli("audit", str(root), "--out", str(tmp_path / "o"), "--store", store, "--workers", "1", "--no-report")
    assert r.returncode == 0, r.stderr
    assert "2 flagged" in r.stdout and "report:" in r.stdout and "hubble -> astronaut" in r.stdout
    r = run_cli("audit", str(root), "--out", str(tmp_path / "o"), "--store", store, "--workers", "1", "--no-report", "--fail-on-issues", "--json")
    assert r.returncode == 1, r.stderr
    data = json.loads(r.stdout)
    assert data["summary"]["counts"]["flagged"] == 2 and len(data["flagged"]) == 2
    r = run_cli("audit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "nowhere" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("audit", str(root), "--out", str(tmp_path / "o3"), "--checkers", "nope")
    assert r.returncode == 2 and "unknown checker" in r.stderr


def test_checkers_select_by_name(dataset, audited, tmp_path):
    root, _ = dataset
    _res, out, _ = audited
    res = consist.audit(root, tmp_path / "knn-only", store=f"sqlite:///{out / 'store.db'}", checkers=["knn"], workers=1, report=False)
    assert res.summary["checkers"] == ["knn"]
    lines = [json.loads(x) for x in (tmp_path / "knn-only" / "audit.jsonl").read_text().splitlines()]
    assert all({v["checker"] for v in x["decision"]["votes"]} <= {"knn"} for x in lines if x.get("decision"))


def test_config_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown audit option"):
        AuditConfig().with_options(kk=3)
    with pytest.raises(ValueError):
        AuditConfig(k=0)


def test_community_vote_is_left_to_the_audits_own_graph_unless_named(audited):
    """The audit propagates over the pairs it verifies itself; a checker that builds a
    store-wide matching graph (``builds_store_graph``: the topological community vote)
    would verify them all again, so it is left out by that attribute, not by name."""
    from consist import plugins
    from consist.audit.run import default_audit_checkers

    result, out, _ = audited
    assert plugins.checkers()["community"].builds_store_graph
    assert "community" not in default_audit_checkers(plugins.checkers())
    assert "community" not in result.summary["checkers"] and "spatial" in result.summary["checkers"]
    lines = [json.loads(x) for x in (out / "audit.jsonl").read_text().splitlines()]
    ran = {r["checker"] for x in lines if x.get("decision") for r in x["decision"]["runs"]}
    assert "community" not in ran and "spatial" in ran
    assert "community" in plugins.checkers()  # installed, so leaving it out was the rule, not its absence


def test_local_workers_run_single_threaded_and_the_parent_keeps_its_threads(monkeypatch):
    import os

    from consist.audit.executors import LocalExecutor

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    ex = LocalExecutor(2)
    try:
        seen = set(ex.map_unordered(audit_data.thread_probe, range(6)))
    finally:
        ex.close()
    assert {(blas, cv) for blas, cv, _pid in seen} == {("1", 1)}
    assert "OPENBLAS_NUM_THREADS" not in os.environ  # restored in the parent
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # a user's own setting wins
    ex = LocalExecutor(2)
    try:
        assert {blas for blas, *_ in ex.map_unordered(audit_data.thread_probe, range(2))} == {"3"}
    finally:
        ex.close()


def test_labels_from_file_names_find_the_same_errors(dataset, tmp_path):
    """The same photos in one flat folder, labelled only by their names
    (``<label>_<n>.jpg``), give the same flags as the class folders."""
    import shutil

    root, truth = dataset
    flat = tmp_path / "flat"
    flat.mkdir()
    for n, sid in enumerate(sorted(truth)):
        label, name = sid.split("/")[0], Path(sid).suffix
        shutil.copy(root / sid, flat / f"{label}_{n}{name}")
    r = run_cli("audit", str(flat), "--labels-from-names", "--out", str(tmp_path / "o"), "--workers", "1", "--no-report", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    flagged = {(f["given_label"], f["suggested_label"]) for f in data["flagged"]}
    expected = {(sid.split("/")[0], true) for sid, true in truth.items() if sid.split("/")[0] != true}
    assert flagged == expected and data["summary"]["dataset"]["layout"] == "names"
    bad = run_cli("audit", str(flat), "--name-pattern", "(x)", "--out", str(tmp_path / "o2"))
    assert bad.returncode == 2 and "--name-pattern needs --labels-from-names" in bad.stderr
