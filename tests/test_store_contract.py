"""The store contract on both back-ends: every test runs on SQLite and on a real
PostgreSQL server (tests/pgserver.py; skipped, with the reason, where the server
binaries are not installed). Same calls, same answers: that is the contract."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import consist
from consist import Provenance, Region, Sample
from consist.contracts.store import AliasStore, Store
from consist.errors import LabelConflict, SampleNotFound, StoreError, StoreLockedError, UndoConflict

BACKENDS = ["sqlite", "postgres"]


def unit(rng: np.random.Generator, d: int = 16) -> np.ndarray:
    v = rng.standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=BACKENDS)
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URI of a new, empty store of each back-end."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_uri"))


@pytest.fixture
def open_(store_uri: str) -> Iterator[Callable[..., Store]]:
    """Open (another connection to) the test's store; every one is closed after."""
    opened: list[Store] = []

    def open_one(suffix: str = "", **options: object) -> Store:
        uri = store_uri + (("&" if "?" in store_uri else "?") + suffix if suffix else "")
        s = consist.open_store(uri, **options)
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        s.close()


@pytest.fixture
def store(open_: Callable[..., Store]) -> Store:
    return open_()


def test_round_trip_reads_and_stats(store):
    rng = np.random.default_rng(0)
    a = Sample("a", uri="/x/a.png", label="cat", provenance="import", region=Region(box=(1, 2, 3, 4)), embedding=unit(rng), meta={"k": [1, "é"], "n": 0.5})
    b = Sample("b", label="dog", provenance="user", region=Region(polygon=((0, 0), (4, 0), (4, 4))))
    c = Sample("c", label="cat", provenance="auto", embedding=unit(rng))
    entries = store.put([a, b, c], reason="import")
    assert [(e.action, e.sample_id, e.reason) for e in entries] == [("add", "a", "import"), ("add", "b", "import"), ("add", "c", "import")]
    assert store.get("a") == a and store.get("b") == b and store.get("zz") is None
    assert store.get_many(["c", "zz", "a"]) == [c, None, a]
    assert [s.id for s in store.samples()] == ["a", "b", "c"]
    assert [s.id for s in store.samples(label="cat")] == ["a", "c"]
    assert len(store) == 3 and store.labels() == {"cat": 2, "dog": 1}
    store.delete("c")
    assert [s.id for s in store.samples()] == ["a", "b"] and [s.id for s in store.samples(include_deleted=True)] == ["a", "b", "c"]
    stats = store.stats()
    assert {k: stats[k] for k in ("samples", "deleted", "embeddings", "history", "labels", "provenance")} == {
        "samples": 2, "deleted": 1, "embeddings": 1, "history": 4, "labels": 2, "provenance": {"import": 1, "user": 1},
    }  # fmt: skip
    assert isinstance(store, Store) and isinstance(store, AliasStore)


def test_samples_stream_in_pages_in_insertion_order(store):
    with store.transaction():
        store.put([Sample(f"s{i:04d}", label="ab"[i % 2]) for i in range(2500)])
    store.put([Sample("s0001", label="b", provenance="user")])  # an update keeps its place
    ids = [s.id for s in store.samples()]
    assert len(ids) == 2500 and ids[:3] == ["s0000", "s0001", "s0002"] and ids[-1] == "s2499"
    assert sum(1 for _ in store.samples(label="a")) == 1250


def test_exact_search_matches_brute_force_and_excludes(store):
    rng = np.random.default_rng(1)
    vecs = {f"s{i}": unit(rng) for i in range(60)}
    store.put([Sample(k, label="a", embedding=v) for k, v in vecs.items()])
    q = vecs["s7"] + 0.01 * unit(rng)
    hits = store.search(q, 5)
    ids = list(vecs)
    mat = np.stack([vecs[i] for i in ids])
    assert [h[0].id for h in hits] == [ids[i] for i in np.argsort(-(mat @ (q / np.linalg.norm(q))))[:5]]
    assert hits[0][0] == Sample("s7", label="a", embedding=vecs["s7"]) and hits[0][1] > 0.99
    assert all(h[0].id != "s7" for h in store.search(q, 5, exclude=["s7"]))
    store.delete("s7")
    assert all(h[0].id != "s7" for h in store.search(q, 5))
    with pytest.raises(StoreError, match="sample 'x' has a 4-d embedding; the store holds 16-d"):
        store.put([Sample("x", embedding=np.ones(4))])


