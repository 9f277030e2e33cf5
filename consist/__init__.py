"""consist: self-correcting visual recognition.

A recognizer predicts; consist retrieves the image's neighbours from a store, lets
registered consistency checkers vote, corrects the label when the evidence says so,
and feeds verified samples back into the store.

Public API (documented in docs/):

* records: :class:`Sample`, :class:`Query`, :class:`Candidate`, :class:`Prediction`,
  :class:`Neighbour`, :class:`Vote`, :class:`Decision`, :class:`Region`, ...
* plugins: :data:`hookimpl`, :data:`hookspec`, :class:`Checker`, :class:`BaseChecker`,
  :class:`Abstain`, :class:`CheckContext`
* engine: :class:`Engine`, :class:`EngineConfig`, :func:`wrap`
* stores: :func:`open_store`
* feedback: :func:`correct`
* label audit: :func:`audit` (``consist.audit(dataset, out)``, docs/audit.md)
"""

from __future__ import annotations

import structlog as _structlog

from consist import audit
from consist._version import __version__
from consist.adapt import correct
from consist.aggregate import AggregateResult, AggregationConfig, aggregate, calibrate
from consist.contracts.checker import Abstain, BaseChecker, CheckContext, Checker
from consist.contracts.hookspecs import hookimpl, hookspec
from consist.contracts.store import Store
from consist.controller import ControllerConfig, ControllerState
from consist.engine import Engine, EngineConfig
from consist.errors import ConsistError, ImageError, LabelConflict, PluginError, SampleNotFound, StoreError, StoreLockedError, UndoConflict
from consist.images import load_image
from consist.recognizer import KNNRecognizer, SelfCorrectingRecognizer, wrap
from consist.records import (
    Candidate,
    CheckerRun,
    Decision,
    HistoryEntry,
    Localisation,
    Neighbour,
    Prediction,
    Provenance,
    Query,
    Region,
    RunStatus,
    Sample,
    Vote,
)
from consist.stores.uri import open_store

if not _structlog.is_configured():  # quiet by default for library users; the CLI reconfigures
    from consist.logs import configure_logging as _configure_logging

    _configure_logging("WARNING")

__all__ = [
    "Abstain",
    "AggregateResult",
    "AggregationConfig",
    "BaseChecker",
    "Candidate",
    "CheckContext",
    "Checker",
    "CheckerRun",
    "ConsistError",
    "ControllerConfig",
    "ControllerState",
    "Decision",
    "Engine",
    "EngineConfig",
    "HistoryEntry",
    "ImageError",
    "KNNRecognizer",
    "LabelConflict",
    "Localisation",
    "Neighbour",
    "PluginError",
    "Prediction",
    "Provenance",
    "Query",
    "Region",
    "RunStatus",
    "Sample",
    "SampleNotFound",
    "SelfCorrectingRecognizer",
    "Store",
    "StoreError",
    "StoreLockedError",
    "UndoConflict",
    "Vote",
    "__version__",
    "aggregate",
    "audit",
    "calibrate",
    "correct",
    "hookimpl",
    "hookspec",
    "load_image",
    "open_store",
    "wrap",
]
