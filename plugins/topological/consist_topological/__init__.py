"""consist-topological: topological consistency for consist.

The matching hypergraph kept in the store (:mod:`.hypergraph`), hypergraph
propagation and community selection (:mod:`.propagation`, :mod:`.rerank`;
An et al., NeurIPS 2021), topological RANSAC (:mod:`.tr`; An et al., NeurIPS 2023),
the ``community`` label-vote and ``topological_ransac`` checkers
(:mod:`.checkers`), and revisitop retrieval evaluation (:mod:`.evaluation`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from consist_topological.checkers import (
    SIGNAL_LABELS,
    SIGNAL_UNCERTAINTY,
    CommunityConfig,
    CommunityVoteChecker,
    TopologicalRansacChecker,
    TrCheckerConfig,
)
from consist_topological.hypergraph import GraphConfig, Hyperedge, MatchingHypergraph, graph_for
from consist_topological.propagation import Propagation, communities, community_uncertainty, propagate
from consist_topological.rerank import HpConfig, HpResult, QueryLink, hp_rerank, links_from_graph, links_from_reranked
from consist_topological.tr import TrParams, TrResult, topological_ransac

__all__ = [
    "SIGNAL_LABELS",
    "SIGNAL_UNCERTAINTY",
    "CommunityConfig",
    "CommunityVoteChecker",
    "GraphConfig",
    "HpConfig",
    "HpResult",
    "Hyperedge",
    "MatchingHypergraph",
    "Propagation",
    "QueryLink",
    "TopologicalRansacChecker",
    "TrCheckerConfig",
    "TrParams",
    "TrResult",
    "__version__",
    "communities",
    "community_uncertainty",
    "graph_for",
    "hp_rerank",
    "links_from_graph",
    "links_from_reranked",
    "propagate",
    "topological_ransac",
]
