"""The embedded default store: SQLite in WAL mode, plus in-memory vector search.

Why SQLite: no server, one file, atomic transactions, and a write-ahead log that
keeps every committed transaction across a process killed at any moment (we use
``synchronous=NORMAL`` by default: a *power* loss may lose the last transactions, a
killed process loses none; ``?synchronous=full`` trades speed for power-loss
durability). Readers never block; a second writer waits up to ``timeout`` seconds
(default 10) and then gets :class:`StoreLockedError`.

Nothing is ever destroyed by an ordinary write: deletion is a flag, and every
change of a sample is a history row holding the sample before and after, so any
change can be undone (``consist undo``).

URI forms: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, a bare path, and
``memory://`` (a private in-memory database). Query options: ``timeout`` (s),
``synchronous`` (``normal``/``full``), ``ann_threshold`` (vectors above which IVF
search is used), ``vector_snapshot_min`` (vectors from which the search index is
saved in the store, :class:`~consist.stores.vectors.PersistentIndex`), ``readonly``
(``1``).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import attrs
import numpy as np
import structlog

from consist.errors import LabelConflict, SampleNotFound, StoreError, StoreLockedError, UndoConflict
from consist.records import TRUST, HistoryEntry, Provenance, Region, Sample, from_dict, to_dict
from consist.stores.uri import split_uri
from consist.stores.vectors import DEFAULT_ANN_THRESHOLD, DEFAULT_SNAPSHOT_MIN, PersistentIndex, VectorIndex, VectorRead

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

log = structlog.get_logger("consist.store")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    uri TEXT,
    label TEXT,
    provenance TEXT NOT NULL,
    region TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    embedding BLOB,
    deleted INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_label ON samples(label) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS artefacts (
    sample_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (sample_id, kind)
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    action TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    provenance TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    before TEXT,
    after TEXT,
    undoes INTEGER,
    undone_by INTEGER
);
CREATE INDEX IF NOT EXISTS history_sample ON history(sample_id, seq);
"""

_SAMPLE_COLS = "id, uri, label, provenance, region, meta, embedding, deleted"


def _state(sample: Sample | None, deleted: bool = False) -> dict[str, Any] | None:
    """A sample as kept in the history: everything but the embedding (kept in place)."""
    if sample is None:
        return None
    d = to_dict(attrs.evolve(sample, embedding=None))  # no 512-float list built to be dropped
    del d["embedding"]
    d["deleted"] = deleted
    return d


#: History ``sample_id`` prefix of alias changes (``alias:<normalised name>``).
ALIAS_KEY_PREFIX = "alias:"

_ALIAS_SCHEMA = "CREATE TABLE IF NOT EXISTS aliases (name TEXT PRIMARY KEY, display TEXT NOT NULL, label TEXT NOT NULL, provenance TEXT NOT NULL, updated REAL NOT NULL)"


def _on_read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): not known to be read-only
        return False


def _why_read_only(path: Path) -> str:
    """Why an existing store file cannot be written ("" when it can)."""
    if _on_read_only_fs(path):
        return "it is on a read-only file system"
    if not os.access(path, os.W_OK):
        return "the file is read-only"
    if not os.access(path.parent, os.W_OK):
        return "its folder is read-only (SQLite writes its -wal and -shm files there)"
    return ""


def _is_alias_state(state: dict[str, Any] | None) -> bool:
    return isinstance(state, dict) and state.get("kind") == "alias"


def _alias_key(name: str) -> str:
    from consist.aliases import normalise

    key = normalise(name)
    if not key:
        raise ValueError(f"alias name {name!r} is empty once normalised")
    return key


