"""A query's local features, as retrieval and re-ranking compare them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from consist.records import Query, Region
from consist_spatial.features import FeatureExtractor, LocalFeatures, features_for

if TYPE_CHECKING:
    from consist.contracts import Store

__all__ = ["query_features"]


def _inside(region: Region, xy: np.ndarray) -> np.ndarray:
    """Which of the ``N x 2`` points lie in the region (its boundary included)."""
    import shapely
    from shapely.geometry import Polygon

    if len(xy) == 0:
        return np.zeros(0, dtype=bool)
    poly = Polygon(region.vertices)
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    return shapely.contains_xy(poly, xy[:, 0], xy[:, 1]) | shapely.intersects_xy(poly.boundary, xy[:, 0], xy[:, 1])


def query_features(query: Query, store: Store | None, extractor: FeatureExtractor) -> LocalFeatures:
    """The query's features restricted to its region (if any).

    A query whose id is a stored sample with the same uri (leave-one-out, a stored
    image asked about again) reads that sample's cached features.
    """
    feats = None
    if query.image is None and query.uri is not None and store is not None:
        stored = store.get(query.id)
        if stored is not None and stored.uri == query.uri:
            feats = features_for(stored, store, extractor)
    if feats is None:
        feats = features_for(query, store, extractor)
    if query.region is not None and len(feats):
        feats = feats.subset(_inside(query.region, feats.keypoints))
    return feats
