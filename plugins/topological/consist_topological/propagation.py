"""Hypergraph propagation (HP) and community selection (CS), An et al. NeurIPS 2021.

Propagation: start from seed images with an *active region* each (the whole image,
or where the query was found in it); at every hop, pass from an adopted image A to
a neighbour B only through the inliers of the hyperedge A-B that lie inside A's
active region; B's active region becomes the box of the corresponding inliers in B
(the union of boxes when B is reached again). At most ``max_hops`` hops (3 in the
paper). Adopted images are ranked above the rest, in adoption order, and their
active regions are localisations of the query object (pixel retrieval).

Community selection: the top-20 results are grouped into communities (connected
components of the matching graph); the uncertainty is the entropy of the community
size proportions (0: one community, ln 20 ~ 3: all singletons). Above a threshold
(1.0 in the authors' code) the top-1 is not trusted as a seed without checking it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from consist_topological.hypergraph import Box, MatchingHypergraph

__all__ = [
    "CS_DEPTH",
    "CS_THRESHOLD",
    "CS_TOP",
    "MAX_HOPS",
    "MIN_PASS_INLIERS",
    "Propagation",
    "communities",
    "community_uncertainty",
    "propagate",
    "union_box",
]

#: Hops of propagation (the paper's 3: further hops drift to other objects).
MAX_HOPS = 3
#: Inliers inside the active region needed to pass along a hyperedge. An edge has
#: at least ``min_inliers`` (15) in all; half of them inside the region still makes
#: a verified sub-match, fewer is a grazing overlap that leads off the object.
MIN_PASS_INLIERS = 8
#: Community selection looks at the top-20 results (the paper's).
CS_TOP = 20
#: Communities are connected components of the graph restricted to the top-100
#: results, so two top-20 images linked through a third top-100 one are together.
CS_DEPTH = 100
#: Entropy above which the top-1 is not a trusted seed (1.0, the authors' code).
CS_THRESHOLD = 1.0


def union_box(a: Box | None, b: Box | None) -> Box | None:
    """The box covering both (``None`` is the whole image and absorbs anything)."""
    if a is None or b is None:
        return None
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


@attrs.frozen
class Propagation:
    """The outcome of one propagation.

    Attributes:
        order: adopted images in adoption order (seeds first, in the order given).
        hops: image -> hop it was adopted at (seeds 0).
        regions: image -> active region box (``None`` = whole image).
        passed: image -> inliers that carried the propagation into it (the
            strongest arrival; seeds carry their given weight).
        via: image -> the adopted image it was reached from (``None`` for seeds).
    """

    order: tuple[str, ...]
    hops: Mapping[str, int]
    regions: Mapping[str, Box | None]
    passed: Mapping[str, int]
    via: Mapping[str, str | None]

    def __len__(self) -> int:
        return len(self.order)

    def __contains__(self, node: object) -> bool:
        return node in self.hops


def propagate(
    graph: MatchingHypergraph,
    seeds: Mapping[str, Box | None] | Sequence[tuple[str, Box | None]],
    *,
    max_hops: int = MAX_HOPS,
    min_pass: int = MIN_PASS_INLIERS,
    max_adopted: int | None = None,
    exclude: Iterable[str] = (),
    seed_weights: Mapping[str, int] | None = None,
) -> Propagation:
    """Propagate from ``seeds`` (image -> active region, ``None`` = whole image).

    Within one hop, newly reached images are adopted strongest arrival first
    (most inliers passed), so the ranking inside a hop follows the evidence.
    ``exclude`` images are never adopted nor passed through (a leave-one-out query).
    """
    if max_hops < 0:
        raise ValueError(f"max_hops must be >= 0, got {max_hops}")
    items = list(seeds.items()) if isinstance(seeds, Mapping) else list(seeds)
    banned = set(exclude)
    regions: dict[str, Box | None] = {}
    hops: dict[str, int] = {}
    passed: dict[str, int] = {}
    via: dict[str, str | None] = {}
    order: list[str] = []
    for node, box in items:
        if node in banned:
            continue
        if node in hops:
            regions[node] = union_box(regions[node], box)
            continue
        hops[node], regions[node], via[node] = 0, box, None
        passed[node] = int((seed_weights or {}).get(node, 0))
        order.append(node)
    frontier = list(order)
    full = lambda: max_adopted is not None and len(order) >= max_adopted  # noqa: E731
    for hop in range(1, max_hops + 1):
        if not frontier or full():
            break
        arrivals: dict[str, tuple[int, Box | None, str]] = {}
        for a in frontier:
            for b, n, box_b in _passes(graph, a, regions[a], min_pass):
                if b in banned:
                    continue
                if b in hops:  # reached again: its active region grows
                    regions[b] = union_box(regions[b], box_b)
                    continue
                prev = arrivals.get(b)
                if prev is None:
                    arrivals[b] = (n, box_b, a)
                else:
                    arrivals[b] = (max(prev[0], n), union_box(prev[1], box_b), prev[2] if prev[0] >= n else a)
        frontier = []
        for b, (n, box_arr, a) in sorted(arrivals.items(), key=lambda kv: (-kv[1][0], kv[0])):
            if full():
                break
            hops[b], regions[b], passed[b], via[b] = hop, box_arr, n, a
            order.append(b)
            frontier.append(b)
    return Propagation(tuple(order), hops, regions, passed, via)


def _passes(graph: MatchingHypergraph, a: str, box: Box | None, min_pass: int) -> list[tuple[str, int, Box]]:
    """Neighbours of ``a`` reachable through at least ``min_pass`` inliers inside
    ``box``: ``(neighbour, inliers passed, box of their correspondents)``, computed
    on the node's packed arrays in one vectorised pass."""
    pk = graph.packed(a)
    if pk is None:
        return []
    starts = pk.starts[:-1]
    if box is None:
        counts = np.diff(pk.starts)
        ok = np.flatnonzero(counts >= min_pass)
        if not len(ok):
            return []
        x0, y0, x1, y1 = pk.boxes[ok].T
    else:
        sx, sy = pk.src
        inside = (sx >= box[0]) & (sx <= box[2]) & (sy >= box[1]) & (sy <= box[3])
        counts = np.add.reduceat(inside.astype(np.int32), starts)
        ok = np.flatnonzero(counts >= min_pass)
        if not len(ok):
            return []
        m = np.minimum.reduceat(np.where(inside, pk.dst4, np.float32(np.inf)), starts, axis=1)[:, ok]
        x0, y0, x1, y1 = m[0], m[1], -m[2], -m[3]
    others = pk.others
    return [(others[e], int(counts[e]), (float(a0), float(b0), float(a1), float(b1))) for e, a0, b0, a1, b1 in zip(ok.tolist(), x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist())]


