"""The same audit on a real Dask distributed cluster (LocalCluster, several worker
processes) gives the same verdicts as the local run; the workers write features and
verification records to the shared store themselves (the parent journals ids only);
a worker killed mid-task loses nothing and doubles nothing."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("consist_spatial")
distributed = pytest.importorskip("distributed")

import consist  # noqa: E402
from consist import plugins  # noqa: E402
from consist.contracts.checker import Abstain, BaseChecker  # noqa: E402
from consist.contracts.hookspecs import hookimpl  # noqa: E402
from consist.stores.uri import open_store  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import audit_data  # noqa: E402


def _verdicts(result):
    return [(r.sample, r.flagged, r.suggested_label, r.status, r.confidence, r.evidence_neighbour, r.verified_neighbours) for r in result.rows]


def _journal(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / ".audit" / "verified.jsonl").read_text(encoding="utf-8").splitlines()]


def test_dask_cluster_results_equal_the_local_run(tmp_path: Path) -> None:
    root, truth = audit_data.build(tmp_path / "photos")
    local = consist.audit(root, tmp_path / "local", workers=2, report=False)
    assert local.summary["executor"] == {"kind": "local", "workers": 2}
    local_store = f"sqlite:///{tmp_path / 'local' / 'store.db'}"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "")
        # the same store (features, retrieval index): only the executor differs
        remote = consist.audit(root, tmp_path / "dask", executor=f"dask://{address}", store=local_store, report=False)
        with distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            # a fresh store: features are extracted on the cluster too
            fresh = consist.audit(root, tmp_path / "dask-fresh", executor=client, report=False)
    assert remote.summary["executor"] == {"kind": "dask", "workers": 2}
    assert _verdicts(remote) == _verdicts(local)
    assert fresh.summary["features"]["extracted"] == len(truth)
    # byte-identical tables, whatever the executor and the store
    expected = (tmp_path / "local" / "audit.csv").read_bytes()
    assert (tmp_path / "dask" / "audit.csv").read_bytes() == expected
    assert (tmp_path / "dask-fresh" / "audit.csv").read_bytes() == expected
    assert sum(r.flagged for r in remote.rows) == 2
    # the cluster's workers wrote the verification records to the store; the parent's
    # journal holds one id line per sample, no payload (the local run's holds the records)
    lines = _journal(tmp_path / "dask-fresh")
    assert sorted(rec["id"] for rec in lines) == sorted(truth)
    assert all(set(rec) == {"id", "in_store"} for rec in lines)
    assert all("decision" in rec for rec in _journal(tmp_path / "local"))
    st = open_store(f"sqlite:///{tmp_path / 'dask-fresh' / 'store.db'}", create=False)
    try:
        kinds = st.artefact_kinds()
        assert kinds[lines[0]["in_store"]] == len(truth)
        # one history entry per sample: the workers' import, nothing else
        assert Counter(e.action for e in st.history(limit=None)) == Counter({"add": len(truth)})
    finally:
        st.close()
    # the store the local run made, shared by the first cluster run: only that run's
    # records are in it (the local run's parent journals its records itself)
    st = open_store(local_store, create=False)
    try:
        assert [n for k, n in st.artefact_kinds().items() if k.startswith("audit/record/")] == [len(truth)]
        assert _journal(tmp_path / "dask")[0]["in_store"].startswith("audit/record/")
    finally:
        st.close()


# ------------------------------------------------------------ a worker dies mid-task

#: The sample whose verification kills its worker process (once).
VICTIM = "cat/cat0.jpg"


class KillOnce(BaseChecker):
    """A checker that abstains on every sample, except that in an armed process (a Dask
    worker of the test cluster) it kills its own process with SIGKILL the first time
    it sees :data:`VICTIM` — the marker file (created exclusively, holding the pid)
    makes it once over all worker processes, the restarted ones included."""

    name = "kill_once"
    cost = 0.0
    reads_pixels = False
    enabled_by_default = False
    #: the marker file's path in an armed process (set by :class:`ArmKiller`); None: never kill
    armed: str | None = None

    def check(self, prediction, neighbours, context):
        if KillOnce.armed and prediction.query.id == VICTIM:
            try:
                fd = os.open(KillOnce.armed, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                raise Abstain("already killed once") from None
            os.write(fd, str(os.getpid()).encode())
            os.fsync(fd)
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        raise Abstain("nothing to say")


class _KillerPlugin:
    """The pluggy plugin that registers :class:`KillOnce`."""

    @hookimpl
    def consist_register_checkers(self, register):
        register(KillOnce())


def _register_killer() -> None:
    pm = plugins.get_plugin_manager()
    if pm.get_plugin("test_kill_once") is None:
        pm.register(_KillerPlugin(), name="test_kill_once")


class ArmKiller(distributed.WorkerPlugin):
    """Registers and arms the killer in every worker process, restarted ones included."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker):
        _register_killer()
        KillOnce.armed = self.marker


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_a_worker_killed_mid_task_loses_nothing_and_doubles_nothing(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> None:
    """On a shared SQLite file and on a real PostgreSQL server (tests/pgserver.py)."""
    store = f"sqlite:///{tmp_path / 'dask' / 'store.db'}" if store_kind == "sqlite" else request.getfixturevalue("pg_uri")
    root, truth = audit_data.build(tmp_path / "photos")
    assert VICTIM in truth
    _register_killer()  # in this process: the checker is known (unarmed: it only abstains)
    try:
        checkers = ["knn", "spatial", "kill_once"]
        local = consist.audit(root, tmp_path / "local", workers=1, checkers=checkers, report=False)
        marker = tmp_path / "killed"
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            client.register_plugin(ArmKiller(str(marker)))
            before = set(client.scheduler_info()["workers"])
            remote = consist.audit(root, tmp_path / "dask", executor=client, store=store, checkers=checkers, report=False)
            after = set(client.scheduler_info()["workers"])
    finally:
        plugins.get_plugin_manager().unregister(name="test_kill_once")
    # the worker died: its process is gone, and the cluster replaced it
    killed_pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(killed_pid, 0)
    assert before != after
    # ... and the audit still finished, with the local run's table, byte for byte
    assert _verdicts(remote) == _verdicts(local)
    assert (tmp_path / "dask" / "audit.csv").read_bytes() == (tmp_path / "local" / "audit.csv").read_bytes()
    # nothing doubled: one journal line per sample, one record per sample in the store,
    # one feature set and one history entry per sample (the rerun task rewrote the same rows)
    lines = _journal(tmp_path / "dask")
    assert sorted(rec["id"] for rec in lines) == sorted(truth)
    st = open_store(store, create=False)
    try:
        kinds = st.artefact_kinds()
        assert kinds[lines[0]["in_store"]] == len(truth)
        assert [n for k, n in kinds.items() if k.startswith("features/")] == [len(truth)]
        assert Counter(e.action for e in st.history(limit=None)) == Counter({"add": len(truth)})
    finally:
        st.close()


def test_resume_of_a_cluster_run_reverifies_what_the_journal_or_the_store_lost(tmp_path: Path) -> None:
    root, truth = audit_data.build(tmp_path / "photos")
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        consist.audit(root, out, executor=client, report=False)
        expected = (out / "audit.csv").read_bytes()
        journal = out / ".audit" / "verified.jsonl"
        lines = journal.read_text(encoding="utf-8").splitlines()
        # interrupted: the journal kept 6 samples (and a torn line) ...
        journal.write_text("\n".join(lines[:6]) + '\n{"id": "torn', encoding="utf-8")
        # ... and the record of one of those is no longer in the store
        gone = json.loads(lines[0])
        st = open_store(f"sqlite:///{out / 'store.db'}", create=False)
        try:
            assert st.delete_artefacts(gone["in_store"], gone["id"]) == 1
        finally:
            st.close()
        notes: list[str] = []
        again = consist.audit(root, out, executor=client, resume=True, report=False, say=notes.append)
    assert again.summary["verified_this_run"] == len(truth) - 5
    assert any("1 verified samples have no record in the store" in n for n in notes)
    assert (out / "audit.csv").read_bytes() == expected
    st = open_store(f"sqlite:///{out / 'store.db'}", create=False)
    try:
        assert st.artefact_kinds()[gone["in_store"]] == len(truth)
        assert Counter(e.action for e in st.history(limit=None)) == Counter({"add": len(truth)})
    finally:
        st.close()
    assert sorted(rec["id"] for rec in _journal(out)) == sorted(truth)
