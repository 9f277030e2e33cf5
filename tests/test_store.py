"""The SQLite store: samples, vectors, trust, history/undo, durability and locking."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import consist
from consist import Provenance, Region, Sample
from consist.errors import LabelConflict, SampleNotFound, StoreError, StoreLockedError, UndoConflict
from consist.stores.sqlite import SQLiteStore


def unit(rng, d=16):
    v = rng.standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("uri_fmt", ["sqlite:///{p}", "{p}", "memory://"])
def test_open_by_uri_and_round_trip(tmp_path, uri_fmt):
    uri = uri_fmt.format(p=tmp_path / "s.db")
    s = consist.open_store(uri)
    rng = np.random.default_rng(0)
    sample = Sample("a", uri="/x/a.png", label="cat", provenance="import", region=Region(box=(1, 2, 3, 4)), embedding=unit(rng), meta={"k": [1, "é"]})
    s.put([sample])
    assert s.get("a") == sample
    assert len(s) == 1 and s.labels() == {"cat": 1}
    s.close()
    if uri != "memory://":
        assert consist.open_store(uri).get("a") == sample


def test_relative_and_absolute_sqlite_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = consist.open_store("sqlite:///rel/store.db?timeout=2")
    assert Path(s.path) == Path("rel/store.db") and s.timeout == 2.0
    s2 = consist.open_store(f"sqlite:///{tmp_path}/abs.db")
    assert Path(s2.path) == tmp_path / "abs.db"
    with pytest.raises(StoreError, match="unknown option 'bogus'"):
        consist.open_store("sqlite:///x.db?bogus=1")


def test_exact_search_and_exclusion(store):
    rng = np.random.default_rng(1)
    vecs = {f"s{i}": unit(rng) for i in range(50)}
    store.put([Sample(k, label="a", embedding=v) for k, v in vecs.items()])
    q = vecs["s7"] + 0.01 * unit(rng)
    hits = store.search(q, 5)
    assert hits[0][0].id == "s7" and hits[0][1] > 0.99
    sims = [h[1] for h in hits]
    assert sims == sorted(sims, reverse=True)
    assert all(h[0].id != "s7" for h in store.search(q, 5, exclude=["s7"]))
    # brute force agrees
    ids = list(vecs)
    mat = np.stack([vecs[i] for i in ids])
    expect = [ids[i] for i in np.argsort(-(mat @ (q / np.linalg.norm(q))))[:5]]
    assert [h[0].id for h in hits] == expect


def test_ann_path_agrees_with_exact(tmp_path):
    s = SQLiteStore(tmp_path / "ann.db", ann_threshold=500)
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((100, 32))  # embeddings cluster (objects, views)
    X = (centres[rng.integers(0, 100, 2000)] + 0.5 * rng.standard_normal((2000, 32))).astype(np.float32)
    with s.transaction():
        s.put([Sample(f"s{i}", label="x", embedding=X[i]) for i in range(2000)])
    index = s.vector_index
    assert index.uses_ann
    recall = []
    for i in range(0, 2000, 100):
        q = X[i] + 0.05 * rng.standard_normal(32).astype(np.float32)
        approx = {sid for sid, _ in index.search(q, 10)}
        exact = {sid for sid, _ in index.search(q, 10, exact=True)}
        recall.append(len(approx & exact) / 10)
    assert np.mean(recall) > 0.9
    # incremental: a new vector is found without rebuilding
    s.put([Sample("new", label="x", embedding=X[3] * 2)])
    assert s.search(X[3], 2)[0][0].id in {"new", "s3"}
    s.delete("new")
    assert "new" not in {h[0].id for h in s.search(X[3], 5)}


def test_dimension_mismatch_is_refused(store):
    store.put([Sample("a", embedding=np.ones(8))])
    with pytest.raises(StoreError, match="sample 'b' has a 4-d embedding; the store holds 8-d"):
        store.put([Sample("b", embedding=np.ones(4))])


def test_put_without_changes_writes_no_history(store):
    store.put([Sample("a", label="cat")])
    store.put([Sample("a", label="cat")])
    assert [e.action for e in store.history()] == ["add"]


def test_user_label_is_never_silently_overwritten(store):
    store.put([Sample("a", label="cat", provenance="user")])
    with pytest.raises(LabelConflict, match="user label 'cat'"):
        store.put([Sample("a", label="dog", provenance="auto")])
    entries = store.put([Sample("a", label="dog", provenance="auto")], on_conflict="skip")
    assert entries[0].action == "conflict"
    assert store.get("a").label == "cat"
    with pytest.raises(LabelConflict):
        store.relabel("a", "dog", provenance=Provenance.IMPORT)
    # a user may change a user label; force is recorded like anything else
    assert store.relabel("a", "lynx", provenance=Provenance.USER).after["label"] == "lynx"
    e = store.relabel("a", "dog", provenance=Provenance.AUTO, force=True, reason="audit --apply")
    assert store.get("a").label == "dog" and e.reason == "audit --apply"


def test_auto_may_not_replace_import_but_fills_unlabelled(store):
    store.put([Sample("a", label="cat", provenance="import"), Sample("b", label=None, provenance="import")])
    with pytest.raises(LabelConflict):
        store.put([Sample("a", label="dog", provenance="auto")])
    store.put([Sample("b", label="dog", provenance="auto")])
    assert store.get("b").label == "dog"


def test_history_and_undo_every_kind_of_change(store):
    rng = np.random.default_rng(3)
    store.put([Sample("a", label="cat", embedding=unit(rng))])
    e_relabel = store.relabel("a", "dog", provenance="user")
    e_region = store.set_region("a", Region(box=(0, 0, 5, 5)))
    e_delete = store.delete("a")
    assert store.get("a") is None and len(store) == 0
    assert store.search(unit(rng), 3) == []
    # undo in reverse order restores everything, including the embedding
    store.undo(e_delete.seq)
    assert store.get("a").region == Region(box=(0, 0, 5, 5)) and store.get("a").embedding is not None
    store.undo(e_region.seq)
    assert store.get("a").region is None
    u = store.undo(e_relabel.seq)
    assert store.get("a").label == "cat" and store.get("a").provenance is Provenance.IMPORT
    assert u.undoes == e_relabel.seq and store.entry(e_relabel.seq).undone_by == u.seq
    with pytest.raises(UndoConflict, match="already undone"):
        store.undo(e_relabel.seq)
    # undoing the undo redoes the change
    store.undo(u.seq)
    assert store.get("a").label == "dog"


def test_undo_refuses_to_discard_later_changes(store):
    store.put([Sample("a", label="cat")])
    first = store.relabel("a", "dog", provenance="user")
    store.relabel("a", "fox", provenance="user")
    with pytest.raises(UndoConflict, match=r"changed again after #\d+ \(#\d+\)"):
        store.undo(first.seq)
    store.undo(first.seq, force=True)
    assert store.get("a").label == "cat"


def test_undo_of_add_hides_the_sample(store):
    e = store.put([Sample("a", label="cat")])[0]
    store.undo(e.seq)
    assert store.get("a") is None
    assert next(store.samples(include_deleted=True)).id == "a"


def test_missing_sample_errors(store):
    with pytest.raises(SampleNotFound, match="no sample 'zz'"):
        store.relabel("zz", "cat")
    with pytest.raises(StoreError, match="no history entry #99"):
        store.undo(99)


def test_transaction_rolls_back_on_error(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.put([Sample("a", label="cat")])
        raise RuntimeError("boom")
    assert store.get("a") is None and store.history() == []


def test_samples_stream_in_pages_and_filter(store):
    store.put([Sample(f"s{i:04d}", label="ab"[i % 2]) for i in range(2500)])
    ids = [s.id for s in store.samples()]
    assert len(ids) == 2500 and ids[0] == "s0000" and ids[-1] == "s2499"
    assert sum(1 for _ in store.samples(label="a")) == 1250


def test_artefacts_are_cached_and_replaced(store):
    store.put_artefact("a", "features/sift", b"\x00\x01")
    assert store.get_artefact("a", "features/sift") == b"\x00\x01"
    store.put_artefact("a", "features/sift", b"\x02")
    assert store.get_artefact("a", "features/sift") == b"\x02"
    assert store.artefact_kinds() == {"features/sift": 1}
    assert store.delete_artefacts("features/sift") == 1


def test_corrupt_file_gives_one_line_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        consist.open_store(str(bad))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_second_writer_waits_then_gets_a_clear_error(tmp_path):
    path = tmp_path / "locked.db"
    SQLiteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's open write transaction
    try:
        s = SQLiteStore.from_uri(f"sqlite:///{path}?timeout=0.3")
        t0 = time.perf_counter()
        with pytest.raises(StoreLockedError, match="another process is writing"):
            s.put([Sample("a", label="cat")])
        assert time.perf_counter() - t0 >= 0.25
        # readers are not blocked by the writer
        assert len(s) == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    s.put([Sample("a", label="cat")])
    assert s.get("a").label == "cat"


def test_other_process_writes_are_seen_by_search(tmp_path):
    path = tmp_path / "shared.db"
    a, b = SQLiteStore(path), SQLiteStore(path)
    rng = np.random.default_rng(4)
    v = unit(rng)
    a.put([Sample("x", label="cat", embedding=v)])
    assert b.search(v, 1)[0][0].id == "x"
    a.put([Sample("y", label="dog", embedding=-v)])
    assert b.search(-v, 1)[0][0].id == "y"


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    import consist
    from consist import Candidate, Prediction, Query, Vote, Decision, RunStatus, CheckerRun
    from consist.adapt import adapt_decision
    store = consist.open_store(sys.argv[1])
    rng = np.random.default_rng(0)
    i = 0
    while True:
        with store.transaction():
            for _ in range(7):
                q = Query(f"q{i}", uri=f"/img/{i}.png", embedding=rng.standard_normal(8))
                p = Prediction(q, [Candidate("cat", 0.6)])
                d = Decision(query_id=q.id, label="cat", confidence=0.97, changed=False, predicted_label="cat",
                             votes=[Vote("spatial", "cat", 0.95)], runs=[CheckerRun("spatial", RunStatus.RAN, n_votes=1)])
                adapt_decision(d, p, store)
                i += 1
        print(i, flush=True)
    """
)