class SQLiteStore:
    """SQLite-backed :class:`consist.stores.Store`. Thread-safe within a process."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        synchronous: str = "normal",
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        vector_snapshot_min: int = DEFAULT_SNAPSHOT_MIN,
        readonly: bool = False,
        create: bool = True,
        uri: str | None = None,
    ) -> None:
        self.path = str(path)
        self.uri = uri or (f"sqlite:///{self.path}" if self.path != ":memory:" else "memory://")
        self.timeout = float(timeout)
        self._readonly_reason = "opened read-only" if readonly else ""
        if self.path != ":memory:" and not readonly and Path(self.path).is_file():
            why = _why_read_only(Path(self.path))
            if why:  # read what can be read; a write then says "read-only", not "corrupt"
                readonly, self._readonly_reason = True, why
        self.readonly = readonly
        if self.path != ":memory:" and not create and not Path(self.path).exists():
            raise StoreError(f"{self.path}: no such store (check the path; commands that build a store create it)")
        if self.path != ":memory:":
            parent = Path(self.path).parent
            if not readonly:
                try:
                    parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"{self.path}: cannot create the store's folder: {exc.strerror or exc}") from exc
                if not Path(self.path).exists() and not os.access(parent, os.W_OK):
                    raise StoreError(f"{self.path}: cannot create the store: {'the file system is read-only' if _on_read_only_fs(parent) else 'its folder is not writable'}")
            elif not Path(self.path).exists():
                raise StoreError(f"{self.path}: no such store")
        existing = self.path != ":memory:" and Path(self.path).exists()
        if existing:
            self._refuse_foreign_file(create and not readonly)
        try:
            target = self.path
            if readonly:
                # on a read-only file system SQLite cannot create the WAL index (-shm):
                # nothing can change the file there, so it is opened as immutable
                immutable = "&immutable=1" if _on_read_only_fs(Path(self.path)) and not Path(self.path + "-shm").exists() else ""
                target = f"file:{quote(self.path)}?mode=ro{immutable}"
            self._db = sqlite3.connect(target, timeout=self.timeout, isolation_level=None, check_same_thread=False, uri=readonly)
            if existing and Path(self.path).stat().st_size > 0:
                if not self._schema_present():
                    self._refuse_foreign_database(create and not readonly)
                elif not readonly:
                    self._refuse_corrupt()
            self._db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:" and not readonly and not self._schema_present():
                # new store: 8 KiB pages hold two 512-d samples each (4 KiB pages hold one)
                self._db.execute("PRAGMA page_size = 8192")
            if self.path != ":memory:" and not readonly:
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    log.warning("store_not_wal", path=self.path, journal_mode=mode)
            sync = synchronous.upper()
            if sync not in ("NORMAL", "FULL", "OFF", "EXTRA"):
                raise StoreError(f"{self.uri}: synchronous must be normal or full, got {synchronous!r}")
            self._db.execute(f"PRAGMA synchronous = {sync}")
            if not readonly and not self._schema_present():
                self._write_script(_SCHEMA)
                self._check_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a consist store or corrupt: {exc}") from exc
        self._lock = threading.RLock()
        self._tx_depth = 0
        self._pending_vectors: list[tuple[str, np.ndarray | None]] = []
        self._vectors = PersistentIndex(_SqliteVectorSource(self), ann_threshold=ann_threshold, snapshot_min=vector_snapshot_min)

    # ---------------------------------------------------------------- plumbing

    def _refuse_foreign_file(self, create: bool) -> None:
        """Refuse, before anything is written, a file that is not a consist store:
        a folder, an empty file (unless a store is being created), a file that is
        not SQLite. Opening must never turn someone's file into a store."""
        p = Path(self.path)
        if p.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a consist store")
        try:
            size = p.stat().st_size
            with p.open("rb") as f:
                head = f.read(16)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read the store: {exc.strerror or exc}") from exc
        if size == 0:
            if not create:
                raise StoreError(f"{self.path}: an empty file (0 bytes), not a consist store; left untouched")
            return  # a command that builds a store may fill an empty file
        if head != b"SQLite format 3\x00":
            raise StoreError(f"{self.path}: not a consist store (not an SQLite database); left untouched")

    def _refuse_corrupt(self) -> None:
        """A quick integrity check before a command may write (``PRAGMA quick_check``:
        every page and record, no index cross-check; ~20 ms for 50 MB): a partly
        corrupt store is refused instead of changed further."""
        problem = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            self._db.close()
            raise StoreError(f"{self.path}: the store is corrupt ({problem}); nothing was changed: restore it from a backup (sqlite3's .recover salvages what is left)")

    def _refuse_foreign_database(self, create: bool) -> None:
        """An SQLite database without consist's schema: refused (untouched) when it
        holds tables of its own, or when the command only reads."""
        try:
            tables = [r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: not a consist store or corrupt: {exc}") from exc
        if tables or not create:
            self._db.close()
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            what = f"an SQLite database with other tables ({shown})" if tables else "an empty SQLite database"
            raise StoreError(f"{self.path}: not a consist store ({what}); left untouched")

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> SQLiteStore:
        scheme, rest = split_uri(uri)
        path_part, _, query = rest.partition("?")
        opts = {k: v[-1] for k, v in parse_qs(query).items()}
        if scheme == "memory":
            path = ":memory:"
        else:
            # sqlite:///rel.db -> "/rel.db" after the split: strip one slash (SQLAlchemy style)
            path = path_part[1:] if path_part.startswith("/") and "://" in uri else path_part
            if not path:
                raise StoreError(f"{uri!r}: no file path (use sqlite:///path/to/store.db)")
        known: dict[str, Callable[[str], Any]] = {"timeout": float, "synchronous": str, "ann_threshold": int, "vector_snapshot_min": int, "readonly": lambda v: v not in ("0", "false", "")}
        for key, val in opts.items():
            if key not in known:
                raise StoreError(f"{uri!r}: unknown option {key!r} (known: {', '.join(known)})")
            try:
                value = known[key](val)
            except ValueError:
                raise StoreError(f"{uri!r}: option {key} must be a number, got {val!r}") from None
            if key in ("timeout", "ann_threshold", "vector_snapshot_min") and not (math.isfinite(value) and value >= 0):
                raise StoreError(f"{uri!r}: option {key} must be a finite number >= 0, got {val!r}")
            kwargs.setdefault(key, value)
        return cls(path, uri=uri, **kwargs)

    def _write_script(self, script: str) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for stmt in filter(None, (s.strip() for s in script.split(";"))):
                self._db.execute(stmt)
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._raise_locked(exc)
            raise

    def _schema_present(self) -> bool:
        """True when the store is already initialised (opening then needs no write lock)."""
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError:
            return False
        if row is None:
            return False
        if int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema {row[0]} is newer than this consist understands ({SCHEMA_VERSION}); upgrade consist")
        return int(row[0]) == SCHEMA_VERSION

    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('vectors_version', '0')")
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema {row[0]} is newer than this consist understands ({SCHEMA_VERSION}); upgrade consist")

    def _raise_locked(self, exc: sqlite3.OperationalError) -> None:
        msg = str(exc).lower()
        if "locked" in msg or "busy" in msg:
            raise StoreLockedError(f"{self.uri}: another process is writing to the store and did not finish within {self.timeout:g} s") from exc
        if "readonly" in msg or "read-only" in msg:
            raise StoreError(f"{self.path}: the store is read-only ({self._readonly_reason or 'the file system refused the write'}); nothing was changed") from exc

    @contextmanager
    def transaction(self) -> Iterator[SQLiteStore]:
        """Group writes into one atomic, durable commit (much faster for batches).

        Nested ``transaction()`` blocks join the outer one. On an exception nothing
        of the block is written.
        """
        with self._lock:
            if self._tx_depth == 0:
                if self.readonly:  # refused before any statement (an immutable file takes no lock to fail on)
                    raise StoreError(f"{self.path}: the store is read-only ({self._readonly_reason}); nothing was changed")
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    self._raise_locked(exc)
                    raise StoreError(f"{self.uri}: cannot start a write: {exc}") from exc
                self._pending_vectors = []
            self._tx_depth += 1
            try:
                yield self
            except BaseException as exc:
                self._tx_depth -= 1
                if self._tx_depth == 0:
                    self._rollback()
                    self._pending_vectors = []
                    self._vectors.transaction_ended(committed=False)
                    if isinstance(exc, sqlite3.OperationalError):
                        self._raise_write_error(exc)
                raise
            else:
                self._tx_depth -= 1
                if self._tx_depth == 0:
                    try:
                        if self._pending_vectors:
                            self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'vectors_version'")
                        self._db.execute("COMMIT")
                    except sqlite3.OperationalError as exc:
                        self._rollback()
                        self._pending_vectors = []
                        self._vectors.transaction_ended(committed=False)
                        self._raise_locked(exc)
                        self._raise_write_error(exc)
                        raise
                    self._pending_vectors = []  # the index reads the committed changes from the history
                    self._vectors.transaction_ended(committed=True)

    def _rollback(self) -> None:
        """Roll back what is open (SQLite has already rolled back after a full disk:
        a second ROLLBACK would raise and hide the real error)."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass

    def _raise_write_error(self, exc: sqlite3.OperationalError) -> None:
        msg = str(exc).lower()
        if "full" in msg:
            raise StoreError(f"{self.path}: the disk is full; nothing of this write was kept (free some space and run the command again)") from exc
        if "readonly" in msg or "read-only" in msg:
            raise StoreError(f"{self.path}: the store is read-only ({self._readonly_reason or 'the file system refused the write'}); nothing was changed") from exc
        if "disk i/o error" in msg:
            raise StoreError(f"{self.path}: the disk failed while writing (disk I/O error); nothing of this write was kept") from exc

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.uri}>"

    # -------------------------------------------------------------------- reads

    def _row_to_sample(self, row: tuple[Any, ...]) -> Sample:
        sid, uri, label, prov, region, meta, emb, _deleted = row
        return Sample(
            id=sid,
            uri=uri,
            label=label,
            provenance=prov,
            region=None if region is None else from_dict(Region, json.loads(region)),
            embedding=None if emb is None else np.frombuffer(emb, dtype=np.float32),
            meta=json.loads(meta),
        )

    def _fetch(self, sample_id: str, *, include_deleted: bool = False) -> tuple[Sample, bool] | None:
        row = self._db.execute(f"SELECT {_SAMPLE_COLS} FROM samples WHERE id = ?", (sample_id,)).fetchone()
        if row is None or (row[-1] and not include_deleted):
            return None
        return self._row_to_sample(row), bool(row[-1])

    def get(self, sample_id: str) -> Sample | None:
        with self._lock:
            got = self._fetch(sample_id)
        return None if got is None else got[0]

    def get_many(self, ids: Sequence[str]) -> list[Sample | None]:
        """Samples in the order of ``ids`` (``None`` for missing or deleted)."""
        out: dict[str, Sample] = {}
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(f"SELECT {_SAMPLE_COLS} FROM samples WHERE deleted = 0 AND id IN ({marks})", chunk):
                    out[row[0]] = self._row_to_sample(row)
        return [out.get(i) for i in ids]

    def samples(self, *, label: str | None = None, include_deleted: bool = False) -> Iterator[Sample]:
        """All samples (optionally of one label), streamed in insertion order."""
        where = [] if include_deleted else ["deleted = 0"]
        args: list[Any] = []
        if label is not None:
            where.append("label = ?")
            args.append(label)
        sql = f"SELECT {_SAMPLE_COLS} FROM samples" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY rowid"
        last = 0
        while True:  # page by rowid: no long-lived cursor, so writers are not blocked
            with self._lock:
                page_sql = sql.replace(" ORDER BY rowid", (" AND " if where else " WHERE ") + "rowid > ? ORDER BY rowid LIMIT 1000")
                rows = self._db.execute(page_sql.replace("SELECT id,", "SELECT rowid, id,", 1), [*args, last]).fetchall()
            if not rows:
                return
            for row in rows:
                last = row[0]
                yield self._row_to_sample(row[1:])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM samples WHERE deleted = 0").fetchone()[0])

    def labels(self) -> dict[str, int]:
        """Label -> number of (live) samples, most frequent first."""
        with self._lock:
            rows = self._db.execute("SELECT label, COUNT(*) FROM samples WHERE deleted = 0 AND label IS NOT NULL GROUP BY label ORDER BY 2 DESC, 1").fetchall()
        return {label: n for label, n in rows}

    # ------------------------------------------------------------------- vectors

    def _vectors_version(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()[0])

    def _ensure_index(self) -> VectorIndex:
        """The search index: loaded from the store's snapshot by the first search of
        a process, then kept current from the history (other processes' writes too)."""
        in_tx = self._tx_depth > 0
        return self._vectors.current(may_save=not in_tx and not self.readonly, in_transaction=in_tx, dirty=in_tx and bool(self._pending_vectors))

    def search(self, vector: np.ndarray, k: int, *, exclude: Iterable[str] = ()) -> list[tuple[Sample, float]]:
        """The ``k`` samples whose embeddings are most similar (cosine) to ``vector``."""
        with self._lock:
            index = self._ensure_index()
            if len(index) == 0:
                return []
            try:
                hits = index.search(np.asarray(vector, dtype=np.float32), k, exclude=exclude)
            except ValueError as exc:
                raise StoreError(f"{self.uri}: {exc}") from exc
            samples = self.get_many([h[0] for h in hits])
        return [(s, sim) for s, (_, sim) in zip(samples, hits) if s is not None]

    @property
    def vector_index(self) -> VectorIndex:
        with self._lock:
            return self._ensure_index()

    # -------------------------------------------------------------------- writes

    def _record(self, action: str, sample_id: str, provenance: Provenance, reason: str, before: dict[str, Any] | None, after: dict[str, Any] | None, undoes: int | None = None) -> HistoryEntry:
        ts = time.time()
        cur = self._db.execute(
            "INSERT INTO history (ts, action, sample_id, provenance, reason, before, after, undoes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ts, action, sample_id, provenance.value, reason, None if before is None else json.dumps(before), None if after is None else json.dumps(after), undoes),
        )
        seq = int(cur.lastrowid or 0)
        if undoes is not None:
            self._db.execute("UPDATE history SET undone_by = ? WHERE seq = ?", (seq, undoes))
        return HistoryEntry(seq=seq, ts=ts, action=action, sample_id=sample_id, provenance=provenance, reason=reason, before=before, after=after, undoes=undoes)

    def _write_row(self, sample: Sample, deleted: bool, embedding: np.ndarray | bool | None) -> None:
        """Upsert a sample row. ``embedding=False`` keeps the stored embedding."""
        region = None if sample.region is None else json.dumps(to_dict(sample.region))
        meta = json.dumps(sample.meta, ensure_ascii=False, default=str)
        if embedding is False:
            self._db.execute(
                "INSERT INTO samples (id, uri, label, provenance, region, meta, deleted, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET uri=excluded.uri, label=excluded.label, provenance=excluded.provenance, region=excluded.region, meta=excluded.meta, deleted=excluded.deleted, updated=excluded.updated",
                (sample.id, sample.uri, sample.label, sample.provenance.value, region, meta, int(deleted), time.time()),
            )
            row = self._db.execute("SELECT embedding FROM samples WHERE id = ?", (sample.id,)).fetchone()
            if row is not None and row[0] is not None:
                self._pending_vectors.append((sample.id, None if deleted else np.frombuffer(row[0], dtype=np.float32)))
            return
        blob = None if embedding is None else np.ascontiguousarray(embedding, dtype=np.float32).tobytes()
        self._db.execute(
            "INSERT INTO samples (id, uri, label, provenance, region, meta, embedding, deleted, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET uri=excluded.uri, label=excluded.label, provenance=excluded.provenance, region=excluded.region, meta=excluded.meta, embedding=excluded.embedding, deleted=excluded.deleted, updated=excluded.updated",
            (sample.id, sample.uri, sample.label, sample.provenance.value, region, meta, blob, int(deleted), time.time()),
        )
        self._pending_vectors.append((sample.id, None if (deleted or embedding is None) else np.asarray(embedding, dtype=np.float32)))

    def _check_dim(self, sample: Sample) -> None:
        if sample.embedding is None:
            return
        row = self._db.execute("SELECT value FROM meta WHERE key = 'embedding_dim'").fetchone()
        dim = int(sample.embedding.shape[0])
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('embedding_dim', ?)", (str(dim),))
        elif int(row[0]) != dim:
            raise StoreError(f"{self.uri}: sample {sample.id!r} has a {dim}-d embedding; the store holds {row[0]}-d embeddings")

    @staticmethod
    def _may_replace(old: Sample, new_label: str | None, new_prov: Provenance, force: bool) -> bool:
        if force or old.label == new_label or old.label is None:
            return True
        return TRUST[new_prov] >= TRUST[old.provenance]

    def put(self, samples: Sequence[Sample], *, reason: str = "", force: bool = False, on_conflict: str = "raise") -> list[HistoryEntry]:
        """Add or update samples; one history entry per sample that changed.

        A sample whose label would replace one of higher trust (a user's label with
        an automatic one) is a conflict: ``on_conflict="raise"`` raises
        :class:`LabelConflict` and writes nothing; ``"skip"`` leaves that sample as it
        is, records the refusal in the history (action ``conflict``) and goes on.
        ``force=True`` overrides the trust rule (the change is still recorded).
        """
        if on_conflict not in ("raise", "skip"):
            raise ValueError(f"on_conflict must be 'raise' or 'skip', got {on_conflict!r}")
        entries: list[HistoryEntry] = []
        with self.transaction():
            for sample in samples:
                self._check_dim(sample)
                got = self._fetch(sample.id, include_deleted=True)
                if got is None or got[1]:
                    before = None if got is None else _state(got[0], deleted=True)
                    self._write_row(sample, False, sample.embedding)
                    entries.append(self._record("add", sample.id, sample.provenance, reason, before, _state(sample)))
                    continue
                old = got[0]
                if not self._may_replace(old, sample.label, sample.provenance, force):
                    msg = f"{self.uri}: sample {sample.id!r} has a {old.provenance.value} label {old.label!r}; a {sample.provenance.value} change to {sample.label!r} may not replace it"
                    if on_conflict == "raise":
                        raise LabelConflict(msg + " (use force to override)")
                    entries.append(self._record("conflict", sample.id, sample.provenance, reason or msg, _state(old), _state(old)))
                    continue
                same_vector = sample.embedding is None or (old.embedding is not None and np.array_equal(sample.embedding, old.embedding))
                if _state(old) == _state(sample) and same_vector:
                    continue  # nothing changed: no history noise
                # a sample given without an embedding keeps the stored one
                self._write_row(sample, False, False if sample.embedding is None else sample.embedding)
                if sample.uri != old.uri:  # other pixels: cached derived data is stale
                    self._db.execute("DELETE FROM artefacts WHERE sample_id = ?", (sample.id,))
                entries.append(self._record("update", sample.id, sample.provenance, reason, _state(old), _state(sample)))
        return entries

    def _require(self, sample_id: str) -> Sample:
        got = self._fetch(sample_id)
        if got is None:
            raise SampleNotFound(f"{self.uri}: no sample {sample_id!r}")
        return got[0]

    def relabel(self, sample_id: str, label: str, *, provenance: Provenance = Provenance.USER, reason: str = "", force: bool = False) -> HistoryEntry | None:
        """Change a sample's label (``None`` if it already had that label and provenance)."""
        provenance = Provenance(provenance)
        with self.transaction():
            old = self._require(sample_id)
            if old.label == label and old.provenance == provenance:
                return None
            if not self._may_replace(old, label, provenance, force):
                raise LabelConflict(
                    f"{self.uri}: sample {sample_id!r} has a {old.provenance.value} label {old.label!r}; a {provenance.value} relabel to {label!r} may not replace it (use force to override)"
                )
            new = attrs.evolve(old, label=label, provenance=provenance)
            self._write_row(new, False, False)
            return self._record("relabel", sample_id, provenance, reason, _state(old), _state(new))

    def set_region(self, sample_id: str, region: Region | None, *, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None:
        """Set (or clear) the region of a sample that shows the labelled object."""
        provenance = Provenance(provenance)
        with self.transaction():
            old = self._require(sample_id)
            if old.region == region:
                return None
            new = attrs.evolve(old, region=region)
            self._write_row(new, False, False)
            return self._record("region", sample_id, provenance, reason, _state(old), _state(new))

    def delete(self, sample_id: str, *, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None:
        """Hide a sample (undoable: the row, its embedding and artefacts are kept)."""
        provenance = Provenance(provenance)
        with self.transaction():
            old = self._require(sample_id)
            self._write_row(old, True, False)
            return self._record("delete", sample_id, provenance, reason, _state(old), _state(old, deleted=True))

    # ------------------------------------------------------------------- history

    def _row_to_entry(self, row: tuple[Any, ...]) -> HistoryEntry:
        seq, ts, action, sid, prov, reason, before, after, undoes, undone_by = row
        return HistoryEntry(
            seq=seq,
            ts=ts,
            action=action,
            sample_id=sid,
            provenance=prov,
            reason=reason,
            before=None if before is None else json.loads(before),
            after=None if after is None else json.loads(after),
            undoes=undoes,
            undone_by=undone_by,
        )

    def history(self, *, sample_id: str | None = None, limit: int | None = 50, newest_first: bool = True, since: int | None = None) -> list[HistoryEntry]:
        """Changes, newest first by default; optionally of one sample, or only those
        after entry ``since`` (to replay what changed since a snapshot)."""
        sql = "SELECT seq, ts, action, sample_id, provenance, reason, before, after, undoes, undone_by FROM history"
        where: list[str] = []
        args: list[Any] = []
        if sample_id is not None:
            where.append("sample_id = ?")
            args.append(sample_id)
        if since is not None:
            where.append("seq > ?")
            args.append(int(since))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq " + ("DESC" if newest_first else "ASC")
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            return [self._row_to_entry(r) for r in self._db.execute(sql, args)]

    def entry(self, seq: int) -> HistoryEntry:
        with self._lock:
            row = self._db.execute("SELECT seq, ts, action, sample_id, provenance, reason, before, after, undoes, undone_by FROM history WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise StoreError(f"{self.uri}: no history entry #{seq}")
        return self._row_to_entry(row)

    def undo(self, seq: int, *, force: bool = False) -> HistoryEntry:
        """Revert history entry ``seq``: the sample goes back to its state before it.

        Refuses (:class:`UndoConflict`) when a later change of the same sample is
        still in effect, unless ``force``; undoing an undo redoes the change.
        """
        with self.transaction():
            target = self.entry(seq)
            if target.undone_by is not None:
                raise UndoConflict(f"{self.uri}: history entry #{seq} was already undone by #{target.undone_by}")
            if target.action == "conflict":
                raise UndoConflict(f"{self.uri}: history entry #{seq} records a refused change; there is nothing to undo")
            if _is_alias_state(target.before) or _is_alias_state(target.after):
                return self._undo_alias(target, force=force)  # aliases live in their own table
            later = self._db.execute(
                # later changes still in effect; an undo of an even later change cancels out
                "SELECT seq FROM history WHERE sample_id = ? AND seq > ? AND undone_by IS NULL AND action != 'conflict' AND NOT (undoes IS NOT NULL AND undoes >= ?) ORDER BY seq",
                (target.sample_id, seq, seq),
            ).fetchall()
            if later and not force:
                raise UndoConflict(f"{self.uri}: sample {target.sample_id!r} changed again after #{seq} (#{', #'.join(str(r[0]) for r in later)}); undo those first or force")
            current = self._fetch(target.sample_id, include_deleted=True)
            cur_state = None if current is None else _state(current[0], deleted=current[1])
            before = target.before
            if before is None:  # undo an add: hide the sample, keep its data
                if current is not None:
                    self._write_row(current[0], True, False)
                after_state = None if current is None else _state(current[0], deleted=True)
            else:
                restored = from_dict(Sample, {k: v for k, v in before.items() if k != "deleted"})
                self._write_row(restored, bool(before.get("deleted", False)), False)
                after_state = before
            return self._record("undo", target.sample_id, Provenance.USER, f"undo #{seq} ({target.action})", cur_state, after_state, undoes=seq)

    # ----------------------------------------------------------------- artefacts

    def put_artefact(self, sample_id: str, kind: str, data: bytes) -> None:
        """Cache derived data of a sample (features, answers); replaced if present."""
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO artefacts VALUES (?, ?, ?, ?)", (sample_id, kind, sqlite3.Binary(data), time.time()))

    def get_artefact(self, sample_id: str, kind: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM artefacts WHERE sample_id = ? AND kind = ?", (sample_id, kind)).fetchone()
        return None if row is None else bytes(row[0])

    def artefact_kinds(self) -> dict[str, int]:
        with self._lock:
            return {k: n for k, n in self._db.execute("SELECT kind, COUNT(*) FROM artefacts GROUP BY kind ORDER BY kind")}

    def delete_artefacts(self, kind: str, sample_id: str | None = None) -> int:
        """Drop cached artefacts (they are derived data: recomputed when needed)."""
        with self.transaction():
            if sample_id is None:
                cur = self._db.execute("DELETE FROM artefacts WHERE kind = ?", (kind,))
            else:
                cur = self._db.execute("DELETE FROM artefacts WHERE kind = ? AND sample_id = ?", (kind, sample_id))
            return cur.rowcount

    def stats(self) -> dict[str, Any]:
        """Counts for ``consist store info``-style summaries."""
        with self._lock:
            n_all, n_live = self._db.execute("SELECT COUNT(*), COALESCE(SUM(deleted = 0), 0) FROM samples").fetchone()
            n_vec = self._db.execute("SELECT COUNT(*) FROM samples WHERE deleted = 0 AND embedding IS NOT NULL").fetchone()[0]
            n_hist = self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]
            prov = dict(self._db.execute("SELECT provenance, COUNT(*) FROM samples WHERE deleted = 0 GROUP BY provenance").fetchall())
        return {
            "uri": self.uri,
            "samples": int(n_live),
            "deleted": int(n_all - n_live),
            "embeddings": int(n_vec),
            "history": int(n_hist),
            "provenance": prov,
            "labels": len(self.labels()),
            "artefacts": self.artefact_kinds(),
        }

    # -------------------------------------------------- aliases and notes (added)
    # Personal names for labels ("Bluey" -> "mug_blue") live in their own table,
    # created on first use so that older stores need no migration; every change is
    # a history entry (action ``alias``/``unalias``, sample id ``alias:<name>``,
    # before/after ``{"kind": "alias", ...}``) that ``undo`` reverts.

    def aliases(self) -> dict[str, str]:
        """Alias (as written) -> canonical label; empty when none was ever set."""
        with self._lock:  # one indexed read of a small table (~20 us): not worth a cache
            try:
                return {d: lab for d, lab in self._db.execute("SELECT display, label FROM aliases ORDER BY name")}
            except sqlite3.OperationalError:  # no alias table yet
                return {}

    def _alias_state(self, key: str) -> dict[str, Any] | None:
        try:
            row = self._db.execute("SELECT display, label, provenance FROM aliases WHERE name = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else {"kind": "alias", "name": row[0], "label": row[1], "provenance": row[2]}

    def _write_alias(self, key: str, state: dict[str, Any] | None) -> None:
        self._db.execute(_ALIAS_SCHEMA)
        if state is None:
            self._db.execute("DELETE FROM aliases WHERE name = ?", (key,))
        else:
            self._db.execute(
                "INSERT INTO aliases VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET display=excluded.display, label=excluded.label, provenance=excluded.provenance, updated=excluded.updated",
                (key, state["name"], state["label"], state["provenance"], time.time()),
            )

    def set_alias(self, name: str, label: str, *, provenance: Provenance = Provenance.USER, reason: str = "", force: bool = False) -> HistoryEntry | None:
        """Make ``name`` another name of ``label`` (``None`` if it already was).

        An alias may not shadow a label that samples carry (it would make that label
        unreachable), and may not replace an alias of higher trust, unless ``force``.
        """
        provenance = Provenance(provenance)
        key = _alias_key(name)
        if not label:
            raise ValueError("an alias needs a label")
        with self.transaction():
            old = self._alias_state(key)
            if old is not None and old["label"] == label and old["name"] == name:
                return None
            if not force and key != _alias_key(label):
                from consist.aliases import normalise

                clash = [lab for lab in self.labels() if normalise(lab) == key]
                if clash:
                    raise LabelConflict(f"{self.uri}: {name!r} is already a label ({clash[0]!r}) of {self.labels()[clash[0]]} sample(s); an alias may not hide it (use force to override)")
            if old is not None and not force and TRUST[provenance] < TRUST[Provenance(old["provenance"])]:
                raise LabelConflict(f"{self.uri}: alias {old['name']!r} -> {old['label']!r} was set by {old['provenance']}; a {provenance.value} change may not replace it (use force to override)")
            new = {"kind": "alias", "name": name, "label": label, "provenance": provenance.value}
            self._write_alias(key, new)
            return self._record("alias", ALIAS_KEY_PREFIX + key, provenance, reason, old, new)

    def remove_alias(self, name: str, *, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None:
        """Forget an alias (``None`` if there was none); undoable."""
        provenance = Provenance(provenance)
        key = _alias_key(name)
        with self.transaction():
            old = self._alias_state(key)
            if old is None:
                return None
            self._write_alias(key, None)
            return self._record("unalias", ALIAS_KEY_PREFIX + key, provenance, reason, old, None)

    def _undo_alias(self, target: HistoryEntry, *, force: bool) -> HistoryEntry:
        seq = target.seq
        later = self._db.execute(
            "SELECT seq FROM history WHERE sample_id = ? AND seq > ? AND undone_by IS NULL AND action != 'conflict' AND NOT (undoes IS NOT NULL AND undoes >= ?) ORDER BY seq",
            (target.sample_id, seq, seq),
        ).fetchall()
        if later and not force:
            raise UndoConflict(f"{self.uri}: {target.sample_id!r} changed again after #{seq} (#{', #'.join(str(r[0]) for r in later)}); undo those first or force")
        key = target.sample_id[len(ALIAS_KEY_PREFIX) :]
        current = self._alias_state(key)
        self._write_alias(key, target.before)
        return self._record("undo", target.sample_id, Provenance.USER, f"undo #{seq} ({target.action})", current, target.before, undoes=seq)

    def annotate(self, sample_id: str, *, note: str | None = None, attributes: dict[str, Any] | None = None, provenance: Provenance = Provenance.USER, reason: str = "") -> HistoryEntry | None:
        """Add a note and/or attributes to a sample's ``meta`` (``meta["notes"]``: a
        list of ``{"text", "provenance", "ts"}``; ``meta["attributes"]``: a dict).
        Recorded as a ``note`` history entry and undoable like any sample change."""
        provenance = Provenance(provenance)
        if not note and not attributes:
            return None
        with self.transaction():
            old = self._require(sample_id)
            meta = dict(old.meta)
            if note:
                meta["notes"] = [*meta.get("notes", []), {"text": note, "provenance": provenance.value, "ts": round(time.time(), 3)}]
            if attributes:
                merged = {**meta.get("attributes", {}), **attributes}
                if merged == meta.get("attributes") and not note:
                    return None
                meta["attributes"] = merged
            new = attrs.evolve(old, meta=meta)
            self._write_row(new, False, False)
            return self._record("note", sample_id, provenance, reason, _state(old), _state(new))

    # ------------------------------------------------------------ copying out/in
    # ``consist store copy`` (consist/stores/copy.py) moves a store's rows as they
    # are: samples with their deleted flag, the history with its seq numbers (so that
    # ``consist undo`` works in the copy), artefacts and aliases.

    def sample_pages(self, *, label: str | None = None, include_deleted: bool = True, page: int = 1000) -> Iterator[list[tuple[Sample, bool]]]:
        """``(sample, deleted)`` in pages of ``page`` rows, in the order first stored."""
        where = ["rowid > ?"] + ([] if include_deleted else ["deleted = 0"])
        base: list[Any] = []
        if label is not None:
            where.append("label = ?")
            base.append(label)
        sql = f"SELECT rowid, {_SAMPLE_COLS} FROM samples WHERE {' AND '.join(where)} ORDER BY rowid LIMIT {int(page)}"
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(sql, [last, *base]).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [(self._row_to_sample(r[1:]), bool(r[-1])) for r in rows]

    def artefact_rows(self) -> Iterator[tuple[str, str, bytes]]:
        """Every artefact as ``(sample_id, kind, data)``, in key order."""
        last: tuple[str, str] | None = None
        while True:
            with self._lock:
                if last is None:
                    rows = self._db.execute("SELECT sample_id, kind, data FROM artefacts ORDER BY sample_id, kind LIMIT 500").fetchall()
                else:
                    rows = self._db.execute("SELECT sample_id, kind, data FROM artefacts WHERE (sample_id, kind) > (?, ?) ORDER BY sample_id, kind LIMIT 500", last).fetchall()
            if not rows:
                return
            last = (rows[-1][0], rows[-1][1])
            for sid, kind, data in rows:
                yield sid, kind, bytes(data)

    def alias_rows(self) -> list[tuple[str, str, str, str]]:
        """Every alias as ``(key, display, label, provenance)``."""
        with self._lock:
            try:
                return [(a, b, c, d) for a, b, c, d in self._db.execute("SELECT name, display, label, provenance FROM aliases ORDER BY name")]
            except sqlite3.OperationalError:  # no alias table yet
                return []

    def is_empty(self) -> bool:
        """True when the store holds no sample, history entry, artefact or alias."""
        with self._lock:
            busy = self._db.execute("SELECT EXISTS (SELECT 1 FROM samples) OR EXISTS (SELECT 1 FROM history) OR EXISTS (SELECT 1 FROM artefacts)").fetchone()[0]
        return not busy and not self.alias_rows()

    def restore(
        self,
        samples: Iterable[Sequence[tuple[Sample, bool]]],
        history: Iterable[Sequence[HistoryEntry]],
        artefacts: Iterable[tuple[str, str, bytes]],
        aliases: Sequence[tuple[str, str, str, str]],
        *,
        progress: Callable[[str, int], None] | None = None,
    ) -> None:
        """Write another store's rows as they are (``seq`` numbers kept), inside the
        caller's :meth:`transaction`; used by :func:`consist.stores.copy.copy_store`."""
        if self._tx_depth == 0:
            raise StoreError(f"{self.uri}: restore() must run inside store.transaction()")
        dim: int | None = None
        n = 0
        for page in samples:
            rows = []
            for s, deleted in page:
                if s.embedding is not None and dim is None:
                    dim = int(s.embedding.shape[0])
                emb = None if s.embedding is None else np.ascontiguousarray(s.embedding, dtype=np.float32).tobytes()
                region = None if s.region is None else json.dumps(to_dict(s.region))
                rows.append((s.id, s.uri, s.label, s.provenance.value, region, json.dumps(s.meta, ensure_ascii=False, default=str), emb, int(deleted), time.time()))
            self._db.executemany("INSERT INTO samples (id, uri, label, provenance, region, meta, embedding, deleted, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            n += len(rows)
            if progress:
                progress("samples", n)
        n = 0
        for hpage in history:
            self._db.executemany(
                "INSERT INTO history (seq, ts, action, sample_id, provenance, reason, before, after, undoes, undone_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.seq, e.ts, e.action, e.sample_id, e.provenance.value, e.reason,
                     None if e.before is None else json.dumps(e.before), None if e.after is None else json.dumps(e.after), e.undoes, e.undone_by)
                    for e in hpage
                ],
            )  # fmt: skip
            n += len(hpage)
            if progress:
                progress("history", n)
        for n, (sid, kind, data) in enumerate(artefacts, 1):
            self._db.execute("INSERT INTO artefacts VALUES (?, ?, ?, ?)", (sid, kind, sqlite3.Binary(data), time.time()))
            if progress and n % 200 == 0:
                progress("artefacts", n)
        if aliases:
            self._db.execute(_ALIAS_SCHEMA)
            self._db.executemany("INSERT INTO aliases VALUES (?, ?, ?, ?, ?)", [(*a, time.time()) for a in aliases])
        if dim is not None:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('embedding_dim', ?)", (str(dim),))
        self._pending_vectors.append(("", None))  # bump vectors_version at commit


class _SqliteVectorSource:
    """What :class:`PersistentIndex` reads and writes, in SQLite (the snapshot lives
    in a ``vector_snapshot`` table of the store file, created on first save)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def version(self) -> int:
        return self.store._vectors_version()

    @contextmanager
    def _snapshot_read(self) -> Iterator[None]:
        """One read transaction (a consistent snapshot in WAL mode), unless inside the
        caller's write transaction, which sees its own writes."""
        db = self.store._db
        if self.store._tx_depth > 0 or db.in_transaction:
            yield
            return
        db.execute("BEGIN")
        try:
            yield
        finally:
            if db.in_transaction:
                db.execute("COMMIT")

    def read_all(self) -> VectorRead:
        db = self.store._db
        with self._snapshot_read():
            version = self.store._vectors_version()
            seq = int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM history").fetchone()[0])
            count = int(db.execute("SELECT COUNT(*) FROM samples WHERE deleted = 0 AND embedding IS NOT NULL").fetchone()[0])
            return VectorRead.from_stream(version, seq, count, db.execute("SELECT id, embedding FROM samples WHERE deleted = 0 AND embedding IS NOT NULL ORDER BY rowid"))

    def read_changes(self, since: int) -> VectorRead:
        db = self.store._db
        with self._snapshot_read():
            version = self.store._vectors_version()
            seq = int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM history").fetchone()[0])
            rows = db.execute(
                "SELECT id, CASE WHEN deleted THEN NULL ELSE embedding END FROM samples WHERE id IN "
                "(SELECT DISTINCT sample_id FROM history WHERE seq > ? AND action != 'conflict' AND sample_id NOT LIKE 'alias:%')",
                (since,),
            ).fetchall()
        return VectorRead.from_blobs(version, seq, [r[0] for r in rows], [r[1] for r in rows], changes=True)

    def count_changes(self, since: int) -> int:
        return int(self.store._db.execute("SELECT COUNT(*) FROM history WHERE seq > ?", (since,)).fetchone()[0])

    def load_snapshot(self) -> list[bytes]:
        db = self.store._db
        with self._snapshot_read():
            try:
                return [bytes(r[0]) for r in db.execute("SELECT data FROM vector_snapshot ORDER BY part")]
            except sqlite3.OperationalError:  # never saved
                return []

    def save_snapshot(self, parts: Sequence[bytes], replace: Callable[[list[bytes] | None], bool]) -> bool:
        s = self.store
        try:
            with s.transaction():
                s._db.execute("CREATE TABLE IF NOT EXISTS vector_snapshot (part INTEGER PRIMARY KEY, data BLOB NOT NULL)")
                head = s._db.execute("SELECT data FROM vector_snapshot WHERE part = 0").fetchone()
                if not replace(None if head is None else [bytes(head[0])]):
                    return False
                s._db.execute("DELETE FROM vector_snapshot")
                s._db.executemany("INSERT INTO vector_snapshot VALUES (?, ?)", [(i, sqlite3.Binary(p)) for i, p in enumerate(parts)])
        except StoreError as exc:  # a cache: failing to save it costs the next process time, nothing else
            log.warning("vector_snapshot_not_saved", store=s.uri, error=str(exc))
            return False
        return True
