"""The verified graph's leave-one-out evidence, on hand-made graphs (no images)."""

from __future__ import annotations

import pytest

from consist.aggregate import aggregate
from consist.audit.config import AuditConfig
from consist.audit.decide import decide
from consist.audit.graph import VerifiedGraph, edge_strength

CFG = AuditConfig()


def _graph(edges, cfg=CFG):
    g = VerifiedGraph(cfg)
    for a, b, inl in edges:
        g.add(a, b, inl, verified=inl >= cfg.min_inliers)
    return g


def test_edge_strength_saturates_and_weak_pairs_count_less():
    assert edge_strength(15, CFG) == pytest.approx(CFG.edge_floor)
    assert edge_strength(200, CFG) > 0.99
    weak = edge_strength(12, CFG, verified=False)
    assert 0 < weak < CFG.edge_floor
    assert edge_strength(CFG.weak_inliers - 1, CFG, verified=False) == 0.0


def test_propagation_reaches_views_through_intermediate_ones():
    # a - b - c - d - e: a chain of views; only b is a direct neighbour of a
    g = _graph([("a", "b", 80), ("b", "c", 80), ("c", "d", 80), ("d", "e", 80)])
    reached = g.reach("a")
    assert list(reached) == ["b", "c", "d"]  # 3 hops at most
    assert reached["b"] > reached["c"] > reached["d"]


def test_a_label_copied_into_another_community_is_a_poor_witness():
    """One object (four views, w1..w4) whose views carry four different labels; the
    true label 't' is carried by w4 only, whose label has no other image elsewhere;
    the three wrong labels each have their own community elsewhere."""
    edges = [(f"w{i}", f"w{j}", 200) for i in range(1, 5) for j in range(i + 1, 5)]
    labels = {"w1": "x", "w2": "y", "w3": "z", "w4": "t"}
    for lab in ("x", "y", "z"):
        for i in range(3):
            labels[f"{lab}{i}"] = lab
        edges += [(f"{lab}0", f"{lab}1", 200), (f"{lab}1", f"{lab}2", 200), (f"{lab}0", f"{lab}2", 200)]
    g = _graph(edges)
    ev = g.evidence(labels)
    for node in ("w1", "w2", "w3"):
        e = ev[node]
        assert e.community_share == 0.0  # its label lives in another community
        assert max(e.mass, key=e.mass.get) == "t", (node, e.mass)
    # a sample whose community agrees with it keeps its label
    assert max(ev["x1"].mass, key=ev["x1"].mass.get) == "x"


def test_leave_one_out_a_sample_does_not_vote_for_itself():
    # two images verified against each other, with different labels: each sees the other's
    g = _graph([("a", "b", 100)])
    ev = g.evidence({"a": "cat", "b": "dog"})
    assert set(ev["a"].mass) == {"dog"} and set(ev["b"].mass) == {"cat"}


def test_decide_flags_unverifiable_and_confirms():
    g = _graph([("a", "b", 100), ("a", "c", 100), ("b", "c", 100)])
    labels = {"a": "dog", "b": "cat", "c": "cat", "lone": "cat"}
    ev = g.evidence(labels)

    def agg(prediction, votes):
        return aggregate(prediction, votes)

    def rec(sid):
        nbrs = [n for n in labels if n != sid]
        edges = [{"a": sid, "b": n, "b_label": labels[n], "inliers": 100, "verified": True} for n in nbrs if n in g.adj.get(sid, {})]
        return {"id": sid, "uri": None, "label": labels[sid], "neighbours": [{"id": n, "label": labels[n], "similarity": 0.5, "rank": i} for i, n in enumerate(nbrs)], "decision": {"votes": []}, "edges": edges}

    flagged = decide(rec("a"), ev["a"], {}, CFG, agg)
    assert flagged.flagged and flagged.suggested_label == "cat" and flagged.evidence_neighbour in ("b", "c")
    ok = decide(rec("b"), ev["b"], {}, CFG, agg)
    assert ok.status == "ok" and not ok.flagged
    lone = decide({**rec("lone"), "edges": []}, None, {}, CFG, agg)
    assert lone.status == "unverifiable" and not lone.flagged and lone.suggested_label is None
    bad = decide({"id": "x", "label": "cat", "error": "x.jpg: empty file (0 bytes)"}, None, {}, CFG, agg)
    assert bad.status == "unreadable" and "x.jpg" in bad.reason


def test_near_duplicates_with_another_label_are_reported():
    g = _graph([("a", "b", 400)])
    labels = {"a": "cat", "b": "dog"}
    ev = g.evidence(labels)
    rec = {
        "id": "a",
        "uri": None,
        "label": "cat",
        "neighbours": [{"id": "b", "label": "dog", "similarity": 0.9, "rank": 0}],
        "decision": {"votes": []},
        "edges": [{"a": "a", "b": "b", "b_label": "dog", "inliers": 400, "verified": True, "coverage": 0.95, "ratio": 0.9}],
    }
    row = decide(rec, ev["a"], {}, CFG, lambda p, v: aggregate(p, v))
    assert row.near_duplicates == ("b",) and "near-duplicate of b" in row.reason
    same = decide({**rec, "label": "dog"}, ev["a"], {}, CFG, lambda p, v: aggregate(p, v))
    assert same.near_duplicates == ()
