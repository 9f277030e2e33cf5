"""The verified matching graph of a dataset, and what it says about each label.

Nodes are samples; an edge joins two samples that a checker verified against each
other (the spatial checker: at least ``min_inliers`` RANSAC inliers), with a
strength that saturates with the inliers. Two signals come from it:

* **propagation** (An et al., NeurIPS 2021: hypergraph propagation reaches hard
  positives through intermediate views): from each sample, the strongest paths of
  up to ``hops`` verified pairs (strength = product of edge strengths, times
  ``hop_decay`` per extra hop) reach other samples; their labels, refined by what
  their own neighbourhoods say and with the sample's own influence removed
  (leave-one-out), give a label distribution for the sample;
* **label coherence** (community selection's view): the connected components of
  the graph are the communities; a label whose connected images fall into several
  communities is itself suspect (an uninformative label such as a city name, or a
  label that was copied onto the wrong images).

Memory is O(N * k) (the edges) plus O(N * max_reach) for the reach sets.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

import attrs

from consist.audit.config import AuditConfig

__all__ = ["MAX_REACH", "LabelEvidence", "VerifiedGraph", "edge_strength"]

#: At most this many samples reached per sample (the strongest paths first): keeps
#: propagation O(N) on large, dense collections.
MAX_REACH = 50


def edge_strength(inliers: int, cfg: AuditConfig, verified: bool = True) -> float:
    """Verified: ``edge_floor + (1 - edge_floor) * (1 - exp(-(inliers - min_inliers) / edge_scale))``.
    Weak (not verified, ``weak_inliers <= inliers``): from ``weak_strength / 5`` at
    ``weak_inliers`` up to ``weak_strength`` just below ``min_inliers``; else 0."""
    if not verified:
        if inliers < cfg.weak_inliers or cfg.weak_inliers >= cfg.min_inliers:
            return 0.0
        span = max(1, cfg.min_inliers - 1 - cfg.weak_inliers)
        frac = min(1.0, (min(inliers, cfg.min_inliers - 1) - cfg.weak_inliers) / span)
        return cfg.weak_strength * (0.2 + 0.8 * frac)
    excess = max(0, inliers - cfg.min_inliers)
    return cfg.edge_floor + (1.0 - cfg.edge_floor) * (1.0 - math.exp(-excess / cfg.edge_scale))


@attrs.frozen
class LabelEvidence:
    """What the graph says about one sample (leave-one-out).

    ``mass``: label -> propagated mass; ``reached``: samples reached (id -> path
    strength, strongest first, at most :data:`MAX_REACH`); ``degree``: verified
    (and weak) pairs; ``community``: the component's index and size;
    ``community_share``: share of the other connected images of the sample's label
    in its community (``None``: no other connected image of that label).
    """

    mass: dict[str, float]
    reached: dict[str, float]
    degree: int
    community: int
    community_size: int
    community_share: float | None = None

    @property
    def total(self) -> float:
        return sum(self.mass.values())


class VerifiedGraph:
    """Verified pairs, undirected; strength = the best evidence either way."""

    def __init__(self, cfg: AuditConfig) -> None:
        self.cfg = cfg
        self.adj: dict[str, dict[str, float]] = defaultdict(dict)
        self.inliers: dict[tuple[str, str], int] = {}
        self.strong: set[tuple[str, str]] = set()

    def add(self, a: str, b: str, inliers: int, verified: bool = True) -> None:
        if a == b:
            return
        s = edge_strength(inliers, self.cfg, verified)
        if s <= 0:
            return
        if verified:
            self.strong.add((a, b) if a < b else (b, a))
        if s > self.adj[a].get(b, 0.0):
            self.adj[a][b] = s
            self.adj[b][a] = s
        key = (a, b) if a < b else (b, a)
        self.inliers[key] = max(self.inliers.get(key, 0), int(inliers))

    def add_edges(self, edges: Iterable[Mapping[str, object]]) -> None:
        for e in edges:
            self.add(str(e["a"]), str(e["b"]), int(e.get("inliers") or 0), bool(e.get("verified")))  # type: ignore[call-overload]

    def degree(self, node: str) -> int:
        return len(self.adj.get(node, ()))

    def reach(self, source: str) -> dict[str, float]:
        """Strongest path strength to each sample within ``hops`` (max-product Dijkstra)."""
        cfg = self.cfg
        best: dict[str, float] = {source: 1.0}
        hops: dict[str, int] = {source: 0}
        heap: list[tuple[float, str]] = [(-1.0, source)]
        out: dict[str, float] = {}
        while heap and len(out) < MAX_REACH:
            neg, node = heapq.heappop(heap)
            s = -neg
            if s < best.get(node, 0.0):
                continue
            if node != source:
                if node in out:
                    continue
                out[node] = s
            h = hops[node]
            if h >= cfg.hops:
                continue
            decay = 1.0 if h == 0 else cfg.hop_decay
            for nb, w in self.adj.get(node, {}).items():
                if nb == source or nb in out:
                    continue
                cand = s * w * decay
                if cand > best.get(nb, 0.0):
                    best[nb] = cand
                    hops[nb] = h + 1
                    heapq.heappush(heap, (-cand, nb))
        return out

    def components(self, nodes: Iterable[str]) -> dict[str, int]:
        """Component index of every node (isolated nodes get their own)."""
        comp: dict[str, int] = {}
        n = 0
        for start in nodes:
            if start in comp:
                continue
            comp[start] = n
            stack = [start]
            while stack:
                x = stack.pop()
                for y in self.adj.get(x, ()):
                    if y not in comp:
                        comp[y] = n
                        stack.append(y)
            n += 1
        return comp

    def label_incoherence(self, labels: Mapping[str, str], comp: Mapping[str, int]) -> dict[str, float]:
        """label -> 1 - (share of its *connected* images in its largest community).

        0 when all the label's connected images share one community (or fewer than
        two are connected), approaching 1 when they scatter over many.
        """
        per_label: dict[str, Counter[int]] = defaultdict(Counter)
        for sid, label in labels.items():
            if self.degree(sid):
                per_label[label][comp[sid]] += 1
        out: dict[str, float] = {}
        for label, counts in per_label.items():
            n = sum(counts.values())
            out[label] = 0.0 if n < 2 else 1.0 - max(counts.values()) / n
        return out

    def community_share(self, labels: Mapping[str, str], comp: Mapping[str, int]) -> dict[str, float | None]:
        """Per sample: the share of the *other* connected images of its label that lie
        in its own community (``None`` when its label has no other connected image,
        or when it is itself unconnected)."""
        per_label: dict[str, Counter[int]] = defaultdict(Counter)
        for sid, label in labels.items():
            if self.degree(sid):
                per_label[label][comp[sid]] += 1
        out: dict[str, float | None] = {}
        for sid, label in labels.items():
            counts = per_label.get(label)
            if not self.degree(sid) or counts is None:
                out[sid] = None
                continue
            others = sum(counts.values()) - 1
            out[sid] = None if others <= 0 else (counts[comp[sid]] - 1) / others
        return out

    def evidence(self, labels: Mapping[str, str]) -> dict[str, LabelEvidence]:
        """Leave-one-out label evidence for every node of ``labels`` (see module doc)."""
        cfg = self.cfg
        nodes = list(labels)
        reach = {i: self.reach(i) for i in nodes}
        comp = self.components(nodes)
        share = self.community_share(labels, comp)
        trust = {i: cfg.self_trust * (0.5 if (s := share[i]) is None else s) for i in nodes}
        # q: each node's label distribution, starting from its given label
        q: dict[str, dict[str, float]] = {i: {labels[i]: 1.0} for i in nodes}
        raw: dict[str, dict[str, float]] = {i: {} for i in nodes}
        for _ in range(max(0, cfg.iterations)):
            raw = {i: _weighted_sum(reach[i], q) for i in nodes}
            q = {i: _normalise(_plus(raw[i], {labels[i]: trust[i]})) or {labels[i]: 1.0} for i in nodes}
        sizes = Counter(comp.values())
        out: dict[str, LabelEvidence] = {}
        for i in nodes:
            mass: dict[str, float] = defaultdict(float)
            for j, s in reach[i].items():
                if j not in labels:
                    continue
                # j's distribution without i's own contribution to it (leave-one-out)
                own = dict(raw.get(j, {}))
                back = reach[j].get(i)
                if back is not None and cfg.iterations > 0:
                    for lab, p in q[i].items():
                        own[lab] = own.get(lab, 0.0) - back * p
                qj = (_normalise(_plus({k: v for k, v in own.items() if v > 1e-12}, {labels[j]: trust[j]})) or {labels[j]: 1.0}) if cfg.iterations > 0 else {labels[j]: 1.0}
                for lab, p in qj.items():
                    mass[lab] += s * p
            out[i] = LabelEvidence(mass=dict(mass), reached=reach[i], degree=self.degree(i), community=comp[i], community_size=sizes[comp[i]], community_share=share[i])
        return out


def _weighted_sum(reach: Mapping[str, float], q: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    acc: dict[str, float] = defaultdict(float)
    for j, s in reach.items():
        for lab, p in q.get(j, {}).items():
            acc[lab] += s * p
    return dict(acc)


def _plus(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


def _normalise(d: Mapping[str, float]) -> dict[str, float]:
    total = sum(d.values())
    return {k: v / total for k, v in d.items()} if total > 0 else {}
