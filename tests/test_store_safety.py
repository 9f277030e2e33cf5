"""The store refuses what it must not touch, and says so in one line (issue 12,
items 9-11): real SQLite files, the real command line in a subprocess."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from consist.errors import StoreError
from consist.records import Provenance, Sample
from consist.stores.sqlite import SQLiteStore


def consist_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=full_env)


def _digest(folder: Path) -> dict[str, str]:
    """Every file of ``folder`` (the store and any -wal/-shm it grew) by content."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def _foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices VALUES (1, 9.5)")
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.parametrize("kind", ["foreign-sqlite", "empty-file", "empty-sqlite", "text-file"])
@pytest.mark.parametrize("command", [["store", "info"], ["history"], ["history", "--json"], ["undo", "--last"]])
def test_read_only_commands_leave_a_foreign_file_byte_for_byte_untouched(tmp_path, kind, command):
    folder = tmp_path / "d"
    folder.mkdir()
    path = folder / "their.db"
    if kind == "foreign-sqlite":
        _foreign_db(path)
    elif kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "empty-sqlite":
        sqlite3.connect(path).execute("VACUUM").connection.close()
    else:
        path.write_text("name,label\na.jpg,cat\n")
    before = _digest(folder)
    proc = consist_cli(*command, "--store", str(path))
    _one_line_error(proc, str(path), "not a consist store")
    assert _digest(folder) == before  # same bytes, no -wal/-shm grew
    if kind == "foreign-sqlite":
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL


def test_a_command_that_builds_a_store_refuses_a_foreign_database(tmp_path):
    path = tmp_path / "their.db"
    _foreign_db(path)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a consist store .*invoices"):
        SQLiteStore(path, create=True)
    assert path.read_bytes() == before and not Path(str(path) + "-wal").exists()


def test_an_empty_file_may_become_a_store_when_one_is_built(tmp_path):
    path = tmp_path / "new.db"
    path.write_bytes(b"")
    with SQLiteStore(path, create=True) as store:
        store.put([Sample("a", label="cat", provenance=Provenance.IMPORT, embedding=np.ones(4, np.float32))])
    with SQLiteStore(path, create=False) as store:
        assert store.get("a").label == "cat"


def test_a_consist_store_still_opens_for_reading_and_writing(tmp_path):
    path = tmp_path / "store.db"
    with SQLiteStore(path) as store:
        store.put([Sample("a", label="cat", provenance=Provenance.IMPORT)])
    proc = consist_cli("store", "info", "--store", str(path))
    assert proc.returncode == 0, proc.stderr
    with SQLiteStore(path, readonly=True) as store:
        assert store.get("a").label == "cat"


# ------------------------------------------------------------ undo --last


def test_undo_last_steps_back_through_history(tmp_path):
    path = tmp_path / "store.db"
    with SQLiteStore(path) as store:
        store.put([Sample("a", label="cat", provenance=Provenance.IMPORT)])  # #1
        store.relabel("a", "dog")  # #2
        store.relabel("a", "bird")  # #3
    seen = []
    for _ in range(3):
        proc = consist_cli("undo", "--last", "--store", str(path))
        assert proc.returncode == 0, proc.stderr
        with SQLiteStore(path, create=False) as store:
            got = store.get("a")
            seen.append(None if got is None else got.label)
    assert seen == ["dog", "cat", None]  # back, back, before the add: no toggling
    proc = consist_cli("undo", "--last", "--store", str(path))
    assert proc.returncode == 2 and "nothing to undo" in proc.stderr and "Traceback" not in proc.stderr


def test_undo_last_after_a_redo_undoes_the_redo(tmp_path):
    path = tmp_path / "store.db"
    with SQLiteStore(path) as store:
        store.put([Sample("a", label="cat", provenance=Provenance.IMPORT)])  # #1
        store.relabel("a", "dog")  # #2
        u = store.undo(2)  # #3: cat
        store.undo(u.seq)  # #4: redo, dog
    proc = consist_cli("undo", "--last", "--store", str(path))
    assert proc.returncode == 0, proc.stderr
    with SQLiteStore(path, create=False) as store:
        assert store.get("a").label == "cat"
    proc = consist_cli("undo", "--last", "--store", str(path))
    assert proc.returncode == 0, proc.stderr
    with SQLiteStore(path, create=False) as store:
        assert store.get("a") is None  # then the add


