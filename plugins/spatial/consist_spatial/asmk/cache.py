"""The ASMK indexes of this process, one per store, extractor and parameters.

Shared by every :class:`~consist_spatial.asmk.retriever.AsmkRetriever` and by
:meth:`~consist_spatial.asmk.index.AsmkIndex.save`, so that the engines and commands
of one process load a store's index once, and an index trained or updated by
``consist index`` is the one later queries use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consist.stores.derived import PerStoreCache
from consist_spatial.asmk.params import AsmkParams
from consist_spatial.features import FeatureExtractor

if TYPE_CHECKING:
    from consist_spatial.asmk.index import AsmkIndex

__all__ = ["DETECTED", "INDEXES", "IndexKey", "remember"]

#: What tells two indexes of one store apart: the extractor's feature kind and the parameters.
IndexKey = tuple[str, AsmkParams]

#: store -> (extractor kind, params) -> index.
INDEXES: PerStoreCache[IndexKey, AsmkIndex] = PerStoreCache("asmk index")
#: store -> the extractor :func:`~consist_spatial.asmk.detect.detect_extractor` found for
#: it (key ``"detected"``), used by retrievers not given one.
DETECTED: PerStoreCache[str, FeatureExtractor] = PerStoreCache("asmk extractor")


def remember(store: object, index: AsmkIndex) -> None:
    """Make ``index`` the one this process's retrievers use for ``store``."""
    INDEXES.put(store, (index.extractor.kind, index.params), index)
