"""Re-ranking a retrieval short-list with hypergraph propagation (HP), optionally
guarded by community selection (CS).

The query is linked to the graph through its own verified matches: a stored sample
(leave-one-out, an audit) through its hyperedges in the graph, a new image through
the spatial verification of its short-list (``query_links``). Each verified
neighbour whose inliers fall in the query's region becomes a hop-1 image, with the
box of those inliers as its active region; propagation then goes on through the
graph for the remaining hops. Propagated images come first in adoption order, the
rest follow in the given order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from consist_topological.hypergraph import Box, MatchingHypergraph, box_of
from consist_topological.propagation import (
    CS_DEPTH,
    CS_THRESHOLD,
    CS_TOP,
    MAX_HOPS,
    MIN_PASS_INLIERS,
    Propagation,
    communities,
    community_uncertainty,
    propagate,
)

if TYPE_CHECKING:
    from consist.contracts import Store

__all__ = ["CS_MIN_INLIERS", "HpConfig", "HpResult", "QueryLink", "hp_rerank", "links_from_graph", "links_from_reranked"]

#: CS: a top-1 with fewer inliers than this is not a trusted seed (the authors' code: 20).
CS_MIN_INLIERS = 20


@attrs.frozen
class HpConfig:
    """Parameters of HP / CS re-ranking (defaults: the paper's and its code's)."""

    max_hops: int = attrs.field(default=MAX_HOPS, converter=int)
    min_pass: int = attrs.field(default=MIN_PASS_INLIERS, converter=int)
    max_adopted: int | None = None
    community_selection: bool = False
    cs_top: int = attrs.field(default=CS_TOP, converter=int)
    cs_depth: int = attrs.field(default=CS_DEPTH, converter=int)
    cs_threshold: float = attrs.field(default=CS_THRESHOLD, converter=float)
    cs_min_inliers: int = attrs.field(default=CS_MIN_INLIERS, converter=int)


@attrs.frozen
class QueryLink:
    """A verified match between the query and a stored image: the inliers on the
    query side and on the image side (``K x 2`` pixels each)."""

    sample_id: str
    pts_query: np.ndarray = attrs.field(eq=False, repr=False)
    pts_sample: np.ndarray = attrs.field(eq=False, repr=False)

    @property
    def inliers(self) -> int:
        return int(len(self.pts_sample))


@attrs.frozen
class HpResult:
    """Re-ranked ids, what propagation did, and the community uncertainty."""

    ranking: tuple[str, ...]
    propagation: Propagation
    uncertainty: float
    communities: tuple[tuple[str, ...], ...]
    seeds: tuple[str, ...]
    seed_rule: str  #: "all verified", "top-1", "dominant", or why nothing was propagated

    def region(self, sample_id: str) -> Box | None:
        """The active region (localisation) of a propagated image."""
        return self.propagation.regions.get(sample_id) if sample_id in self.propagation else None


def links_from_graph(graph: MatchingHypergraph, query_id: str) -> list[QueryLink]:
    """The query's links when it is a node of the graph (a stored sample)."""
    out = []
    for other, e in graph.edges_of(query_id):
        q, s = e.oriented(query_id)
        out.append(QueryLink(other, q, s))
    return sorted(out, key=lambda lk: (-lk.inliers, lk.sample_id))


def links_from_reranked(reranked: Sequence[Any]) -> list[QueryLink]:
    """Links from spatial re-ranking results (consist-spatial's ``spatial_rerank``:
    objects with ``verified``, ``neighbour`` and ``inlier_points`` rows ``xq, yq, xn,
    yn``); results in the contract's form go through
    :func:`~consist_topological.rerankers.links_from_pairs`."""
    out = []
    for r in reranked:
        if r.verified and len(r.inlier_points):
            p = np.asarray(r.inlier_points, dtype=np.float32).reshape(-1, 4)
            out.append(QueryLink(r.neighbour.sample.id, p[:, :2], p[:, 2:]))
    return sorted(out, key=lambda lk: (-lk.inliers, lk.sample_id))


def _inside(points: np.ndarray, box: Box | None) -> np.ndarray:
    if box is None:
        return np.ones(len(points), dtype=bool)
    return (points[:, 0] >= box[0]) & (points[:, 0] <= box[2]) & (points[:, 1] >= box[1]) & (points[:, 1] <= box[3])