def test_put_trust_rules_conflicts_and_force(store):
    store.put([Sample("a", label="cat", provenance="user"), Sample("b", label="cat", provenance="import"), Sample("u", label=None, provenance="import")])
    store.put([Sample("a", label="cat", provenance="user")])
    assert len(store.history(limit=None)) == 3  # no change, no history entry
    with pytest.raises(LabelConflict, match="user label 'cat'"):
        store.put([Sample("a", label="dog", provenance="auto")])
    with pytest.raises(LabelConflict):
        store.put([Sample("b", label="dog", provenance="auto")])  # auto may not replace import
    assert store.get("a").label == "cat" and store.get("b").label == "cat"
    entries = store.put([Sample("a", label="dog", provenance="auto"), Sample("u", label="dog", provenance="auto")], on_conflict="skip")
    assert [(e.action, e.sample_id) for e in entries] == [("conflict", "a"), ("update", "u")]
    assert store.get("a").label == "cat" and store.get("u").label == "dog"  # an unlabelled sample is filled
    with pytest.raises(UndoConflict, match="records a refused change"):
        store.undo(entries[0].seq)
    with pytest.raises(LabelConflict):
        store.relabel("a", "dog", provenance=Provenance.IMPORT)
    e = store.relabel("a", "dog", provenance=Provenance.AUTO, force=True, reason="audit --apply")
    assert store.get("a").label == "dog" and e.reason == "audit --apply" and e.before["label"] == "cat"
    assert store.relabel("a", "dog", provenance=Provenance.AUTO) is None
    with pytest.raises(ValueError, match="on_conflict"):
        store.put([Sample("z")], on_conflict="replace")


def test_history_and_undo_of_every_kind_of_change(store):
    rng = np.random.default_rng(3)
    v = unit(rng)
    add = store.put([Sample("a", label="cat", embedding=v)])[0]
    e_relabel = store.relabel("a", "dog", provenance="user")
    e_region = store.set_region("a", Region(box=(0, 0, 5, 5)))
    assert store.set_region("a", Region(box=(0, 0, 5, 5))) is None
    e_note = store.annotate("a", note="left handle chipped", attributes={"colour": "blue"})
    e_delete = store.delete("a")
    assert store.get("a") is None and len(store) == 0 and store.search(v, 3) == []
    assert [e.action for e in store.history(limit=None, newest_first=False)] == ["add", "relabel", "region", "note", "delete"]
    assert [e.seq for e in store.history(limit=2)] == [e_delete.seq, e_note.seq]
    assert [e.action for e in store.history(sample_id="a", since=e_region.seq, newest_first=False)] == ["note", "delete"]
    with pytest.raises(UndoConflict, match=r"changed again after #\d+ \(#\d+, #\d+, #\d+, #\d+\)"):
        store.undo(add.seq)
    store.undo(e_delete.seq)
    assert store.search(v, 1)[0][0].id == "a"  # the embedding came back with the sample
    store.undo(e_note.seq)
    assert "notes" not in store.get("a").meta
    store.undo(e_region.seq)
    assert store.get("a").region is None
    u = store.undo(e_relabel.seq)
    assert store.get("a").label == "cat" and store.get("a").provenance is Provenance.IMPORT
    assert u.undoes == e_relabel.seq and store.entry(e_relabel.seq).undone_by == u.seq
    with pytest.raises(UndoConflict, match="already undone"):
        store.undo(e_relabel.seq)
    redo = store.undo(u.seq)  # undoing the undo redoes the change
    assert store.get("a").label == "dog" and redo.undoes == u.seq
    store.undo(add.seq, force=True)  # undo of an add hides the sample, keeps its data
    assert store.get("a") is None and next(store.samples(include_deleted=True)).id == "a"
    with pytest.raises(StoreError, match="no history entry #999"):
        store.undo(999)
    with pytest.raises(SampleNotFound, match="no sample 'zz'"):
        store.relabel("zz", "cat")


