"""``consist store copy``: a whole store between back-ends (SQLite <-> a real
PostgreSQL server), history seq numbers kept so that undo works in the copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import consist
from consist import Provenance, Region, Sample
from consist.errors import StoreError
from consist.records import to_dict
from consist.stores.copy import copy_store


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=dict(os.environ), timeout=300)


def fill(store: consist.Store) -> None:
    """Every kind of row and history entry a store holds."""
    rng = np.random.default_rng(0)
    store.put(
        [
            Sample(f"s{i}", uri=f"/img/{i}.png", label=["cat", "dog", "fox"][i % 3], provenance="import", embedding=rng.standard_normal(32).astype(np.float32), meta={"row": i, "é": "ü"})
            for i in range(60)
        ]
    )
    store.put([Sample("noemb", label="cat", provenance="user", region=Region(polygon=((0, 0), (5, 0), (5, 5))))])
    e = store.relabel("s1", "lynx", provenance=Provenance.USER, reason="a person said so")
    store.set_region("s2", Region(box=(1, 2, 30, 40)))
    store.delete("s3")
    store.delete("s4")
    store.undo(store.delete("s5").seq)
    store.put([Sample("s1", label="cat", provenance="auto")], on_conflict="skip")  # a refused change
    store.annotate("s6", note="chipped", attributes={"colour": "blue"})
    store.set_alias("Bluey", "cat")
    store.remove_alias("Bluey")
    store.set_alias("Reddy", "fox")
    u = store.undo(e.seq)
    store.undo(u.seq)  # undo of an undo
    store.put_artefact("s0", "features/sift", b"\x00\x01\x02")
    store.put_artefact("s7", "features/sift", bytes(range(256)) * 100)
    store.put_artefact("s7", "lmm/answer", b"yes")


def contents(store: consist.Store) -> dict[str, object]:
    return {
        "samples": [(to_dict(s), deleted) for page in store.sample_pages() for s, deleted in page],
        "history": [to_dict(e) for e in store.history(limit=None, newest_first=False)],
        "artefacts": list(store.artefact_rows()),
        "aliases": store.alias_rows(),
        "labels": store.labels(),
        "aliases_map": store.aliases(),
    }


def test_round_trip_sqlite_postgres_sqlite_keeps_everything(tmp_path: Path, pg_uri: str) -> None:
    first = f"sqlite:///{tmp_path / 'first.db'}"
    src = consist.open_store(first)
    fill(src)
    original = contents(src)
    q = np.random.default_rng(0).standard_normal(32).astype(np.float32)
    hits = [(h[0].id, round(h[1], 5)) for h in src.search(q, 8)]
    src.close()

    r = run("store", "copy", first, pg_uri, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {k: out[k] for k in ("samples", "deleted", "embeddings", "artefacts", "aliases")} == {"samples": 59, "deleted": 2, "embeddings": 58, "artefacts": 3, "aliases": 1}
    assert out["history"] == len(original["history"]) and out["last_seq"] == original["history"][-1]["seq"]

    pg = consist.open_store(pg_uri)
    assert contents(pg) == original
    assert [(h[0].id, round(h[1], 5)) for h in pg.search(q, 8)] == hits
    # undo works in the copy with the same numbers, and new entries continue the sequence
    last = original["history"][-1]["seq"]
    r = run("undo", str(last), "--store", pg_uri, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["seq"] == last + 1
    assert pg.get("s1").label == "dog"  # its import label again
    pg.undo(last + 1)
    assert pg.get("s1").label == "lynx"
    assert pg.put([Sample("new", label="cat")])[0].seq == last + 3
    pg.close()

    back = f"sqlite:///{tmp_path / 'back.db'}"
    r = run("store", "copy", pg_uri, back)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("copied 60 samples (+2 deleted, 58 embeddings)")
    again = consist.open_store(back)
    pg = consist.open_store(pg_uri)
    assert contents(again) == contents(pg)
    assert again.put([Sample("newer", label="cat")])[0].seq == last + 4
    again.close()
    pg.close()


def test_copy_refuses_a_non_empty_destination_and_bad_input(tmp_path: Path, pg_uri: str) -> None:
    a = f"sqlite:///{tmp_path / 'a.db'}"
    s = consist.open_store(a)
    s.put([Sample("x", label="cat")])
    s.close()
    pg = consist.open_store(pg_uri)
    pg.put([Sample("mine", label="dog")])
    pg.close()
    r = run("store", "copy", a, pg_uri)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: ") and "the destination is not empty" in r.stderr and "nothing was changed" in r.stderr
    pg = consist.open_store(pg_uri)
    assert [x.id for x in pg.samples()] == ["mine"] and len(pg.history(limit=None)) == 1
    pg.close()
    r = run("store", "copy", f"sqlite:///{tmp_path / 'missing.db'}", f"sqlite:///{tmp_path / 'b.db'}")
    assert r.returncode == 2 and "no such store" in r.stderr and r.stderr.count("\n") == 1
    r = run("store", "copy", a, a)
    assert r.returncode == 2 and "same store" in r.stderr
    r = run("store", "copy", a, "postgresql://u:topsecret@127.0.0.1:1/db?connect_timeout=1")
    assert r.returncode == 2 and "cannot connect" in r.stderr and "topsecret" not in r.stderr


def test_copy_failure_leaves_the_destination_empty(tmp_path: Path) -> None:
    src = consist.open_store(f"sqlite:///{tmp_path / 'src.db'}")
    fill(src)
    dst = consist.open_store(f"sqlite:///{tmp_path / 'dst.db'}")
    calls: list[tuple[str, int]] = []

    def boom(what: str, n: int) -> None:
        calls.append((what, n))
        if what == "history":
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        copy_store(src, dst, progress=boom)
    assert calls[0] == ("samples", 61) and dst.is_empty() and len(dst) == 0
    result = copy_store(src, dst)
    assert result.samples == 59 and not dst.is_empty()
    with pytest.raises(StoreError, match="not empty"):
        copy_store(src, dst)
    src.close()
    dst.close()
