"""The ``spatial`` re-ranker (``consist query --rerank spatial``): geometric verification
of the retrieved top neighbours, verified ones first by pair score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from consist.contracts.evidence import PairEvidence
from consist.contracts.features import FeatureSpec
from consist.contracts.retrieval import Reranking
from consist.contracts.store import Store
from consist.records import Neighbour, Query

if TYPE_CHECKING:
    from consist_spatial.asmk import Reranked

__all__ = ["SpatialReranker", "to_reranking"]


class SpatialReranker:
    """Re-ranks by :func:`consist_spatial.spatial_rerank` with the spatial checker's
    matching and verification, on the run's features when given."""

    name = "spatial"

    def rerank(self, query: Query, neighbours: Sequence[Neighbour], store: Store, *, k: int, features: FeatureSpec | None = None) -> Reranking:
        from consist_spatial import SpatialChecker, spatial_rerank

        checker = SpatialChecker()
        cfg, _ext = checker.configured(None, features)
        ranked = spatial_rerank(query, neighbours, store, depth=k, checker=checker, config=cfg)
        return to_reranking(ranked)


def to_reranking(ranked: Sequence[Reranked]) -> Reranking:
    """:func:`consist_spatial.spatial_rerank` results in the contract's form: each
    neighbour's ``evidence["pair"]`` is its verified pair with all its inliers
    (what the ``hp`` re-ranker propagates from), its similarity the pair score (0 when
    unverified)."""
    out = []
    for i, r in enumerate(ranked):
        evidence: dict[str, object] = {"retrieval_rank": r.retrieval_rank}
        v = r.verification
        if v is not None:
            pts = r.inlier_points
            pair = PairEvidence(
                neighbour=r.neighbour.sample.id,
                verified=v.verified,
                inliers=v.inliers,
                score=v.score,
                model=v.model,
                matrix=v.H if v.model == "homography" else v.F,
                query_points=pts[:, :2],
                neighbour_points=pts[:, 2:],
                neighbour_polygon=r.polygon,
                reason=v.reason,
            )
            evidence["pair"] = pair.to_dict(max_points=None)
            evidence["polygon_source"] = r.polygon_source
        if r.error:
            evidence["error"] = r.error
        score = float(v.score) if v is not None and v.verified else 0.0
        out.append(attrs.evolve(r.neighbour, rank=i, similarity=score, source="spatial", evidence=evidence))
    return Reranking(neighbours=out)