def hp_rerank(
    graph: MatchingHypergraph,
    query_id: str,
    ranking: Sequence[str],
    links: Sequence[QueryLink],
    *,
    config: HpConfig | None = None,
    query_box: Box | None = None,
) -> HpResult:
    """Re-rank ``ranking`` (stored ids, best first) for a query linked by ``links``.

    ``query_box`` is the query's active region (``None``: the whole image). With
    ``config.community_selection``, the seeds depend on the community uncertainty of
    ``ranking``'s top ``cs_top``: when it exceeds ``cs_threshold``, only the top-1
    seeds propagation if it verified with ``cs_min_inliers``, else the dominant
    image (most inliers) of the top ``cs_depth``; with no such image nothing is
    propagated and the ranking is returned as given.
    """
    cfg = config or HpConfig()
    ranked = [r for r in dict.fromkeys(ranking) if r != query_id]
    groups = communities(graph, ranked, top=cfg.cs_top, depth=cfg.cs_depth)
    uncertainty = community_uncertainty(groups)
    seeds: list[tuple[str, Box | None]] = []
    weights: dict[str, int] = {}
    usable: list[tuple[QueryLink, int, Box]] = []
    for lk in links:
        if lk.sample_id == query_id:
            continue
        mask = _inside(lk.pts_query, query_box)
        n = int(mask.sum())
        if n >= cfg.min_pass:
            usable.append((lk, n, box_of(lk.pts_sample[mask])))  # type: ignore[arg-type]
    usable.sort(key=lambda t: (-t[1], t[0].sample_id))
    rule = "all verified"
    if cfg.community_selection and uncertainty > cfg.cs_threshold:
        by_id = {lk.sample_id: (lk, n, box) for lk, n, box in usable}
        top1 = ranked[0] if ranked else None
        if top1 in by_id and by_id[top1][1] >= cfg.cs_min_inliers:
            usable, rule = [by_id[top1]], "top-1"
        else:
            window = set(ranked[: cfg.cs_depth])
            strong = [u for u in usable if u[0].sample_id in window and u[1] >= cfg.cs_min_inliers]
            usable, rule = (strong[:1], "dominant") if strong else ([], f"uncertain ({uncertainty:.2f}) and no dominant image")
    for lk, n, box in usable:
        seeds.append((lk.sample_id, box))
        weights[lk.sample_id] = n
    prop = propagate(graph, seeds, max_hops=max(0, cfg.max_hops - 1), min_pass=cfg.min_pass, max_adopted=cfg.max_adopted, exclude=(query_id,), seed_weights=weights)
    # seeds are hop 1 from the query: shift the hops so they read as distances
    prop = attrs.evolve(prop, hops={k: v + 1 for k, v in prop.hops.items()})
    adopted = set(prop.order)
    final = list(prop.order) + [r for r in ranked if r not in adopted]
    return HpResult(tuple(final), prop, uncertainty, tuple(tuple(g) for g in groups), tuple(s for s, _ in seeds), rule)


def uncertainty_of(graph: MatchingHypergraph, ranking: Sequence[str], *, top: int = CS_TOP, depth: int = CS_DEPTH, exclude: str | None = None) -> tuple[float, list[list[str]]]:
    """Community uncertainty of a ranking and its communities."""
    ranked = [r for r in dict.fromkeys(ranking) if r != exclude]
    groups = communities(graph, ranked, top=top, depth=depth)
    return community_uncertainty(groups), groups


def localisations(result: HpResult) -> Mapping[str, Box | None]:
    """Propagated image -> active region (the pixel-retrieval answer)."""
    return {n: result.propagation.regions[n] for n in result.propagation.order}


def hp_for_query(
    query_id: str, reranked: Sequence[Any], store: Store, *, ranking: Sequence[str] | None = None, config: HpConfig | None = None, graph: MatchingHypergraph | None = None, retriever: Any = None
) -> HpResult:
    """HP re-ranking of a new query from its spatially re-ranked short-list
    (consist-spatial's ``spatial_rerank`` results), on the store's
    matching graph (built or synced on first use). ``ranking`` is the order the
    unpropagated images keep (default: the re-ranked order)."""
    from consist_topological.hypergraph import graph_for

    g = graph if graph is not None else graph_for(store, retriever=retriever)
    order = list(ranking) if ranking is not None else [r.neighbour.sample.id for r in reranked]
    return hp_rerank(g, query_id, order, links_from_reranked(reranked), config=config)
