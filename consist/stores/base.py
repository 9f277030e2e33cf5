"""The store protocol and ``open_store``: where samples, labels, history and cached
artefacts live.

A store is opened by URI; the scheme picks the back-end among those registered
through ``consist_register_stores`` (built in: ``sqlite://`` and ``memory://``; a
plain file path means SQLite).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from consist.errors import StoreError
from consist.records import HistoryEntry, Provenance, Region, Sample

__all__ = ["Store", "AliasStore", "open_store", "split_uri"]


@runtime_checkable
class Store(Protocol):
    """What consist needs from a store. ``SQLiteStore`` is the reference implementation.

    Every write is recorded in the history with its provenance, and can be undone.
    A change never replaces a label of higher trust (``TRUST``) unless ``force``.
    """

    uri: str

    # reads
    def get(self, sample_id: str) -> Sample | None: ...
    def samples(self, *, label: str | None = None, include_deleted: bool = False) -> Iterator[Sample]: ...
    def labels(self) -> dict[str, int]: ...
    def __len__(self) -> int: ...
    def search(self, vector: np.ndarray, k: int, *, exclude: Iterable[str] = ()) -> list[tuple[Sample, float]]: ...

    # writes (each returns the history entries it made)
    def put(self, samples: Sequence[Sample], *, reason: str = "", force: bool = False, on_conflict: str = "raise") -> list[HistoryEntry]: ...
    def relabel(self, sample_id: str, label: str, *, provenance: Provenance, reason: str = "", force: bool = False) -> HistoryEntry | None: ...
    def set_region(self, sample_id: str, region: Region | None, *, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None: ...
    def delete(self, sample_id: str, *, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None: ...
    def transaction(self) -> AbstractContextManager[Any]: ...

    # history
    def history(self, *, sample_id: str | None = None, limit: int | None = 50, newest_first: bool = True, since: int | None = None) -> list[HistoryEntry]: ...
    def undo(self, seq: int, *, force: bool = False) -> HistoryEntry: ...

    # artefacts (cached per-sample data: local features, answers of an LMM, ...)
    def put_artefact(self, sample_id: str, kind: str, data: bytes) -> None: ...
    def get_artefact(self, sample_id: str, kind: str) -> bytes | None: ...

    def close(self) -> None: ...


def split_uri(uri: str) -> tuple[str, str]:
    """``"sqlite:///a.db"`` -> ``("sqlite", "/a.db")``; a bare path is SQLite."""
    if "://" not in uri:
        return "sqlite", uri
    scheme, rest = uri.split("://", 1)
    return scheme.lower(), rest


def open_store(uri: str | Store, **kwargs: Any) -> Store:
    """Open a store by URI (``sqlite:///path.db``, ``memory://``, ``path.db``, or a
    scheme a plugin registered). A store object passes through unchanged."""
    if not isinstance(uri, str):
        return uri
    from consist.plugins import store_openers

    scheme, _ = split_uri(uri)
    openers = store_openers()
    if scheme not in openers:
        known = ", ".join(f"{s}://" for s in sorted(openers))
        raise StoreError(f"no store for the URI scheme {scheme!r} in {uri!r} (known: {known})")
    return openers[scheme](uri, **kwargs)


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
