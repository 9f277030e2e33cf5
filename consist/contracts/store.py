"""The store contract: where samples, labels, history and cached artefacts live.

``SQLiteStore`` (``consist/stores/sqlite.py``) is the reference implementation; a
plugin adds a back-end by registering an opener for a URI scheme
(:func:`consist.contracts.hookspecs.consist_register_stores`). Stores are opened with
:func:`consist.open_store`, which lives apart from this protocol
(``consist/stores/uri.py``) so that the contract imports no registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from consist.records import HistoryEntry, Provenance, Region, Sample

__all__ = ["AliasStore", "Store", "StoreOpener"]


@runtime_checkable
class Store(Protocol):
    """What consist needs from a store.

    Every write is recorded in the history with its provenance and can be undone. A
    change never replaces a label of higher trust (``consist.records.TRUST``) unless
    ``force``. Artefacts are opaque per-sample bytes under a *kind* (local features
    ``features/<extractor kind>``, an LMM's answers, a derived index); they are caches,
    never history.
    """

    uri: str

    # reads
    def get(self, sample_id: str) -> Sample | None:
        """The live sample, or ``None`` (never a deleted one)."""
        ...

    def get_many(self, ids: Sequence[str]) -> list[Sample | None]:
        """:meth:`get` for many ids at once, in the order given."""
        ...

    def samples(self, *, label: str | None = None, include_deleted: bool = False) -> Iterator[Sample]:
        """Every live sample (of one ``label``), in the order they were first stored."""
        ...

    def labels(self) -> dict[str, int]:
        """Label -> number of live samples."""
        ...

    def __len__(self) -> int: ...

    def search(self, vector: np.ndarray, k: int, *, exclude: Iterable[str] = ()) -> list[tuple[Sample, float]]:
        """The ``k`` samples whose embeddings are nearest (cosine) to ``vector``, best first."""
        ...

    # writes (each returns the history entries it made)
    def put(self, samples: Sequence[Sample], *, reason: str = "", force: bool = False, on_conflict: str = "raise") -> list[HistoryEntry]:
        """Add or update samples; ``on_conflict`` is ``"raise"``, ``"skip"`` or ``"replace"``."""
        ...

    def relabel(self, sample_id: str, label: str, *, provenance: Provenance, reason: str = "", force: bool = False) -> HistoryEntry | None: ...
    def set_region(self, sample_id: str, region: Region | None, *, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None: ...
    def delete(self, sample_id: str, *, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None: ...

    def transaction(self) -> AbstractContextManager[Any]:
        """All writes inside commit together or not at all."""
        ...

    # history
    def history(self, *, sample_id: str | None = None, limit: int | None = 50, newest_first: bool = True, since: int | None = None) -> list[HistoryEntry]:
        """History entries (``since``: only those with a larger ``seq``)."""
        ...

    def undo(self, seq: int, *, force: bool = False) -> HistoryEntry:
        """Revert entry ``seq``; the revert is itself an entry."""
        ...

    # artefacts
    def put_artefact(self, sample_id: str, kind: str, data: bytes) -> None: ...
    def get_artefact(self, sample_id: str, kind: str) -> bytes | None: ...

    def artefact_kinds(self) -> dict[str, int]:
        """Artefact kind -> number of artefacts of that kind."""
        ...

    def delete_artefacts(self, kind: str, sample_id: str | None = None) -> int:
        """Drop cached artefacts of ``kind`` (of one sample, or all); returns how many."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class AliasStore(Protocol):
    """Optional store capabilities for conversational feedback (``SQLiteStore`` has
    them): personal names of labels, and notes/attributes on samples. Kept apart from
    :class:`Store` so that a store without them is still a store (``consist.aliases``
    then finds no aliases). Every change is a history entry that ``undo`` reverts.
    """

    def aliases(self) -> dict[str, str]: ...
    def set_alias(self, name: str, label: str, *, provenance: Provenance = Provenance.USER, reason: str = "", force: bool = False) -> HistoryEntry | None: ...
    def remove_alias(self, name: str, *, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None: ...
    def annotate(self, sample_id: str, *, note: str | None = None, attributes: dict[str, Any] | None = None, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None: ...


class StoreOpener(Protocol):
    """What ``consist_register_stores`` registers per URI scheme: ``opener(uri, **options)``.

    Options ``open_store`` passes on: ``create`` (bool: create a missing store,
    default true) and ``readonly`` (bool). An opener must refuse (``StoreError``) a
    file that is not a store of its kind rather than turn it into one.
    """

    def __call__(self, uri: str, **options: Any) -> Store: ...
