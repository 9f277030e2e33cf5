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

from consist_spatial.asmk import (
    AsmkIndex,
    AsmkParams,
    AsmkRetriever,
    Reranked,
    detect_extractor,
    open_asmk_index,
    query_features,
    spatial_config_for,
    spatial_rerank,
    update_asmk_index,
)
from consist_spatial.checker import SpatialChecker, SpatialConfig
from consist_spatial.extractors import EXTRACTORS, AlikedExtractor, DiskExtractor, XFeatExtractor, make_extractor
from consist_spatial.features import FeatureExtractor, LocalFeatures, SiftExtractor, features_for, rootsift
from consist_spatial.matchers import MATCHERS, LightGlueMatcher, NNMatcher, TorchNNMatcher, make_matcher
from consist_spatial.matching import LOWE_RATIO, match_descriptors, match_features
from consist_spatial.verify import DEFAULT_THRESHOLDS, Verification, consistent_matches, pair_score, project_points, rasterise, verify_pair
from consist_spatial.weights import WeightsNotFoundError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EXTRACTORS",
    "LOWE_RATIO",
    "MATCHERS",
    "AlikedExtractor",
    "AsmkIndex",
    "AsmkParams",
    "AsmkRetriever",
    "DiskExtractor",
    "FeatureExtractor",
    "LightGlueMatcher",
    "LocalFeatures",
    "NNMatcher",
    "Reranked",
    "SiftExtractor",
    "SpatialChecker",
    "SpatialConfig",
    "TorchNNMatcher",
    "Verification",
    "WeightsNotFoundError",
    "XFeatExtractor",
    "__version__",
    "consistent_matches",
    "detect_extractor",
    "features_for",
    "make_extractor",
    "make_matcher",
    "match_descriptors",
    "match_features",
    "open_asmk_index",
    "pair_score",
    "project_points",
    "query_features",
    "rasterise",
    "rootsift",
    "spatial_config_for",
    "spatial_rerank",
    "update_asmk_index",
    "verify_pair",
]
