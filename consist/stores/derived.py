"""Indexes derived from a store and kept in step with its history.

A derived index (the ASMK inverted file of consist-spatial, the matching hypergraph
of consist-topological, a third party's) is computed from a store's samples, saved
into that store as artefacts, and must follow later changes without being rebuilt.
The store's history is the log it follows: the index remembers the sequence number
of the newest history entry it reflects (:attr:`DerivedIndex.last_seq`) and each
:meth:`~DerivedIndex.sync` applies only the entries after it.

What every such index needs lives here once, instead of once per plugin:

* :func:`newest_seq`, :func:`changed_since`: where the history stands, and which
  samples changed or went after a given entry (:class:`StoreChanges`);
* :class:`SyncReport`: what one sync did;
* :class:`DerivedIndex`: the rule deciding between "up to date", "apply the history
  since ``last_seq``" and "compare with the whole store", and the
  load/sync/save/invalidate contract around it;
* :class:`PerStoreCache`: one in-process copy per store and key, so that the
  engines and commands of one process load an index once;
* :func:`owner_id`: the pseudo sample id under which an index keeps its store-wide
  artefacts (a codebook, a snapshot, metadata).

Nothing here knows a plugin; plugins subclass :class:`DerivedIndex`.
"""

from __future__ import annotations

import abc
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs

from consist.records import HistoryEntry, Sample

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = [
    "DerivedIndex",
    "HistoryStore",
    "PerStoreCache",
    "StoreChanges",
    "SyncReport",
    "changed_since",
    "is_owner_id",
    "newest_seq",
    "owner_id",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class HistoryStore(Protocol):
    """What following a store's history needs of the store (every
    :class:`consist.Store` has it; a structural subset, so that this module depends
    on no store implementation)."""

    def history(self, *, sample_id: str | None = None, limit: int | None = 50, newest_first: bool = True, since: int | None = None) -> list[HistoryEntry]: ...

    def get_many(self, ids: Sequence[str]) -> list[Sample | None]: ...


# ------------------------------------------------------------------- history


def newest_seq(store: object) -> int | None:
    """Sequence number of the store's newest history entry: 0 for an empty history,
    ``None`` for a store that keeps no history (an index over it can only be
    compared with the whole store)."""
    history = getattr(store, "history", None)
    if history is None:
        return None
    entries = history(limit=1)
    return int(entries[0].seq) if entries else 0


@attrs.frozen
class StoreChanges:
    """The samples a store's history touched after entry ``since``, as they are now.

    Attributes:
        since: the history entry the changes follow.
        changed: live samples touched since (added, relabelled, given other pixels,
            deleted and added again), oldest change first. A relabel is a change too:
            an index that ignores labels skips it by comparing what it keeps (e.g.
            the image URI).
        deleted: ids touched since that are no sample now: deleted samples, and
            history entries of things that are not samples (aliases). An index
            removes those it holds and ignores the rest.
    """

    since: int
    changed: tuple[Sample, ...] = ()
    deleted: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changed or self.deleted)


def changed_since(store: HistoryStore, since: int) -> StoreChanges:
    """What changed in ``store`` after history entry ``since``: one read of the
    history and one batched read of the samples it names."""
    entries = store.history(since=since, limit=None, newest_first=False)
    ids = list(dict.fromkeys(e.sample_id for e in entries))
    now = store.get_many(ids) if ids else []
    return StoreChanges(
        since=since,
        changed=tuple(s for s in now if s is not None),
        deleted=tuple(sid for sid, s in zip(ids, now) if s is None),
    )


def owner_id(name: str) -> str:
    """``__name__``: the pseudo sample id under which the derived index ``name`` keeps
    its store-wide artefacts. Artefacts need no sample row, so no sample is created;
    the dunder form keeps these ids apart from dataset ids (relative paths)."""
    if not name or name.startswith("_") or name.endswith("_"):
        raise ValueError(f"derived index name must not be empty or start or end with '_', got {name!r}")
    return f"__{name}__"


def is_owner_id(sample_id: str) -> bool:
    """Whether ``sample_id`` has the form :func:`owner_id` gives."""
    return len(sample_id) > 4 and sample_id.startswith("__") and sample_id.endswith("__")


# --------------------------------------------------------------------- index


