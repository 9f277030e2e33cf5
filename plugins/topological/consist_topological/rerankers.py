"""The ``hp`` re-ranker (``consist query --rerank hp``): hypergraph propagation over the
store's matching graph, seeded by the query's verified pairs (An et al., NeurIPS 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from consist.contracts.evidence import PairEvidence
from consist.contracts.features import FeatureSpec
from consist.contracts.retrieval import Reranking
from consist.contracts.store import Store
from consist.records import Neighbour, Query
from consist_topological.providers import find_pair_verifier
from consist_topological.rerank import QueryLink

__all__ = ["HpReranker", "links_from_pairs"]


def links_from_pairs(pairs: Sequence[PairEvidence]) -> list[QueryLink]:
    """Links of the query to the images it verified with, from pair evidence that
    carries the inlier correspondences."""
    out = [QueryLink(p.neighbour, np.asarray(p.query_points, np.float32), np.asarray(p.neighbour_points, np.float32)) for p in pairs if p.verified and len(p.query_points)]
    return sorted(out, key=lambda lk: (-lk.inliers, lk.sample_id))


class HpReranker:
    """Propagates from the neighbours the query verified with: their pair evidence
    (``neighbour.evidence["pair"]``, e.g. from the ``spatial`` re-ranker) when the
    input carries it, else pairs verified now by a registered
    :class:`~consist.contracts.PairVerifier` (the top ``k``; the ``spatial`` checker
    when registered, as for the matching graph)."""

    name = "hp"

    def rerank(self, query: Query, neighbours: Sequence[Neighbour], store: Store, *, k: int, features: FeatureSpec | None = None) -> Reranking:
        from consist_topological.hypergraph import graph_for
        from consist_topological.rerank import hp_rerank

        ordered = sorted(neighbours, key=lambda n: n.rank)
        pairs = [PairEvidence.from_dict(n.evidence["pair"]) for n in ordered if isinstance(n.evidence.get("pair"), dict)]
        if not pairs:
            verifier = find_pair_verifier()
            if verifier is not None:
                pairs = [verifier.verify_pair(query, n.sample, store, features=features) for n in ordered[:k]]
        result = hp_rerank(graph_for(store), query.id, [n.sample.id for n in ordered], links_from_pairs(pairs))
        by_id: dict[str, Neighbour] = {n.sample.id: n for n in ordered}
        missing = [sid for sid in result.ranking if sid not in by_id]
        for sid, sample in zip(missing, store.get_many(missing) if missing else []):
            if sample is not None:
                by_id[sid] = Neighbour(sample=sample, similarity=0.0, source="propagation")
        out: list[Neighbour] = []
        for sid in result.ranking:
            n = by_id.get(sid)
            if n is None:
                continue
            evidence: dict[str, Any] = dict(n.evidence)
            if sid in result.propagation:
                box = result.propagation.regions.get(sid)
                evidence.update(hop=result.propagation.hops[sid], active_region=None if box is None else [round(float(v), 1) for v in box])
            out.append(attrs.evolve(n, rank=len(out), evidence=evidence))
        details = {"community_uncertainty": round(float(result.uncertainty), 4), "communities": len(result.communities), "seeds": list(result.seeds), "seed_rule": result.seed_rule}
        return Reranking(neighbours=out, details=details)