def test_aliases_and_notes_are_undoable(store):
    store.put([Sample("a", label="mug_blue"), Sample("b", label="mug_red")])
    assert store.aliases() == {}
    e = store.set_alias("Bluey", "mug_blue", reason="the blue one")
    assert e.sample_id == "alias:bluey" and store.aliases() == {"Bluey": "mug_blue"}
    assert store.set_alias("Bluey", "mug_blue") is None
    with pytest.raises(LabelConflict, match="already a label"):
        store.set_alias("Mug Red", "mug_blue")
    e2 = store.set_alias("Bluey", "mug_red", provenance=Provenance.USER)
    with pytest.raises(LabelConflict, match="was set by user"):
        store.set_alias("Bluey", "mug_blue", provenance=Provenance.AUTO)
    with pytest.raises(UndoConflict):
        store.undo(e.seq)
    store.undo(e2.seq)
    assert store.aliases() == {"Bluey": "mug_blue"}
    rm = store.remove_alias("bluey")
    assert rm.action == "unalias" and store.aliases() == {} and store.remove_alias("bluey") is None
    store.undo(rm.seq)
    assert store.aliases() == {"Bluey": "mug_blue"}
    n = store.annotate("b", note="chipped", attributes={"size": "L"})
    assert store.get("b").meta["attributes"] == {"size": "L"} and store.get("b").meta["notes"][0]["text"] == "chipped"
    assert store.annotate("b", attributes={"size": "L"}) is None
    store.undo(n.seq)
    assert store.get("b").meta == {}


def test_transaction_is_one_atomic_commit_and_rolls_back(store, open_):
    other = open_()
    with pytest.raises(RuntimeError), store.transaction():
        store.put([Sample("a", label="cat")])
        store.put_artefact("a", "features/x", b"1")
        raise RuntimeError("boom")
    assert store.get("a") is None and store.history() == [] and store.get_artefact("a", "features/x") is None
    with store.transaction():
        store.put([Sample("a", label="cat")])
        with store.transaction():  # nested: joins the outer one
            store.relabel("a", "dog", provenance="user")
        assert other.get("a") is None  # nothing committed before the outer block ends
    assert other.get("a").label == "dog" and len(other.history()) == 2
    # a rolled-back transaction after a search inside it leaves no trace in the index
    rng = np.random.default_rng(9)
    v = unit(rng)
    assert store.search(v, 1) == []  # the index is loaded before the transaction
    with pytest.raises(RuntimeError), store.transaction():
        store.put([Sample("ghost", label="x", embedding=v)])
        assert store.search(v, 1)[0][0].id == "ghost"  # a transaction sees its own writes
        raise RuntimeError("boom")
    store.put([Sample("real", label="x", embedding=-v)])
    assert [h[0].id for h in store.search(v, 5)] == ["real"]