def communities(graph: MatchingHypergraph, ranked: Sequence[str], *, top: int = CS_TOP, depth: int = CS_DEPTH) -> list[list[str]]:
    """Communities of the ``top`` results: connected components of the matching
    graph restricted to the first ``depth`` results, each listing its top results
    (best first); communities ordered by their best member."""
    window = list(dict.fromkeys(ranked[: max(top, depth)]))
    slot = {n: i for i, n in enumerate(window)}
    parent = list(range(len(window)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, a in enumerate(window):
        pk = graph.packed(a)
        if pk is None:
            continue
        for b in pk.others:
            j = slot.get(b)
            if j is not None and j > i:  # each undirected edge once
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[rj] = ri
    groups: dict[int, list[str]] = {}
    for i, n in enumerate(window[:top]):
        groups.setdefault(find(i), []).append(n)
    return list(groups.values())


def community_uncertainty(groups: Sequence[Sequence[str]]) -> float:
    """Entropy (nats) of the community size proportions: 0 when the results form
    one community, ``ln n`` when all ``n`` are unrelated."""
    sizes = np.array([len(g) for g in groups if len(g)], dtype=np.float64)
    if sizes.sum() == 0:
        return 0.0
    p = sizes / sizes.sum()
    return float(-(p * np.log(p)).sum()) + 0.0


def max_entropy(n: int) -> float:
    """``ln n``: the uncertainty of ``n`` unrelated results."""
    return math.log(n) if n > 1 else 0.0


def describe(groups: Sequence[Sequence[str]], labels: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """JSON-able communities (size, members, majority label when labels are given)."""
    out = []
    for g in groups:
        entry: dict[str, Any] = {"size": len(g), "members": list(g)}
        if labels is not None:
            counts: dict[Any, int] = {}
            for m in g:
                lb = labels.get(m)
                if lb is not None:
                    counts[lb] = counts.get(lb, 0) + 1
            entry["labels"] = counts
        out.append(entry)
    return out
