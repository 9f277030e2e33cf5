"""The contracts of consist, in one place: every hook a plugin can implement and every
protocol of an object a plugin can register (pytest's ``hookspec.py`` is the model).

=============================  =====================================================
module                         contract
=============================  =====================================================
:mod:`.hookspecs`              the hooks (registration, policies, notification)
:mod:`.checker`                ``Checker`` / ``BaseChecker`` / ``CheckContext`` / ``Abstain``
:mod:`.evidence`               ``PairEvidence`` (what a verified pair looks like), ``PairVerifier``
:mod:`.features`               ``LocalFeatures``, ``FeatureExtractor``, ``ExtractorFactory``, ``FeatureSpec``
:mod:`.retrieval`              ``Embedder``, ``Retriever``, ``Reranker``
:mod:`.reporter`               ``Reporter``, ``AuditOutcome``
:mod:`.feedback`               ``FeedbackInterpreter``, ``FeedbackOutcome`` (a sentence -> store changes)
:mod:`.store`                  ``Store``, ``AliasStore``, ``StoreOpener``
=============================  =====================================================

docs/plugins.md documents each of them; ``tests/test_docs.py`` fails when a hook or a
protocol member is missing there or its signature differs.
"""

from __future__ import annotations

from consist.contracts.checker import DEFAULT_TIMEOUT_S, Abstain, BaseChecker, CheckContext, Checker
from consist.contracts.evidence import MAX_DRAWN_MATCHES, PAIRS_KEY, PairEvidence, PairVerifier, pairs_in_votes
from consist.contracts.features import ExtractorFactory, FeatureExtractor, FeatureSpec, LocalFeatures
from consist.contracts.feedback import FeedbackInterpreter, FeedbackOutcome
from consist.contracts.hookspecs import hookimpl, hookspec
from consist.contracts.reporter import AuditOutcome, Reporter
from consist.contracts.retrieval import Embedder, Progress, Reranker, Reranking, Retriever
from consist.contracts.store import AliasStore, Store, StoreOpener

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_DRAWN_MATCHES",
    "PAIRS_KEY",
    "Abstain",
    "AliasStore",
    "AuditOutcome",
    "BaseChecker",
    "CheckContext",
    "Checker",
    "Embedder",
    "ExtractorFactory",
    "FeatureExtractor",
    "FeatureSpec",
    "FeedbackInterpreter",
    "FeedbackOutcome",
    "LocalFeatures",
    "PairEvidence",
    "PairVerifier",
    "Progress",
    "Reporter",
    "Reranker",
    "Reranking",
    "Retriever",
    "Store",
    "StoreOpener",
    "hookimpl",
    "hookspec",
    "pairs_in_votes",
]