def test_artefacts_cached_replaced_invalidated(store):
    store.put_artefact("a", "features/sift", b"\x00\x01")
    assert store.get_artefact("a", "features/sift") == b"\x00\x01"
    store.put_artefact("a", "features/sift", b"\x02")
    store.put_artefact("b", "features/sift", b"\x03")
    store.put_artefact("b", "lmm/answer", b"yes")
    assert store.get_artefact("a", "features/sift") == b"\x02" and store.get_artefact("a", "nope") is None
    assert store.artefact_kinds() == {"features/sift": 2, "lmm/answer": 1}
    assert store.delete_artefacts("features/sift", "a") == 1
    assert store.delete_artefacts("features/sift") == 1 and store.artefact_kinds() == {"lmm/answer": 1}
    store.put([Sample("c", uri="/v1.png", label="cat")])
    store.put_artefact("c", "features/x", b"old")
    store.put([Sample("c", uri="/v1.png", label="lynx", provenance="import")])
    assert store.get_artefact("c", "features/x") == b"old"  # same pixels: kept
    store.put([Sample("c", uri="/v2.png", label="lynx")])
    assert store.get_artefact("c", "features/x") is None
    assert store.history(limit=1)[0].action == "update"  # artefacts are caches, never history


def test_large_binary_artefacts_come_back_whole(store):
    """Every byte value, a few MB (PostgreSQL reads them in binary format), inside and
    outside a transaction, replaced by a shorter one."""
    rng = np.random.default_rng(1)
    blob = rng.integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    store.put_artefact("__asmk__", "asmk/ivf/x", blob)
    assert store.get_artefact("__asmk__", "asmk/ivf/x") == blob
    with store.transaction():
        store.put_artefact("__asmk__", "asmk/ivf/x", blob[::-1])
        assert store.get_artefact("__asmk__", "asmk/ivf/x") == blob[::-1]  # the transaction's own write
    assert store.get_artefact("__asmk__", "asmk/ivf/x") == blob[::-1]
    store.put_artefact("__asmk__", "asmk/ivf/x", bytes(range(256)))
    assert store.get_artefact("__asmk__", "asmk/ivf/x") == bytes(range(256))


def test_other_connections_see_writes_and_vectors(open_):
    a, b = open_(), open_()
    rng = np.random.default_rng(4)
    v = unit(rng)
    a.put([Sample("x", label="cat", embedding=v)])
    assert b.search(v, 1)[0][0].id == "x"
    a.put([Sample("y", label="dog", embedding=-v)])
    assert b.search(-v, 1)[0][0].id == "y"
    a.delete("y")
    assert [h[0].id for h in b.search(-v, 2)] == ["x"]
    a.put([Sample("x", label="cat", embedding=-v)], reason="new embedding")
    assert b.search(-v, 1)[0][0].id == "x" and b.search(-v, 1)[0][1] > 0.999


SECOND_PROCESS = textwrap.dedent(
    """
    import sys, numpy as np, consist
    from consist import Sample
    store = consist.open_store(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    v = rng.standard_normal(16).astype(np.float32)
    store.put([Sample("from-" + sys.argv[2], label="far", embedding=v)])
    hits = store.search(np.ones(16, dtype=np.float32), 1)
    print(hits[0][0].id)
    """
)