def test_kill_minus_9_keeps_every_committed_decision(tmp_path):
    path = tmp_path / "crash.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), f"sqlite:///{path}"], stdout=subprocess.PIPE, text=True)
    committed = 0
    try:
        while committed < 140:
            line = proc.stdout.readline()
            assert line, "writer died"
            committed = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    s = consist.open_store(f"sqlite:///{path}")
    n = len(s)
    assert n >= committed and n % 7 == 0  # whole transactions only
    ids = {x.id for x in s.samples()}
    assert {f"q{i}" for i in range(committed)} <= ids
    hist = s.history(limit=None)
    assert len(hist) == n and all(e.action == "add" and e.provenance is Provenance.AUTO for e in hist)
    assert s.search(np.random.default_rng(0).standard_normal(8), 3)  # vectors intact
    u = s.undo(hist[0].seq)
    assert s.get(hist[0].sample_id) is None and u.undoes == hist[0].seq
    integrity = sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0]
    assert integrity == "ok"


def test_missing_store_is_an_error_when_it_must_exist(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        consist.open_store(f"sqlite:///{tmp_path}/typo/store.db", create=False)
    assert not (tmp_path / "typo").exists()


def test_new_uri_invalidates_cached_artefacts(store):
    store.put([Sample("a", uri="/v1.png", label="cat")])
    store.put_artefact("a", "features/x", b"old")
    store.put([Sample("a", uri="/v1.png", label="lynx", provenance="import")])
    assert store.get_artefact("a", "features/x") == b"old"  # same pixels: kept
    store.put([Sample("a", uri="/v2.png", label="lynx")])
    assert store.get_artefact("a", "features/x") is None


def test_history_since_a_snapshot(store):
    store.put([Sample("a", label="cat"), Sample("b", label="dog")])
    mark = store.history(limit=1)[0].seq
    store.relabel("a", "lynx", provenance="user")
    later = store.history(since=mark, newest_first=False)
    assert [(e.action, e.sample_id) for e in later] == [("relabel", "a")]
