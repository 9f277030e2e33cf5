"""The same audit on a real Dask distributed cluster (LocalCluster, several worker
processes) gives the same verdicts as the local run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("consist_spatial")
distributed = pytest.importorskip("distributed")

import consist  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import audit_data  # noqa: E402


def _verdicts(result):
    return [(r.sample, r.flagged, r.suggested_label, r.status, r.confidence, r.evidence_neighbour, r.verified_neighbours) for r in result.rows]


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
