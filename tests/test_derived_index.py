"""consist.stores.derived: following a store's history, the sync rule of derived
indexes, and the per-store cache, on real SQLite stores and real history entries
(add, relabel, new pixels, delete, add again, aliases, undo)."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from consist import Sample
from consist.stores.derived import (
    DerivedIndex,
    PerStoreCache,
    StoreChanges,
    SyncReport,
    changed_since,
    is_owner_id,
    newest_seq,
    owner_id,
)
from consist.stores.sqlite import SQLiteStore

TOY_ID = owner_id("toy")


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "store.db")
    s.put([Sample("a", uri="/img/a.png", label="cat"), Sample("b", uri="/img/b.png", label="dog"), Sample("c", uri="/img/c.png", label="cat")])
    return s


class UriIndex(DerivedIndex[SyncReport]):
    """A minimal derived index: the image URI of every live sample that has one.
    It records which hook ran, and saves ``last_seq`` as an artefact."""

    def __init__(self) -> None:
        super().__init__(SyncReport)
        self.uris: dict[str, str] = {}
        self.calls: list[str] = []
        self.seen: list[StoreChanges] = []
        self.fail_next = False

    @classmethod
    def load(cls, store: SQLiteStore) -> UriIndex:
        index = cls()
        blob = store.get_artefact(TOY_ID, "toy/index")
        if blob is not None:
            saved = json.loads(blob)
            index.uris, index.last_seq = saved["uris"], saved["last_seq"]
        return index

    def save(self, store: Any) -> None:
        store.put_artefact(TOY_ID, "toy/index", json.dumps({"uris": self.uris, "last_seq": self.last_seq}).encode())

    def _apply(self, gone: list[str], todo: list[Sample]) -> SyncReport:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("disk full")
        for sid in gone:
            del self.uris[sid]
        for s in todo:
            assert s.uri is not None
            self.uris[s.id] = s.uri
        return SyncReport(added=len(todo), removed=len(gone))

    def _sync_all(self, store: Any, *, save: bool = False) -> SyncReport:
        self.calls.append("all")
        live = {s.id: s for s in store.samples() if s.uri is not None}
        report = self._apply([sid for sid in self.uris if sid not in live], [s for s in live.values() if self.uris.get(s.id) != s.uri])
        if save:
            self.save(store)
        return report

    def _sync_changes(self, store: Any, changes: StoreChanges, *, save: bool = False) -> SyncReport:
        self.calls.append("changes")
        self.seen.append(changes)
        gone = [sid for sid in changes.deleted if sid in self.uris] + [s.id for s in changes.changed if s.uri is None and s.id in self.uris]
        report = self._apply(gone, [s for s in changes.changed if s.uri is not None and self.uris.get(s.id) != s.uri])
        if save:
            self.save(store)
        return report


def truth(store: SQLiteStore) -> dict[str, str]:
    return {s.id: s.uri for s in store.samples() if s.uri is not None}


# --------------------------------------------------------------------- history


def test_newest_seq_follows_the_history_and_is_none_without_one(tmp_path: Path) -> None:
    empty = SQLiteStore(tmp_path / "empty.db")
    assert newest_seq(empty) == 0
    (entry,) = empty.put([Sample("x", uri="/x.png", label="cat")])
    assert newest_seq(empty) == entry.seq
    relabel = empty.relabel("x", "dog")
    assert relabel is not None and newest_seq(empty) == relabel.seq > entry.seq
    assert newest_seq(object()) is None, "a store that keeps no history"


def test_changed_since_reports_samples_as_they_are_now(store: SQLiteStore) -> None:
    since = newest_seq(store)
    assert since is not None
    assert changed_since(store, since) == StoreChanges(since=since), "nothing after the newest entry"
    assert not changed_since(store, since)
    store.relabel("a", "lynx")
    store.delete("b")
    store.put([Sample("d", uri="/img/d.png", label="cat")])
    store.put([Sample("b", uri="/img/b2.png", label="dog")])  # added again, with other pixels
    store.delete("c")
    changes = changed_since(store, since)
    assert [s.id for s in changes.changed] == ["a", "b", "d"], "once each, in the order of their first change"
    assert [s.label for s in changes.changed] == ["lynx", "dog", "cat"]
    assert changes.changed[1].uri == "/img/b2.png", "the re-added sample as it is now"
    assert changes.deleted == ("c",)
    assert changes and changes.since == since


def test_changed_since_reports_history_entries_that_are_no_sample_as_deleted(store: SQLiteStore) -> None:
    since = newest_seq(store)
    assert since is not None
    entry = store.set_alias("kitty", "cat")
    assert entry is not None
    changes = changed_since(store, since)
    assert changes.changed == () and changes.deleted == (entry.sample_id,), "an alias entry: nothing an index holds"
    deleted = store.delete("a")
    assert deleted is not None
    store.undo(deleted.seq)
    later = changed_since(store, entry.seq)
    assert [s.id for s in later.changed] == ["a"] and later.deleted == (), "deleted and restored: changed, not deleted"


def test_owner_ids_are_dunder_names() -> None:
    assert owner_id("asmk") == "__asmk__" and owner_id("topology") == "__topology__"
    assert is_owner_id(owner_id("toy")) and not is_owner_id("cat/__init__.png") and not is_owner_id("____")
    for bad in ("", "_x", "x_"):
        with pytest.raises(ValueError, match="derived index name"):
            owner_id(bad)


# ------------------------------------------------------------------- the rule


def test_first_sync_compares_the_whole_store_then_only_the_history(store: SQLiteStore) -> None:
    index = UriIndex()
    report = index.sync(store)
    assert index.calls == ["all"] and report == SyncReport(added=3)
    assert index.uris == truth(store) and index.last_seq == newest_seq(store)

    assert index.sync(store) == SyncReport() and index.calls == ["all"], "up to date: no hook runs"

    store.relabel("a", "lynx")  # a relabel: same pixels, nothing to do for this index
    store.put([Sample("c", uri="/img/c2.png", label="cat")])  # other pixels
    store.delete("b")
    store.put([Sample("d", uri="/img/d.png", label="dog"), Sample("e", label="cat")])  # e: no image
    report = index.sync(store)
    assert index.calls == ["all", "changes"]
    assert [s.id for s in index.seen[0].changed] == ["a", "c", "d", "e"] and index.seen[0].deleted == ("b",)
    assert report == SyncReport(added=2, removed=1)
    assert index.uris == truth(store) and index.last_seq == newest_seq(store)

    store.put([Sample("b", uri="/img/b.png", label="dog")])  # added again
    assert index.sync(store) == SyncReport(added=1) and index.uris == truth(store)


def test_a_failing_sync_keeps_its_place_and_the_next_one_retries(store: SQLiteStore) -> None:
    index = UriIndex()
    index.sync(store)
    before = index.last_seq
    store.delete("a")
    index.fail_next = True
    with pytest.raises(RuntimeError, match="disk full"):
        index.sync(store)
    assert index.last_seq == before and "a" in index.uris
    assert index.sync(store) == SyncReport(removed=1) and index.uris == truth(store)
    assert index.last_seq == newest_seq(store)


def test_a_hook_that_saves_records_the_new_position_and_another_process_catches_up(store: SQLiteStore, tmp_path: Path) -> None:
    index = UriIndex()
    index.sync(store, save=True)
    store.delete("a")
    index.sync(store, save=True)
    saved = json.loads(store.get_artefact(TOY_ID, "toy/index") or b"{}")
    assert saved["last_seq"] == newest_seq(store), "last_seq is advanced before the hook saves"
    store.put([Sample("f", uri="/img/f.png", label="cat")])
    store.close()

    reopened = SQLiteStore(tmp_path / "store.db")
    again = UriIndex.load(reopened)
    assert again.last_seq == saved["last_seq"] and "a" not in again.uris
    assert again.sync(reopened) == SyncReport(added=1), "only what happened after the save"
    assert again.calls == ["changes"] and again.uris == truth(reopened)


def test_invalidate_makes_the_next_sync_compare_the_whole_store(store: SQLiteStore) -> None:
    index = UriIndex()
    index.sync(store)
    index.uris["ghost"] = "/img/ghost.png"  # drift the history cannot show
    assert index.sync(store) == SyncReport() and "ghost" in index.uris
    index.invalidate()
    assert index.last_seq is None
    assert index.sync(store) == SyncReport(removed=1) and index.calls == ["all", "all"]
    assert index.uris == truth(store)


def test_a_store_without_history_is_compared_in_full_every_time(store: SQLiteStore) -> None:
    class NoHistory:
        def samples(self) -> list[Sample]:
            return list(store.samples())

    index = UriIndex()
    index.sync(NoHistory())  # type: ignore[arg-type]
    index.sync(NoHistory())  # type: ignore[arg-type]
    assert index.calls == ["all", "all"] and index.last_seq is None and index.uris == truth(store)


def test_an_up_to_date_sync_returns_the_subclass_report_type(store: SQLiteStore) -> None:
    import attrs

    @attrs.frozen
    class CostReport(SyncReport):
        pairs: int = 0

    class Costly(DerivedIndex[CostReport]):
        def __init__(self) -> None:
            super().__init__(CostReport)

        def save(self, store: Any) -> None:
            pass

        def _sync_all(self, store: Any) -> CostReport:
            return CostReport(added=len(store), pairs=7)

        def _sync_changes(self, store: Any, changes: StoreChanges) -> CostReport:
            return CostReport(added=len(changes.changed), pairs=1)

    index = Costly()
    assert index.sync(store) == CostReport(added=3, pairs=7)
    nothing = index.sync(store)
    assert type(nothing) is CostReport and nothing.pairs == 0 and not nothing.changed


# ----------------------------------------------------------------------- cache


def test_per_store_cache_keeps_one_value_per_store_and_key(tmp_path: Path) -> None:
    cache: PerStoreCache[str, UriIndex] = PerStoreCache("toy index")
    one, two = SQLiteStore(tmp_path / "one.db"), SQLiteStore(tmp_path / "two.db")
    made: list[str] = []

    def make(tag: str) -> UriIndex:
        made.append(tag)
        return UriIndex()

    first = cache.get_or_create(one, "k", lambda: make("one"))
    assert cache.get_or_create(one, "k", lambda: make("again")) is first and made == ["one"]
    assert cache.get(two, "k") is None and cache.get(one, "other") is None, "other store, other key: other entries"
    cache.put(two, "k", UriIndex())
    cache.put(one, "other", UriIndex())
    assert cache.invalidate(one, "k") == 1 and cache.get(one, "k") is None and cache.get(one, "other") is not None
    assert cache.invalidate(one, "k") == 0
    assert cache.invalidate(one) == 1 and cache.get(one, "other") is None
    assert cache.get(two, "k") is not None


def test_per_store_cache_never_merges_stores_that_share_a_uri_and_forgets_dropped_ones() -> None:
    cache: PerStoreCache[str, int] = PerStoreCache("toy")
    a, b = SQLiteStore(":memory:"), SQLiteStore(":memory:")
    assert a.uri == b.uri, "two in-memory stores, one URI"
    cache.put(a, "k", 1)
    assert cache.get(b, "k") is None
    cache.put(b, "k", 2)
    del a
    gc.collect()
    assert "stores=1" in repr(cache), "a dropped store takes its entries with it"
    assert cache.get(b, "k") == 2


def test_per_store_cache_skips_stores_that_cannot_be_weakly_referenced() -> None:
    cache: PerStoreCache[str, int] = PerStoreCache("toy")
    plain = object()  # no __weakref__
    cache.put(plain, "k", 1)
    assert cache.get(plain, "k") is None and cache.invalidate(plain) == 0
    assert cache.get_or_create(plain, "k", lambda: 2) == 2