# ------------------------------------------------------------ item 10: one line, exit 2


@pytest.mark.parametrize("query", ["timeout=abc", "timeout=nan", "timeout=-1", "ann_threshold=lots", "timeout=inf"])
def test_a_bad_store_option_is_one_line(tmp_path, query):
    path = tmp_path / "store.db"
    with SQLiteStore(path) as store:
        store.put([Sample("a", label="cat", provenance=Provenance.IMPORT)])
    proc = consist_cli("history", "--store", f"sqlite:///{path}?{query}")
    _one_line_error(proc, query.split("=")[0])


def _corrupt_store(path: Path) -> None:
    rng = np.random.default_rng(0)
    with SQLiteStore(path) as store:
        store.put([Sample(f"s{i:04d}", label=f"l{i % 7}", provenance=Provenance.IMPORT, embedding=rng.standard_normal(512).astype(np.float32)) for i in range(400)])
    # a checkpointed file whose middle pages are overwritten: part of the samples table is garbage
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 8192
    for p in range(len(data) // page // 2, len(data) // page // 2 + 3):
        data[p * page + 100 : p * page + 4000] = rng.integers(0, 256, 3900, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", [["history"], ["undo", "--last"], ["store", "info"]])
def test_a_partly_corrupt_store_is_refused_before_any_write(tmp_path, command):
    path = tmp_path / "store.db"
    _corrupt_store(path)
    before = path.read_bytes()
    proc = consist_cli(*command, "--store", str(path))
    _one_line_error(proc, str(path), "corrupt")
    assert path.read_bytes() == before


# ------------------------------------------------------------ read-only and full file systems


def _can_unshare() -> bool:
    import shutil

    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


needs_unshare = pytest.mark.skipif(not _can_unshare(), reason="needs unprivileged user and mount namespaces (unshare -rm)")


def consist_in_namespace(mount: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``consist ARGS`` in a private mount namespace prepared by the shell ``mount``
    commands (a read-only bind mount, a tiny tmpfs): real EROFS / ENOSPC."""
    script = f'{mount} && exec "$@"'
    cmd = ["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "consist.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})})


@needs_unshare
def test_a_store_on_a_read_only_file_system_reads_and_refuses_writes_by_name(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "store.db"
    with SQLiteStore(path) as store:
        store.put([Sample("a", label="cat", provenance=Provenance.IMPORT)])
    before = _digest(folder)
    ro = f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder}"
    for command in (["store", "info"], ["history"]):
        proc = consist_in_namespace(ro, *command, "--store", str(path))
        assert proc.returncode == 0, proc.stderr  # it opens read-only for reading
        assert "cat" in proc.stdout or "a" in proc.stdout
    for command in (["correct", "a", "dog"], ["undo", "--last"]):
        proc = consist_in_namespace(ro, *command, "--store", str(path))
        _one_line_error(proc, str(path), "read-only")
    proc = consist_in_namespace(ro, "history", "--store", str(folder / "new.db"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _digest(folder) == before


@needs_unshare
def test_a_full_disk_while_indexing_is_one_line(tmp_path):
    pytest.importorskip("consist_spatial")
    sys.path.insert(0, str(Path(__file__).parent))
    import audit_data

    root, _ = audit_data.build(tmp_path / "photos")
    small = tmp_path / "small"
    small.mkdir()
    proc = consist_in_namespace(f"mount -t tmpfs -o size=300k tmpfs {small}", "index", str(root), "--store", str(small / "s.db"), env={"CONSIST_PLUGINS": "spatial"})
    _one_line_error(proc, "disk is full")


@needs_unshare
def test_a_full_disk_while_writing_the_audit_outputs_is_one_line(tmp_path):
    pytest.importorskip("consist_spatial")
    sys.path.insert(0, str(Path(__file__).parent))
    import audit_data

    root, _ = audit_data.build(tmp_path / "photos")
    store = tmp_path / "store.db"  # the store elsewhere: the outputs fill the disk
    small = tmp_path / "small"
    small.mkdir()
    args = ["audit", str(root), "--out", str(small / "out"), "--store", str(store), "--workers", "1", "--no-report"]
    proc = consist_in_namespace(f"mount -t tmpfs -o size=12k tmpfs {small}", *args, env={"CONSIST_PLUGINS": "spatial"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "disk is full" in last, proc.stderr
