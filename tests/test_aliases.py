"""Aliases (personal names of labels) and notes in the store, and the engine's
canonicalisation of candidate labels: every change in the history, undoable."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from consist import Candidate, Engine, LabelConflict, Neighbour, Prediction, Query, Sample, UndoConflict, open_store
from consist.aliases import alias_map, canonicalise, canonicalise_prediction, normalise, resolve_label
from consist.contracts.store import AliasStore
from consist.stores.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "s.db"))
    s.put([Sample("a", label="mug_blue"), Sample("b", label="mug_red"), Sample("c", label="radcliffe_camera")])
    yield s
    s.close()


def test_normalise():
    assert normalise("  The_Radcliffe-Camera ") == "the radcliffe camera"


def test_store_has_the_optional_alias_capabilities(store):
    assert isinstance(store, AliasStore)
    assert store.aliases() == {}  # no table yet: no aliases, no error


def test_set_alias_history_and_undo(store):
    e = store.set_alias("Bluey", "mug_blue", reason="call the blue one Bluey")
    assert e.action == "alias" and e.sample_id == "alias:bluey" and e.before is None
    assert store.aliases() == {"Bluey": "mug_blue"}
    assert canonicalise("bluey", store) == "mug_blue" and canonicalise("mug_red", store) == "mug_red"
    assert store.set_alias("Bluey", "mug_blue") is None  # no change, no history noise
    e2 = store.set_alias("Bluey", "mug_red")
    assert e2.before["label"] == "mug_blue"
    with pytest.raises(UndoConflict):
        store.undo(e.seq)  # a later change of the same alias is in effect
    u = store.undo(e2.seq)
    assert u.action == "undo" and u.undoes == e2.seq
    assert store.aliases() == {"Bluey": "mug_blue"}
    store.undo(e.seq)
    assert store.aliases() == {}
    redo = store.undo(store.history(limit=1)[0].seq)  # undoing the undo redoes
    assert redo.after["label"] == "mug_blue" and store.aliases() == {"Bluey": "mug_blue"}
    # samples were never touched
    assert [s.label for s in store.samples()] == ["mug_blue", "mug_red", "radcliffe_camera"]
    assert len(store) == 3


def test_remove_alias_is_undoable(store):
    store.set_alias("Bluey", "mug_blue")
    e = store.remove_alias("bluey")
    assert e.action == "unalias" and store.aliases() == {}
    assert store.remove_alias("bluey") is None
    store.undo(e.seq)
    assert store.aliases() == {"Bluey": "mug_blue"}


def test_alias_may_not_hide_a_label_or_a_users_alias(store):
    with pytest.raises(LabelConflict, match="already a label"):
        store.set_alias("Mug Red", "mug_blue")
    store.set_alias("Bluey", "mug_blue")
    with pytest.raises(LabelConflict, match="set by user"):
        store.set_alias("Bluey", "mug_red", provenance="auto")
    assert store.set_alias("Bluey", "mug_red", provenance="auto", force=True).after["label"] == "mug_red"


def test_aliases_persist_and_old_stores_need_no_migration(tmp_path):
    path = tmp_path / "old.db"
    s = open_store(str(path))
    s.put([Sample("a", label="x")])
    s.close()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "aliases" not in tables
    s = open_store(str(path))
    s.set_alias("ex", "x")
    s.close()
    ro = SQLiteStore(str(path), readonly=True)
    assert ro.aliases() == {"ex": "x"}
    ro.close()


def test_annotate_notes_and_attributes_undoable(store):
    e = store.annotate("a", note="my favourite mug", attributes={"colour": "blue"})
    s = store.get("a")
    assert s.meta["notes"][0]["text"] == "my favourite mug" and s.meta["attributes"] == {"colour": "blue"}
    assert s.label == "mug_blue" and e.action == "note"
    store.undo(e.seq)
    assert "notes" not in store.get("a").meta


def test_canonicalise_prediction_merges_duplicates():
    p = Prediction(Query("q"), [Candidate("Bluey", 0.5), Candidate("mug_blue", 0.3), Candidate("mug_red", 0.2)])
    out = canonicalise_prediction(p, {"bluey": "mug_blue"})
    assert [(c.label, c.score) for c in out.candidates] == [("mug_blue", 0.5), ("mug_red", 0.2)]
    assert canonicalise_prediction(p, {}) is p
    assert alias_map(None) == {}


def test_engine_compares_aliases_as_their_labels(store):
    store.set_alias("Bluey", "mug_blue")
    p = Prediction(Query("q", embedding=np.ones(4, np.float32)), [Candidate("Bluey", 0.6)])
    n = [Neighbour(Sample(f"n{i}", label="mug_blue"), 0.9, i) for i in range(3)]
    d = Engine(["knn"], store=store).verify(p, n, adapt=False)
    assert d.label == "mug_blue" and d.predicted_label == "mug_blue" and not d.changed


def test_resolve_label(store):
    store.set_alias("Rad Cam", "radcliffe_camera")
    assert resolve_label("mug_red", store).how == "label"
    assert resolve_label("the Radcliffe Camera", store) == resolve_label("Radcliffe-Camera", store)
    assert resolve_label("the Radcliffe Camera", store).label == "radcliffe_camera"
    assert resolve_label("the rad cam", store).how == "alias"
    r = resolve_label("a teapot", store)
    assert (r.label, r.how) == ("teapot", "new")


def test_resolve_label_partial_only_when_unique(store):
    assert resolve_label("the Radcliffe", store).label == resolve_label("radcliffe camera", store).label == "radcliffe_camera"
    assert resolve_label("the Radcliffe", store).how == "partial"
    assert resolve_label("mug", store).how == "new"  # mug_blue or mug_red: ambiguous


def test_alias_cache_sees_other_connections_and_rollbacks(tmp_path):
    path = str(tmp_path / "c.db")
    a, b = open_store(path), open_store(path)
    a.put([Sample("s", label="x")])
    assert b.aliases() == {}
    a.set_alias("ex", "x")
    assert b.aliases() == {"ex": "x"}  # another connection's commit is seen
    try:
        with b.transaction():
            b.set_alias("why", "x")
            assert b.aliases() == {"ex": "x", "why": "x"}  # own uncommitted write is seen
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    assert b.aliases() == {"ex": "x"} and a.aliases() == {"ex": "x"}
    a.close()
    b.close()


def test_history_command_describes_alias_entries(tmp_path):
    from click.testing import CliRunner

    from consist.cli.main import cli

    db = tmp_path / "s.db"
    s = open_store(str(db))
    s.set_alias("Rad Cam", "radcliffe_camera")
    s.close()
    r = CliRunner().invoke(cli, ["history", "--store", str(db)])
    assert r.exit_code == 0, r.output
    assert "'Rad Cam' -> 'radcliffe_camera'" in r.output