def test_a_second_process_sees_the_first_processes_writes_and_vectors(store_uri, open_, tmp_path):
    store = open_()
    store.put([Sample("near", label="cat", embedding=np.ones(16))])
    script = tmp_path / "second.py"
    script.write_text(SECOND_PROCESS)
    out = subprocess.run([sys.executable, str(script), store_uri, "7"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "near"  # it saw our vector
    v = np.random.default_rng(7).standard_normal(16).astype(np.float32)
    assert store.search(v, 1)[0][0].id == "from-7"  # and we see its vector
    assert store.get("from-7").label == "far"


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, consist
    from consist import Sample, Provenance
    from consist.errors import LabelConflict
    store = consist.open_store(sys.argv[1])
    w, n = int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(w)
    made = 0
    for j in range(n):
        made += len(store.put([Sample(f"w{w}-{j}", label="x", provenance="auto", embedding=rng.standard_normal(8))]))
        # every writer fights over the same rows: an auto change of a user label is refused
        made += len(store.put([Sample("owned", label=f"auto{w}", provenance="auto")], on_conflict="skip"))
        made += store.relabel("shared", f"import{w}-{j}", provenance=Provenance.IMPORT) is not None
        with store.transaction():
            made += len(store.put([Sample(f"t{w}-{j}", label="y", provenance="import")]))
            made += store.annotate("shared", note=f"w{w} {j}") is not None
    print(made)
    """
)


def test_eight_concurrent_writers_lose_no_history_entry(store_uri, open_, tmp_path):
    store = open_()
    store.put([Sample("owned", label="mine", provenance="user"), Sample("shared", label="start", provenance="import")])
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    n = 12
    procs = [subprocess.Popen([sys.executable, str(script), store_uri, str(w), str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(8)]
    made = 0
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        made += int(out)
    assert made == 8 * n * 5
    history = store.history(limit=None, newest_first=False)
    seqs = [e.seq for e in history]
    assert len(history) == 2 + made and seqs == list(range(1, len(seqs) + 1))  # no entry lost, no gap (nothing rolled back)
    assert sum(e.action == "conflict" for e in history) == 8 * n
    assert store.get("owned").label == "mine"  # the trust rule held under contention
    assert len(store.get("shared").meta["notes"]) == 8 * n  # no annotation lost (read-modify-write under the lock)
    assert len(store) == 2 + 8 * n * 2
    assert len(store.vector_index) == 8 * n
    # the history of the shared row replays to its current state: each entry's before is the previous after
    shared = [e for e in history if e.sample_id == "shared"]
    assert all(prev.after == nxt.before for prev, nxt in itertools.pairwise(shared))


def test_persisted_vector_index_is_loaded_and_follows_other_writers(open_):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 16)).astype(np.float32)
    writer = open_("vector_snapshot_min=100")
    with writer.transaction():
        writer.put([Sample(f"s{i}", label="x", embedding=X[i]) for i in range(400)])
    q = X[3] + 0.1
    first = writer.search(q, 10)  # builds the index from the rows and saves a snapshot
    assert writer._vectors.loaded_from == "rows"
    reader = open_("vector_snapshot_min=100")
    again = reader.search(q, 10)
    assert reader._vectors.loaded_from == "snapshot"
    assert [(h[0].id, round(h[1], 6)) for h in again] == [(h[0].id, round(h[1], 6)) for h in first]
    # changes after the snapshot are replayed, in this process and the next
    writer.put([Sample("new", label="x", embedding=q)])
    writer.delete("s3")
    writer.put([Sample("s4", label="x", embedding=-q)])
    assert reader.search(q, 1)[0][0].id == "new"
    late = open_("vector_snapshot_min=100")
    hits = late.search(q, 10)
    assert late._vectors.loaded_from == "snapshot" and "s3" not in {h[0].id for h in hits}
    live = {s.id: s.embedding for s in late.samples() if s.embedding is not None}
    ids = list(live)
    mat = np.stack([live[i] / np.linalg.norm(live[i]) for i in ids])
    expect = [ids[j] for j in np.argsort(-(mat @ (q / np.linalg.norm(q))), kind="stable")[:10]]
    assert [h[0].id for h in hits] == expect == [h[0].id for h in reader.search(q, 10)]
    assert len(late.vector_index) == len(reader.vector_index) == 400


def test_persisted_ivf_gives_the_same_answers(open_):
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((40, 16))
    X = (centres[rng.integers(0, 40, 1500)] + 0.4 * rng.standard_normal((1500, 16))).astype(np.float32)
    a = open_("vector_snapshot_min=100&ann_threshold=500")
    with a.transaction():
        a.put([Sample(f"s{i}", label="x", embedding=X[i]) for i in range(1500)])
    queries = X[:40] + 0.05
    before = [[h[0].id for h in a.search(q, 10)] for q in queries]
    assert a.vector_index.uses_ann and a.vector_index._ann is not None
    b = open_("vector_snapshot_min=100&ann_threshold=500")
    after = [[h[0].id for h in b.search(q, 10)] for q in queries]
    assert b._vectors.loaded_from == "snapshot" and b.vector_index._ann is not None
    assert after == before


def test_read_only_store_reads_and_refuses_writes(store, store_uri):
    store.put([Sample("a", label="cat", embedding=np.ones(4))])
    sep = "&" if "?" in store_uri else "?"
    ro = consist.open_store(store_uri + sep + "readonly=1")
    try:
        assert ro.get("a").label == "cat" and ro.search(np.ones(4), 1)[0][0].id == "a"
        with pytest.raises(StoreError, match="read-only"):
            ro.put([Sample("b")])
    finally:
        ro.close()


# ------------------------------------------------------------- PostgreSQL only


def test_postgres_refuses_a_schema_with_other_tables(pg_server):
    import psycopg

    uri = pg_server.create_database()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id INT)")
        conn.execute("CREATE SCHEMA crm")
        conn.execute("CREATE TABLE crm.customers (id INT)")
    s = consist.open_store(uri)  # the default schema "consist" never collides with the user's
    s.put([Sample("a", label="cat")])
    s.close()
    with pytest.raises(StoreError) as info:
        consist.open_store(uri + "?schema=crm")
    msg = str(info.value)
    assert "not a consist store" in msg and "customers" in msg and "left untouched" in msg and "\n" not in msg
    with psycopg.connect(uri) as conn:
        assert [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'crm'")] == ["customers"]
    with pytest.raises(StoreError, match="no consist store in schema 'other'"):
        consist.open_store(uri + "?schema=other", create=False)
    with pytest.raises(StoreError, match="schema must be"):
        consist.open_store(uri + "?schema=Bad-Name")
    two = consist.open_store(uri + "?schema=second")
    assert len(two) == 0 and consist.open_store(uri).get("a").label == "cat"  # stores in two schemas are apart
    two.close()


def test_postgres_unreachable_server_is_one_line_without_the_password(pg_server):
    uri = f"postgresql://alice:s3cret@127.0.0.1:{pg_server.port + 1}/nope?connect_timeout=2"
    with pytest.raises(StoreError) as info:
        consist.open_store(uri)
    msg = str(info.value)
    assert msg.startswith(f"postgresql://alice@127.0.0.1:{pg_server.port + 1}/nope") and "cannot connect" in msg
    assert "s3cret" not in msg and "\n" not in msg
    with pytest.raises(StoreError, match='database "missing" does not exist'):
        consist.open_store(pg_server.uri("missing"))
    with pytest.raises(StoreError, match="unknown option 'bogus'"):
        consist.open_store(pg_server.uri("x", bogus="1"))


def test_postgres_uri_forms_and_hidden_password(pg_server):
    name = pg_server.create_database().rsplit("/", 1)[1]
    s = consist.open_store(f"postgres://postgres:pw@127.0.0.1:{pg_server.port}/{name}?timeout=2&application_name=t")
    assert s.uri == f"postgres://postgres@127.0.0.1:{pg_server.port}/{name}?timeout=2&application_name=t" and "pw" not in repr(s)
    s.close()


def test_postgres_writer_waits_then_gets_a_clear_error(pg_server):
    import psycopg

    uri = pg_server.create_database()
    s = consist.open_store(uri + "?timeout=0.3")
    holder = psycopg.connect(uri)  # another process's open write transaction holds the lock
    holder.execute("SELECT pg_advisory_xact_lock(hashtext('consist:consist'))")
    try:
        with pytest.raises(StoreLockedError, match="another process is writing"):
            s.put([Sample("a", label="cat")])
        assert len(s) == 0  # readers do not wait
    finally:
        holder.rollback()
        holder.close()
    s.put([Sample("a", label="cat")])
    assert s.get("a").label == "cat"
    s.close()


def test_missing_psycopg_is_a_one_line_error(pg_server, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r'pip install "consist\[postgres\]"'):
        consist.open_store(pg_server.uri("postgres"))


def test_an_unreadable_snapshot_is_rebuilt_from_the_rows(open_, store_uri):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 16)).astype(np.float32)
    a = open_("vector_snapshot_min=100")
    a.put([Sample(f"s{i}", label="x", embedding=X[i]) for i in range(300)])
    expect = [h[0].id for h in a.search(X[5], 10)]
    mark = "?" if store_uri.startswith("sqlite") else "%s"
    with a.transaction():
        a._db.execute(f"UPDATE vector_snapshot SET data = {mark} WHERE part = 0", (b"not json",))
    b = open_("vector_snapshot_min=100")
    assert [h[0].id for h in b.search(X[5], 10)] == expect and b._vectors.loaded_from == "rows"


def test_vector_index_adopt_equals_add_and_removed_rows_never_hide_hits():
    from consist.stores.vectors import VectorIndex

    rng = np.random.default_rng(10)
    X = rng.standard_normal((50, 8)).astype(np.float32)
    X[3] = 0.0  # a zero vector stays zero
    ids = [f"v{i}" for i in range(50)]
    added, adopted = VectorIndex(), VectorIndex()
    added.add(ids, X)
    adopted.adopt(ids, X.copy())
    assert np.array_equal(added._mat[:50], adopted._mat[:50])
    q = rng.standard_normal(8).astype(np.float32)
    assert added.search(q, 7) == adopted.search(q, 7)
    # removed rows are zeros with a similarity of 0: they must not take the places of live hits
    index = VectorIndex()
    index.add(["a", "b", "c"], np.array([[1, 0], [-1, 0], [0, 1]], dtype=np.float32))
    index.remove(["a", "c"])
    assert [h[0] for h in index.search(np.array([1, 0], dtype=np.float32), 2)] == ["b"]


KILLED_WRITER = textwrap.dedent(
    """
    import sys, numpy as np, consist
    from consist import Sample
    store = consist.open_store(sys.argv[1])
    rng = np.random.default_rng(0)
    i = 0
    while True:
        with store.transaction():
            for _ in range(5):
                store.put([Sample(f"k{i}", label="cat", provenance="auto", embedding=rng.standard_normal(8))])
                i += 1
        print(i, flush=True)
    """
)


def test_a_writer_killed_mid_transaction_leaves_whole_transactions_and_frees_the_lock(store_uri, tmp_path):
    import signal

    script = tmp_path / "killed.py"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), store_uri], stdout=subprocess.PIPE, text=True)
    committed = 0
    try:
        while committed < 40:
            line = proc.stdout.readline()
            assert line, "writer died"
            committed = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    sep = "&" if "?" in store_uri else "?"
    s = consist.open_store(store_uri + sep + "timeout=5")
    try:
        n = len(s)
        assert n >= committed and n % 5 == 0  # whole transactions only
        assert {f"k{i}" for i in range(committed)} <= {x.id for x in s.samples()}
        assert len(s.history(limit=None)) == n and len(s.vector_index) == n
        s.put([Sample("after", label="dog")])  # the dead writer's lock is gone
        assert s.get("after").label == "dog"
    finally:
        s.close()


def test_postgres_reconnects_between_transactions_never_inside_one(pg_server):
    import psycopg

    uri = pg_server.create_database()
    s = consist.open_store(uri)
    s.put([Sample("a", label="cat")])

    def kill_session() -> None:
        with psycopg.connect(uri, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (s._db.info.backend_pid,))

    kill_session()  # a server restart or an idle timeout between two calls
    assert s.get("a").label == "cat" and s.labels() == {"cat": 1}
    with pytest.raises(StoreError, match="PostgreSQL server failed") as info, s.transaction():
        s.put([Sample("b", label="dog")])
        kill_session()
        s.put([Sample("c", label="dog")])
    assert "\n" not in str(info.value)
    assert [x.id for x in s.samples()] == ["a"] and len(s.history(limit=None)) == 1  # nothing of it was kept
    s.put([Sample("d", label="fox")])
    assert s.get("d").label == "fox"
    s.close()
