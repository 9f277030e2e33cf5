"""Using an ASMK index: the ``asmk`` retriever, and the entry points that open or
update a store's index (``consist index``, the audit, the evaluation)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import structlog

from consist.contracts.features import FeatureSpec
from consist.contracts.retrieval import Progress as ContractProgress
from consist.contracts.store import Store
from consist.errors import ConsistError, StoreError
from consist.records import Neighbour, Query
from consist_spatial.asmk.artefacts import ASMK_SAMPLE_ID, codebook_kind
from consist_spatial.asmk.cache import DETECTED, INDEXES
from consist_spatial.asmk.detect import detect_extractor
from consist_spatial.asmk.index import AsmkIndex
from consist_spatial.asmk.params import AsmkParams, Progress
from consist_spatial.features import FeatureExtractor, SiftExtractor

__all__ = ["AsmkRetriever", "open_asmk_index", "update_asmk_index"]

log = structlog.get_logger("consist.spatial")


def open_asmk_index(store: Store, extractor: FeatureExtractor | None = None, params: AsmkParams | None = None, *, build: bool = True, progress: Progress | None = None) -> AsmkIndex:
    """The store's ASMK index, synced with the store; trained now if it has none
    and ``build`` (else :class:`ConsistError`)."""
    index = AsmkIndex.load(store, extractor, params, progress=progress)
    if index is None:
        if not build:
            raise ConsistError(f"{store.uri}: no ASMK index; build it with: consist index DATASET --store {store.uri}")
        index = AsmkIndex.train(store, extractor, params, progress=progress, save=_writable(store))
        return index
    index.sync(store, progress=progress)
    return index


def update_asmk_index(
    store: Store,
    extractor: FeatureExtractor | None = None,
    params: AsmkParams | None = None,
    *,
    codebook: str | Path | np.ndarray | None = None,
    retrain: bool = False,
    progress: Progress | None = None,
) -> tuple[AsmkIndex, dict[str, Any]]:
    """What ``consist index`` does after indexing: load the index and add what is
    new, or (re)train when there is none, when asked (``retrain``, a ``codebook``
    file), or when the store grew ``retrain_growth`` times; then save.

    Returns the index and a JSON-able report (``action``: ``trained``, ``loaded``,
    ``retrained``, ``updated`` or ``unchanged``; ``added``; ``failed``).
    """
    params = params or AsmkParams()
    extractor = extractor or SiftExtractor()
    index = None if (retrain or codebook is not None) else AsmkIndex.load(store, extractor, params, progress=progress)
    if index is None:
        existed = store.get_artefact(ASMK_SAMPLE_ID, codebook_kind(extractor)) is not None
        index = AsmkIndex.train(store, extractor, params, codebook=codebook, progress=progress)
        action = "loaded" if codebook is not None else ("retrained" if existed else "trained")
        return index, {"action": action, "added": len(index), "failed": [], **index.stats()}
    report = index.sync(store, progress=progress)
    if index.needs_retrain():
        trained_on = index.codebook_meta.get("trained_on_images")
        index = AsmkIndex.train(store, extractor, params, progress=progress)
        return index, {"action": "retrained", "reason": f"store grew from {trained_on} to {len(index)} images", "added": len(index), "failed": [], **index.stats()}
    index.save(store)
    action = "updated" if report.changed else "unchanged"
    return index, {"action": action, "added": report.added, "failed": [{"id": sid, "error": err} for sid, err in report.failed], **index.stats()}


def _writable(store: Store) -> bool:
    """Whether the index may be saved into ``store`` (not opened read-only)."""
    return not getattr(store, "readonly", False)


class AsmkRetriever:
    """The ``asmk`` retriever: neighbours by ASMK similarity of local features.

    Args:
        extractor: the local features (default: those of the store's ASMK index,
            else SIFT defaults, i.e. the ``spatial`` checker's, so the features
            cached for retrieval serve verification too).
        params: :class:`AsmkParams`.
        auto_build: train an index on the first query when the store has none
            (True; a large store is better indexed ahead with ``consist index``).
        autosave: write the inverted-file snapshot back once the samples indexed
            or hidden since it was saved reach 2% of the index (at least 1), so a
            store that adapts with every query is not rewritten every time (True;
            ignored for read-only stores). Until then, and without autosave, a new
            process catches up from the store's history when it loads the index.
    """

    name = "asmk"
    description = "ASMK* over cached RootSIFT (codebook trained on the store; incremental)"

    def __init__(self, extractor: FeatureExtractor | None = None, params: AsmkParams | None = None, *, auto_build: bool = True, autosave: bool = True) -> None:
        self.extractor = extractor
        self.params = params or AsmkParams()
        self.auto_build = auto_build
        self.autosave = autosave

    def _extractor_for(self, features: FeatureSpec | None) -> FeatureExtractor | None:
        if features is None:
            return self.extractor
        from consist import plugins

        return plugins.make_extractor(features)

    def prepare(self, store: Store, *, features: FeatureSpec | None = None, progress: ContractProgress | None = None) -> None:
        """Train the index when the store has none, else add what is new (and retrain
        when the store outgrew its codebook); saved in the store, so that every worker
        process loads it instead of building it."""
        total = len(store)
        done = [0]

        def step(n: int) -> None:  # the index reports images one step at a time
            done[0] += n
            if progress is not None:
                progress(min(done[0], total), total)

        update_asmk_index(store, self._extractor_for(features), self.params, progress=step)
        INDEXES.invalidate(store)

    def index_for(self, store: Store, features: FeatureSpec | None = None) -> AsmkIndex:
        """The (cached) index of ``store``, synced with it."""
        extractor = self._extractor_for(features) or DETECTED.get(store, "detected")
        if extractor is None:
            extractor = detect_extractor(store) or SiftExtractor()
            DETECTED.put(store, "detected", extractor)
        key = (extractor.kind, self.params)
        index = INDEXES.get(store, key)
        if index is None:
            index = AsmkIndex.load(store, extractor, self.params)
            if index is None:
                if not self.auto_build:
                    raise ConsistError(f"{store.uri}: no ASMK index; build it with: consist index DATASET --store {store.uri}")
                log.warning("asmk_building_index", store=store.uri, samples=len(store), hint="index ahead of time with consist index")
                index = AsmkIndex.train(store, extractor, self.params, save=self.autosave and _writable(store))
            INDEXES.put(store, key, index)
        index.sync(store)  # a loaded snapshot may be older than the store
        if self.autosave and index.unsaved >= max(1, len(index) // 50) and _writable(store):
            try:
                index.save(store)
            except StoreError as exc:  # locked or read-only: the next process catches up
                log.debug("asmk_autosave_failed", store=store.uri, error=str(exc))
        return index

    def retrieve(self, query: Query, store: Store, k: int, *, exclude: Iterable[str] = (), features: FeatureSpec | None = None) -> list[Neighbour]:
        """The query's ``k`` nearest samples by ASMK score, best first (never the
        query itself, nor an id in ``exclude``)."""
        if store is None:
            raise ConsistError("the asmk retriever needs a store")
        if len(store) == 0:
            return []
        skip = set(exclude)
        found = self.index_for(store, features).retrieve(query, store, k + len(skip))
        out = [n for n in found if n.sample.id not in skip][:k]
        return [attrs.evolve(n, rank=i) for i, n in enumerate(out)]
