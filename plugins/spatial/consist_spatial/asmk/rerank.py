"""Spatial re-ranking of a retrieved short-list: verify the best neighbours
geometrically and put the verified ones first (revisitop's spatial re-ranking
baseline), with where the query is in each of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs
import numpy as np
import structlog

from consist.errors import ImageError
from consist.records import Neighbour, Query
from consist_spatial.features import FeatureExtractor, LocalFeatures, SiftExtractor, features_for

if TYPE_CHECKING:
    from consist.contracts import Store

__all__ = ["DEFAULT_RERANK_DEPTH", "Reranked", "spatial_config_for", "spatial_rerank"]

log = structlog.get_logger("consist.spatial")

#: How many of the best retrieval results :func:`spatial_rerank` verifies (revisitop's
#: spatial re-ranking baselines verify the top 100).
DEFAULT_RERANK_DEPTH = 100


def _config_extractor(cfg: Any) -> FeatureExtractor:
    """The feature extractor a :class:`SpatialConfig` selects."""
    fe = getattr(cfg, "feature_extractor", None)
    return fe if fe is not None else cfg.extractor


@attrs.frozen
class Reranked:
    """One result after spatial re-ranking.

    Attributes:
        neighbour: the sample; ``rank`` is its position after re-ranking,
            ``similarity`` the retrieval score.
        retrieval_rank: its rank before re-ranking.
        verification: the geometric verification (``None`` beyond the re-ranking
            depth or when its image could not be read).
        inlier_points: ``K x 4`` rows ``(xq, yq, xn, yn)`` of the inlier matches in
            query and neighbour pixels (for drawing).
        error: why it was not verified, when its image could not be read.
    """

    neighbour: Neighbour
    retrieval_rank: int
    verification: Any = None
    inlier_points: np.ndarray = attrs.field(factory=lambda: np.zeros((0, 4), np.float32), eq=False, repr=False)
    error: str = ""

    @property
    def verified(self) -> bool:
        return bool(self.verification is not None and self.verification.verified)

    @property
    def inliers(self) -> int:
        return 0 if self.verification is None else int(self.verification.inliers)

    @property
    def polygon(self) -> tuple[tuple[float, float], ...] | None:
        """Where the query (region) is in the neighbour: the projected region of a
        verified homography, else the inlier hull of a verified pair."""
        v = self.verification
        if v is None or not v.verified:
            return None
        return v.polygon if v.polygon is not None else v.inlier_hull

    @property
    def polygon_source(self) -> str | None:
        v = self.verification
        if self.polygon is None or v is None:
            return None
        return "projected_query_region" if v.polygon is not None else "inlier_hull"

    def to_dict(self) -> dict[str, Any]:
        s = self.neighbour.sample
        v = self.verification
        out: dict[str, Any] = {
            "rank": self.neighbour.rank,
            "id": s.id,
            "label": s.label,
            "uri": s.uri,
            "score": round(float(self.neighbour.similarity), 6),
            "retrieval_rank": self.retrieval_rank,
            "verified": self.verified,
            "inliers": self.inliers,
            "matches": None if v is None else v.matches,
            "polygon": None if self.polygon is None else [[round(x, 1), round(y, 1)] for x, y in self.polygon],
            "polygon_source": self.polygon_source,
        }
        if v is not None and not v.verified and v.reason:
            out["reason"] = v.reason
        if self.error:
            out["reason"] = self.error
        return out


def spatial_config_for(extractor: FeatureExtractor, **options: Any) -> Any:
    """A :class:`SpatialConfig` whose features are ``extractor``'s (same cache), so that
    the features cached for retrieval serve verification too."""
    from consist_spatial.checker import SpatialConfig

    known = {a.name for a in attrs.fields(SpatialConfig)}
    if isinstance(extractor, SiftExtractor):
        derived: dict[str, Any] = {"extractor": "sift", "max_side": extractor.max_side, "max_keypoints": extractor.max_keypoints, "rootsift": extractor.root}
    else:
        fields = attrs.asdict(cast(attrs.AttrsInstance, extractor)) if attrs.has(type(extractor)) else {}
        derived = {"extractor": getattr(extractor, "name", None), **{k: fields[k] for k in ("max_side", "max_keypoints", "device", "weights_dir") if k in fields}}
    derived = {k: v for k, v in derived.items() if (k in known and v is not None) or k == "max_side"}
    return SpatialConfig(**{**derived, **options})


def spatial_rerank(
    query: Query,
    neighbours: Sequence[Neighbour],
    store: Store,
    *,
    depth: int = DEFAULT_RERANK_DEPTH,
    checker: Any = None,
    config: Any = None,
    features: LocalFeatures | None = None,
) -> list[Reranked]:
    """Verify the query against its ``depth`` best neighbours and re-rank them:
    verified neighbours first, by pair score (:attr:`Verification.score`: inliers
    and scale/orientation-consistent matches; ties by retrieval rank), then the
    unverified ones and those beyond ``depth`` in retrieval order.

    Args:
        checker: a :class:`~consist_spatial.SpatialChecker` whose matching and
            verification are used (default one built from ``config``).
        config: a :class:`~consist_spatial.SpatialConfig` (default: the checker's).
            Its extractor should be the retriever's, so the cached features serve both.
        features: the query's features, already restricted to ``query.region``
            (computed when not given).
    """
    from consist_spatial.checker import SpatialChecker

    checker = checker or SpatialChecker(config)
    cfg = config or checker.config
    qf = features if features is not None else checker.query_features(query, store, cfg)
    ordered = sorted(neighbours, key=lambda n: n.rank)
    checked: list[Reranked] = []
    for n in ordered[: max(0, depth)]:
        try:
            v = checker.verify(qf, n.sample, store, cfg=cfg, region=query.region)
        except ImageError as exc:
            log.warning("rerank_image_unreadable", sample=n.sample.id, error=str(exc))
            checked.append(Reranked(n, n.rank, None, error=str(exc)))
            continue
        pts = np.zeros((0, 4), np.float32)
        if v.verified and len(v.inlier_matches):
            nf = features_for(n.sample, store, _config_extractor(cfg))
            m = np.asarray(v.inlier_matches, dtype=np.int64)
            pts = np.hstack([qf.keypoints[m[:, 0]], nf.keypoints[m[:, 1]]]).astype(np.float32)
        checked.append(Reranked(n, n.rank, v, pts))
    verified = sorted((r for r in checked if r.verified), key=lambda r: (-r.verification.score, r.retrieval_rank))
    rest = [r for r in checked if not r.verified] + [Reranked(n, n.rank) for n in ordered[max(0, depth) :]]
    out = []
    for i, r in enumerate(verified + rest):
        out.append(attrs.evolve(r, neighbour=attrs.evolve(r.neighbour, rank=i)))
    return out
