"""consist-spatial: geometric verification for consist.

Local features (SIFT/RootSIFT, cached in the store), tentative matches (mutual
nearest neighbours + Lowe's ratio test), a robust model (DEGENSAC or MAGSAC++
homography / fundamental matrix) with degeneracy checks, and the ``spatial``
checker that turns verified pairs into votes and localisations; ASMK instance
retrieval over the cached features (the ``asmk`` retriever) with spatial
re-ranking; and the ``consist index`` / ``consist query`` commands.
"""

from __future__ import annotations

__version__ = "0.1.0"

from consist_spatial.asmk_index import (
    AsmkIndex,
    AsmkParams,
    AsmkRetriever,
    Reranked,
    open_asmk_index,
    spatial_rerank,
    update_asmk_index,
)
from consist_spatial.checker import SpatialChecker, SpatialConfig
from consist_spatial.features import FeatureExtractor, LocalFeatures, SiftExtractor, features_for, rootsift
from consist_spatial.learned import (
    EXTRACTORS,
    MATCHERS,
    AlikedExtractor,
    DiskExtractor,
    LightGlueMatcher,
    NNMatcher,
    TorchNNMatcher,
    WeightsNotFoundError,
    XFeatExtractor,
    make_extractor,
    make_matcher,
)
from consist_spatial.matching import LOWE_RATIO, match_descriptors, match_features
from consist_spatial.verify import DEFAULT_THRESHOLDS, Verification, consistent_matches, pair_score, project_points, rasterise, verify_pair

__all__ = [
    "__version__",
    "AsmkIndex",
    "AsmkParams",
    "AsmkRetriever",
    "Reranked",
    "rasterise",
    "open_asmk_index",
    "spatial_rerank",
    "update_asmk_index",
    "DEFAULT_THRESHOLDS",
    "EXTRACTORS",
    "MATCHERS",
    "AlikedExtractor",
    "DiskExtractor",
    "LightGlueMatcher",
    "NNMatcher",
    "TorchNNMatcher",
    "WeightsNotFoundError",
    "XFeatExtractor",
    "make_extractor",
    "make_matcher",
    "FeatureExtractor",
    "LOWE_RATIO",
    "LocalFeatures",
    "SiftExtractor",
    "SpatialChecker",
    "SpatialConfig",
    "Verification",
    "features_for",
    "match_descriptors",
    "match_features",
    "project_points",
    "rootsift",
    "verify_pair",
    "consistent_matches",
    "pair_score",
]