@attrs.frozen
class SyncReport:
    """What one sync (or add) of a derived index changed.

    Attributes:
        added: samples indexed (new, or with other pixels than before).
        removed: samples taken out (deleted, or their old pixels replaced).
        failed: ``(sample id, one-line reason)`` of samples that could not be
            indexed (an unreadable image); they are retried when they change again.
    """

    added: int = 0
    removed: int = 0
    failed: tuple[tuple[str, str], ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


R = TypeVar("R", bound=SyncReport)


class DerivedIndex(abc.ABC, Generic[R]):
    """An index computed from one store's samples and kept in step with its history.

    The contract every derived index follows:

    * **load**: a classmethod of the subclass (its arguments are its own) reads the
      index back from the store's artefacts, with the ``last_seq`` it was saved at,
      or builds it;
    * **sync** (:meth:`sync`, defined here once): nothing to do when the history has
      no entry after :attr:`last_seq`; :meth:`_sync_changes` with the
      :class:`StoreChanges` since then otherwise; :meth:`_sync_all` (compare with the
      whole store) when the index does not know where it stands or the store keeps
      no history. :attr:`last_seq` is advanced before the hook runs, so that a hook
      that saves records the new position, and put back if the hook raises, so that
      the next sync retries;
    * **save** (:meth:`save`): write the index and its ``last_seq`` into the store, so
      that another process catches up from there instead of from scratch;
    * **invalidate** (:meth:`invalidate`): forget the position; the next sync
      compares with the whole store.

    Subclasses implement :meth:`save`, :meth:`_sync_all` and :meth:`_sync_changes`,
    and usually override :meth:`sync` only to give it their own typed options (a
    progress callback, ...), which :meth:`sync` passes to the hooks. All of it runs
    under :attr:`lock` (re-entrant), so a hook may call the subclass's own methods.
    """

    def __init__(self, report_type: type[R]) -> None:
        #: the store history entry this index reflects (``None``: unknown)
        self.last_seq: int | None = None
        self.lock = threading.RLock()
        self._report_type = report_type

    def sync(self, store: Store, *args: Any, **options: Any) -> R:
        """Bring the index up to date with ``store``; ``options`` go to the hooks."""
        with self.lock:
            newest = newest_seq(store)
            previous = self.last_seq
            if newest is not None and previous is not None and newest <= previous:
                return self._report_type()
            self.last_seq = newest
            try:
                if newest is None or previous is None:
                    return self._sync_all(store, *args, **options)
                return self._sync_changes(store, changed_since(store, previous), *args, **options)
            except BaseException:
                self.last_seq = previous
                raise

    def invalidate(self) -> None:
        """Forget where the index stands in the history: the next :meth:`sync`
        compares it with the whole store (after a change the history does not show,
        or to repair an index suspected stale)."""
        with self.lock:
            self.last_seq = None

    @abc.abstractmethod
    def save(self, store: Store) -> None:
        """Write the index, with :attr:`last_seq`, into ``store``."""

    @abc.abstractmethod
    def _sync_all(self, store: Store, *args: Any, **options: Any) -> R:
        """Compare the index with every sample of ``store`` and apply the difference."""

    @abc.abstractmethod
    def _sync_changes(self, store: Store, changes: StoreChanges, *args: Any, **options: Any) -> R:
        """Apply ``changes`` (the history after the old :attr:`last_seq`)."""


# --------------------------------------------------------------------- cache


class PerStoreCache(Generic[K, V]):
    """In-process values derived from a store (indexes, a detected extractor), one
    per store and key. Thread-safe.

    Keyed by the store *object*, held weakly: a store that is dropped takes its
    entries with it, and two stores that share a URI (two ``:memory:`` databases, a
    file deleted and created again) never share an index whose ``last_seq`` means
    nothing for the other. A store that cannot be weakly referenced is not cached:
    every lookup misses.

    Args:
        kind: what is cached, for messages (e.g. ``"asmk index"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: weakref.WeakKeyDictionary[Any, dict[K, V]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PerStoreCache({self.kind!r}, stores={len(self._entries)})"

    def get(self, store: object, key: K) -> V | None:
        """The value cached for ``(store, key)``, else ``None``."""
        with self._lock:
            try:
                per_store = self._entries.get(store)
            except TypeError:  # not weakly referenceable: never cached
                return None
            return None if per_store is None else per_store.get(key)

    def put(self, store: object, key: K, value: V) -> None:
        """Make ``value`` the one this process uses for ``(store, key)``."""
        with self._lock:
            try:
                self._entries.setdefault(store, {})[key] = value
            except TypeError:
                pass

    def get_or_create(self, store: object, key: K, create: Callable[[], V]) -> V:
        """The cached value, or ``create()``'s, cached. ``create`` runs outside the
        lock (it may train an index for minutes); when two threads create at once,
        the later one's value is kept."""
        value = self.get(store, key)
        if value is None:
            value = create()
            self.put(store, key, value)
        return value

    def invalidate(self, store: object, key: K | None = None) -> int:
        """Drop the entry ``key`` of ``store`` (all of its entries when ``None``);
        the number dropped. The next lookup loads afresh from the store."""
        with self._lock:
            try:
                per_store = self._entries.get(store)
            except TypeError:
                return 0
            if per_store is None:
                return 0
            if key is None:
                n = len(per_store)
                del self._entries[store]
                return n
            return 1 if per_store.pop(key, None) is not None else 0
