"""Hypergraph propagation and community selection on hand-built hypergraphs, where
the right answer is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consist_topological.hypergraph import Hyperedge, MatchingHypergraph, _decode, _encode, box_of
from consist_topological.propagation import communities, community_uncertainty, propagate, union_box
from consist_topological.rerank import HpConfig, QueryLink, hp_rerank, links_from_graph


def edge(a: str, b: str, pts_a: list[tuple[float, float]], shift: tuple[float, float] = (0.0, 0.0)) -> Hyperedge:
    pa = np.asarray(pts_a, dtype=np.float32)
    pb = pa + np.asarray(shift, dtype=np.float32)
    idx = np.arange(len(pa))
    return Hyperedge(a, b, idx, idx, pa, pb)


def grid(x0: float, y0: float, n: int = 4, step: float = 10.0) -> list[tuple[float, float]]:
    """n*n points on a grid starting at (x0, y0)."""
    return [(x0 + i * step, y0 + j * step) for i in range(n) for j in range(n)]


def chain_graph() -> MatchingHypergraph:
    """A - B - C - D - E: each edge's inliers sit on the left half of the source
    image (x < 100) and land on the left half of the target too, except C-D,
    whose inliers on C lie on C's right half (x >= 300)."""
    g = MatchingHypergraph()
    g.add_edge(edge("A", "B", grid(10, 10)))
    g.add_edge(edge("B", "C", grid(12, 12)))
    g.add_edge(edge("C", "D", grid(300, 10)))
    g.add_edge(edge("D", "E", grid(300, 10)))
    return g


def test_propagation_passes_only_through_inliers_inside_the_active_region() -> None:
    g = chain_graph()
    # from A with the whole image: B (hop 1, region 10..40), C (hop 2) through the
    # 9 B-C inliers inside B's region (12..32 of 12..42); C's region then holds none
    # of the C-D inliers, so D is not reached.
    p = propagate(g, {"A": None})
    assert p.order == ("A", "B", "C")
    assert p.hops == {"A": 0, "B": 1, "C": 2}
    assert p.regions["B"] == (10.0, 10.0, 40.0, 40.0)
    assert p.regions["C"] == (12.0, 12.0, 32.0, 32.0)
    assert p.passed["B"] == 16 and p.passed["C"] == 9 and p.via["C"] == "B"
    # from C with the whole image, D is reachable
    assert "D" in propagate(g, {"C": None})


def test_hops_are_limited_and_excluded_nodes_are_never_passed_through() -> None:
    g = MatchingHypergraph()
    for a, b in zip("ABCDEF", "BCDEFG"):
        g.add_edge(edge(a, b, grid(10, 10)))
    assert propagate(g, {"A": None}, max_hops=3).order == ("A", "B", "C", "D")
    assert propagate(g, {"A": None}, max_hops=0).order == ("A",)
    assert propagate(g, {"A": None}, exclude=("C",)).order == ("A", "B")
    with pytest.raises(ValueError):
        propagate(g, {"A": None}, max_hops=-1)


def test_reaching_an_image_again_unites_its_active_regions_and_strongest_arrival_first() -> None:
    g = MatchingHypergraph()
    g.add_edge(edge("S", "X", grid(0, 0, n=3), shift=(0, 0)))  # 9 inliers -> X box (0,0,20,20)
    g.add_edge(edge("S", "Y", grid(0, 0, n=4), shift=(100, 100)))  # 16 inliers -> Y box (100,100,130,130)
    g.add_edge(edge("X", "Y", grid(0, 0, n=3), shift=(200, 200)))  # X's inliers in X's region -> Y box (200..220)
    p = propagate(g, {"S": None}, min_pass=8)
    assert p.order == ("S", "Y", "X"), "the stronger arrival is adopted first within a hop"
    assert p.regions["Y"] == (100.0, 100.0, 220.0, 220.0), "Y reached again from X: union of the boxes"
    assert union_box(None, (0, 0, 1, 1)) is None


def test_min_pass_blocks_grazing_overlaps() -> None:
    g = MatchingHypergraph()
    g.add_edge(edge("A", "B", grid(0, 0, n=2)))  # 4 inliers only
    assert propagate(g, {"A": None}, min_pass=8).order == ("A",)
    assert propagate(g, {"A": None}, min_pass=4).order == ("A", "B")


