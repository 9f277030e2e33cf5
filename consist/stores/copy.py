"""Copying a whole store to another, of any back-end (``consist store copy``).

Why not ``put`` the samples into the destination: that would make a new history
(every sample an ``add`` of today) and lose the old one, so ``consist undo 42``
would mean something else in the copy. A copy moves the rows as they are: samples
with their deleted flag, embeddings, regions and meta; the full history with its
``seq`` numbers, provenance, before/after states and undo links; artefacts; aliases.
Derived state (the vector index snapshot) is not copied: the destination builds its
own.

Safety: the destination must be empty (a new SQLite file, or an empty PostgreSQL
schema). There is deliberately no ``--force`` that would overwrite or merge into a
non-empty store: two histories cannot be merged with their ``seq`` numbers kept, and
replacing a store would destroy what consist promises never to destroy. The whole
copy is one transaction of the destination (a failure leaves it empty), and the
source's write lock is held while it is read, so the copy is one consistent state
(the source's readers go on; its writers wait up to their ``timeout`` and then get
:class:`~consist.errors.StoreLockedError`). The counts are compared at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, runtime_checkable

import attrs
import structlog

from consist.errors import StoreError
from consist.records import HistoryEntry, Sample

__all__ = ["CopyResult", "CopySource", "CopyTarget", "copy_store"]

log = structlog.get_logger("consist.store")

#: History entries (and samples) read per page while copying.
PAGE = 1000


@runtime_checkable
class CopySource(Protocol):
    """What a store needs to be copied from (both built-in back-ends have it)."""

    uri: str

    def sample_pages(self, *, label: str | None = None, include_deleted: bool = True, page: int = 1000) -> Iterator[list[tuple[Sample, bool]]]: ...
    def history(self, *, sample_id: str | None = None, limit: int | None = 50, newest_first: bool = True, since: int | None = None) -> list[HistoryEntry]: ...
    def artefact_rows(self) -> Iterator[tuple[str, str, bytes]]: ...
    def alias_rows(self) -> list[tuple[str, str, str, str]]: ...
    def stats(self) -> dict[str, Any]: ...
    def transaction(self) -> AbstractContextManager[Any]: ...


@runtime_checkable
class CopyTarget(Protocol):
    """What a store needs to be copied into."""

    uri: str

    def is_empty(self) -> bool: ...
    def restore(
        self,
        samples: Iterable[Sequence[tuple[Sample, bool]]],
        history: Iterable[Sequence[HistoryEntry]],
        artefacts: Iterable[tuple[str, str, bytes]],
        aliases: Sequence[tuple[str, str, str, str]],
        *,
        progress: Callable[[str, int], None] | None = None,
    ) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def transaction(self) -> AbstractContextManager[Any]: ...


@attrs.frozen
class CopyResult:
    """What a copy moved (``--json`` prints it)."""

    source: str
    destination: str
    samples: int
    deleted: int
    embeddings: int
    history: int
    last_seq: int
    artefacts: int
    aliases: int
    seconds: float


def _history_pages(src: CopySource) -> Iterator[list[HistoryEntry]]:
    last = 0
    while True:
        page = src.history(since=last, limit=PAGE, newest_first=False)
        if not page:
            return
        last = page[-1].seq
        yield page


def copy_store(src: object, dst: object, *, progress: Callable[[str, int], None] | None = None) -> CopyResult:
    """Copy everything from ``src`` into the empty store ``dst`` (see the module
    docstring); ``progress(what, n)`` is called after each page (``what``:
    ``samples``, ``history``, ``artefacts``). Raises :class:`StoreError` with one
    line when either store cannot take part or ``dst`` is not empty."""
    if src is dst:
        raise StoreError(f"{getattr(src, 'uri', src)}: the source and the destination are the same store")
    if not isinstance(src, CopySource):
        raise StoreError(f"{getattr(src, 'uri', src)}: this store cannot be copied from (it has no sample_pages/artefact_rows/alias_rows)")
    if not isinstance(dst, CopyTarget):
        raise StoreError(f"{getattr(dst, 'uri', dst)}: this store cannot be copied into (it has no restore/is_empty)")
    paths = [getattr(x, "path", None) for x in (src, dst)]
    same_file = None not in paths and paths[0] != ":memory:" and os.path.realpath(str(paths[0])) == os.path.realpath(str(paths[1]))
    if same_file or (src.uri == dst.uri and not src.uri.startswith("memory")):
        raise StoreError(f"{src.uri}: the source and the destination are the same store")
    if not dst.is_empty():
        raise StoreError(f"{dst.uri}: the destination is not empty (copy into a new store: a new SQLite file, or an empty PostgreSQL database or ?schema=); nothing was changed")
    t0 = time.perf_counter()
    lock: AbstractContextManager[Any] = nullcontext() if getattr(src, "readonly", False) else src.transaction()
    with lock:
        before = src.stats()
        aliases = src.alias_rows()
        n_art = 0

        def artefacts() -> Iterator[tuple[str, str, bytes]]:
            nonlocal n_art
            for row in src.artefact_rows():
                n_art += 1
                yield row

        with dst.transaction():
            if not dst.is_empty():  # another process wrote meanwhile
                raise StoreError(f"{dst.uri}: the destination is not empty; nothing was changed")
            dst.restore(src.sample_pages(include_deleted=True, page=PAGE), _history_pages(src), artefacts(), aliases, progress=progress)
            after = dst.stats()
            for key in ("samples", "deleted", "embeddings", "history"):
                if after[key] != before[key]:
                    raise StoreError(f"{dst.uri}: the copy holds {after[key]} {key}, the source {before[key]}; nothing was kept")
        newest = src.history(limit=1)
    result = CopyResult(
        source=src.uri,
        destination=dst.uri,
        samples=int(before["samples"]),
        deleted=int(before["deleted"]),
        embeddings=int(before["embeddings"]),
        history=int(before["history"]),
        last_seq=newest[0].seq if newest else 0,
        artefacts=n_art,
        aliases=len(aliases),
        seconds=round(time.perf_counter() - t0, 3),
    )
    log.info("store_copied", **attrs.asdict(result))
    return result