def test_community_uncertainty_is_the_entropy_of_community_sizes() -> None:
    g = MatchingHypergraph()
    for a, b in (("a1", "a2"), ("a2", "a3"), ("b1", "b2")):
        g.add_edge(edge(a, b, grid(0, 0)))
    for n in ("c1", "far"):
        g.add_node(n)
    # a1..a3 linked; b1-b2 linked; c1 alone
    groups = communities(g, ["a1", "b1", "a3", "c1", "b2", "a2"], top=6, depth=6)
    assert sorted(map(sorted, groups)) == [["a1", "a2", "a3"], ["b1", "b2"], ["c1"]]
    p = np.array([3, 2, 1]) / 6
    assert community_uncertainty(groups) == pytest.approx(float(-(p * np.log(p)).sum()))
    assert community_uncertainty([["x", "y", "z"]]) == 0.0
    assert community_uncertainty([[str(i)] for i in range(20)]) == pytest.approx(math.log(20))
    # a link through an image beyond the top but inside the depth window counts
    g.add_edge(edge("c1", "far", grid(0, 0)))
    g.add_edge(edge("far", "b2", grid(0, 0)))
    assert len(communities(g, ["a1", "b1", "c1", "b2", "far"], top=3, depth=5)) == 2
    assert len(communities(g, ["a1", "b1", "c1", "b2", "far"], top=3, depth=3)) == 3


def test_hp_rerank_puts_propagated_images_first_in_adoption_order() -> None:
    g = MatchingHypergraph()
    g.add_edge(edge("q", "r1", grid(0, 0)))
    g.add_edge(edge("r1", "r2", grid(0, 0)))
    g.add_edge(edge("r2", "r3", grid(0, 0)))
    g.add_edge(edge("r3", "r4", grid(0, 0)))  # hop 4 from q: beyond 3 hops
    for n in ("x1", "x2"):
        g.add_node(n)
    base = ["x1", "r3", "x2", "r1", "r4", "r2"]
    links = links_from_graph(g, "q")
    res = hp_rerank(g, "q", base, links)
    assert res.ranking == ("r1", "r2", "r3", "x1", "x2", "r4")
    assert res.propagation.hops == {"r1": 1, "r2": 2, "r3": 3}
    assert res.region("r3") == (0.0, 0.0, 30.0, 30.0) and res.region("x1") is None
    # a query box that excludes every link inlier propagates nothing
    none = hp_rerank(g, "q", base, links, query_box=(500.0, 500.0, 600.0, 600.0))
    assert none.ranking == tuple(base) and not none.propagation.order


def test_community_selection_seeds_from_the_dominant_image_when_unsure() -> None:
    g = MatchingHypergraph()
    g.add_edge(edge("d", "d2", grid(0, 0)))
    g.add_edge(edge("w", "w2", grid(0, 0)))
    ranking = ["w", "a", "b", "c", "e", "d", "f", "g", "h", "w2", "d2"]
    for n in ranking:
        g.add_node(n)
    weak = QueryLink("w", np.asarray(grid(0, 0, n=3), np.float32), np.asarray(grid(0, 0, n=3), np.float32))  # 9 inliers
    strong = QueryLink("d", np.asarray(grid(0, 0, n=6), np.float32), np.asarray(grid(0, 0, n=6), np.float32))  # 36
    plain = hp_rerank(g, "q", ranking, [strong, weak])
    assert plain.seed_rule == "all verified" and set(plain.seeds) == {"d", "w"}
    cs = hp_rerank(g, "q", ranking, [strong, weak], config=HpConfig(community_selection=True))
    assert cs.uncertainty > 1.0
    assert cs.seed_rule == "dominant" and cs.seeds == ("d",)
    assert cs.ranking[:2] == ("d", "d2") and "w2" not in cs.propagation
    # when sure (one community), CS changes nothing
    sure = hp_rerank(g, "q", ["d", "d2"], [strong], config=HpConfig(community_selection=True))
    assert sure.uncertainty == 0.0 and sure.seed_rule == "all verified"


def test_edge_blobs_round_trip() -> None:
    e1 = edge("s", "t", grid(0, 0), shift=(5, 7))
    e2 = Hyperedge("u", "s", [1, 2, 3], [4, 5, 6], [[1, 1], [2, 2], [3, 3]], [[9, 9], [8, 8], [7, 7]])
    meta, edges = _decode(_encode("/x.png", ["t", "u", "v"], [e1, e2], "s"))
    assert meta["uri"] == "/x.png" and meta["tried"] == ["t", "u", "v"]
    assert [(e.a, e.b, e.strength) for e in edges] == [("s", "t", 16), ("s", "u", 3)]
    assert edges[0] == e1
    np.testing.assert_array_equal(edges[1].pts_a, e2.pts_b)  # oriented from the owner
    np.testing.assert_array_equal(edges[1].idx_b, [1, 2, 3])
    assert edges[1].idx_a.dtype == np.uint16
    assert box_of(np.zeros((0, 2))) is None
    with pytest.raises(ValueError, match="not a topology edge blob"):
        _decode(b"garbage")
    with pytest.raises(ValueError, match="itself"):
        edge("s", "s", grid(0, 0))
