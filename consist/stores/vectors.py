"""In-memory vector search over sample embeddings: exact for small stores, IVF above.

Vectors are L2-normalised on insert, so the similarity is the cosine. Exact search is
one matrix-vector product (numpy/BLAS); above ``ann_threshold`` vectors an inverted
file (faiss ``IndexIVFFlat``, inner product) answers instead: ``sqrt(n)`` k-means
lists trained on a sample of the vectors, of which the nearest ``probe_fraction``
(at least ``min_probes``) are scanned exactly per query. It is built on first
search (seconds at 100k), updated incrementally (adding a vector is assigning it to
a list: microseconds), and retrained when the index has grown ``retrain_growth``
times since training. Exact search is the reference: the approximate path's recall
against it is measured in ``benchmarks/bench_store.py``.

Why IVF rather than HNSW: on this project's 2-core machines an HNSW graph of 100k
512-d vectors took minutes to build and ~2 ms per incremental insert (usearch), which
made reopening a large store and adapting it slow; IVF builds in seconds, inserts
cheaply, and its recall is tuned with one number (``probe_fraction``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
import numpy as np
import structlog

__all__ = [
    "DEFAULT_ANN_THRESHOLD",
    "DEFAULT_MIN_PROBES",
    "DEFAULT_PROBE_FRACTION",
    "DEFAULT_SNAPSHOT_MIN",
    "PersistentIndex",
    "VectorIndex",
    "VectorRead",
    "VectorSource",
    "decode_snapshot",
    "encode_snapshot",
    "normalise",
]

log = structlog.get_logger("consist.store")

#: Below this many vectors, exact search is both fast enough (the target is < 20 ms
#: per query at 100k x 512 on one core; exact takes ~3 ms at 10k, ~6 ms at 20k) and exact.
DEFAULT_ANN_THRESHOLD = 20_000
#: Share of the inverted lists scanned per query (recall/speed trade-off).
DEFAULT_PROBE_FRACTION = 0.06
#: Scan at least this many lists.
DEFAULT_MIN_PROBES = 8


def normalise(vec: np.ndarray) -> np.ndarray:
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class VectorIndex:
    """Id-addressed vectors with exact or approximate (IVF) top-k search."""

    def __init__(
        self, dim: int | None = None, *, ann_threshold: int = DEFAULT_ANN_THRESHOLD, probe_fraction: float = DEFAULT_PROBE_FRACTION, min_probes: int = DEFAULT_MIN_PROBES, retrain_growth: float = 4.0
    ) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.probe_fraction = probe_fraction
        self.min_probes = min_probes
        self.retrain_growth = retrain_growth
        self._trained_at = 0  # live vectors when the IVF was trained
        self._ids: list[str | None] = []
        self._pos: dict[str, int] = {}
        self._mat = np.zeros((0, dim or 0), dtype=np.float32)
        self._n = 0  # rows used in _mat (deleted rows are zeroed and their id None)
        self._live = 0
        self._ann: Any = None  # faiss.IndexIVFFlat, ids = row numbers

    def __len__(self) -> int:
        return self._live

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._pos

    def _grow(self, extra: int) -> None:
        need = self._n + extra
        if need <= self._mat.shape[0]:
            return
        cap = max(need, 2 * self._mat.shape[0], 1024)
        mat = np.zeros((cap, self.dim or 0), dtype=np.float32)
        mat[: self._n] = self._mat[: self._n]
        self._mat = mat

    def add(self, ids: Sequence[str], vectors: np.ndarray | Iterable[np.ndarray]) -> None:
        """Add or replace vectors (one row per id)."""
        vecs = np.asarray(list(vectors) if not isinstance(vectors, np.ndarray) else vectors, dtype=np.float32)
        if len(ids) == 0:
            return
        if vecs.ndim != 2 or vecs.shape[0] != len(ids):
            raise ValueError(f"need one vector per id: {len(ids)} ids, array of shape {vecs.shape}")
        if self.dim is None:
            self.dim = int(vecs.shape[1])
            self._mat = np.zeros((0, self.dim), dtype=np.float32)
        if vecs.shape[1] != self.dim:
            raise ValueError(f"vectors have {vecs.shape[1]} dimensions, the index holds {self.dim}")
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)
        self.remove([i for i in ids if i in self._pos])
        self._grow(len(ids))
        start = self._n
        self._mat[start : start + len(ids)] = vecs
        for j, sid in enumerate(ids):
            self._pos[sid] = start + j
            self._ids.append(sid)
        self._n += len(ids)
        self._live += len(ids)
        if self._ann is not None:
            self._ann.add_with_ids(vecs, np.arange(start, start + len(ids), dtype=np.int64))

    def adopt(self, ids: Sequence[str], matrix: np.ndarray) -> None:
        """Fill this empty index with ``matrix`` (float32, C-ordered, one row per
        distinct id), normalised in place and kept without a copy: building from a
        store's rows then holds one matrix in memory instead of three. The result is
        the one :meth:`add` gives."""
        if self._n or matrix.dtype != np.float32 or not matrix.flags.c_contiguous or not matrix.flags.writeable or len(set(ids)) != len(ids):
            self.add(ids, matrix)
            return
        if len(ids) != matrix.shape[0] or matrix.ndim != 2:
            raise ValueError(f"need one vector per id: {len(ids)} ids, array of shape {matrix.shape}")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        np.divide(matrix, norms, out=matrix, where=norms > 0)
        self.dim = int(matrix.shape[1])
        self._mat = matrix
        self._ids = list(ids)
        self._pos = {sid: r for r, sid in enumerate(ids)}
        self._n = self._live = len(ids)

    def remove(self, ids: Iterable[str]) -> None:
        rows = [self._pos.pop(i) for i in ids if i in self._pos]
        for r in rows:
            self._ids[r] = None
            self._mat[r] = 0.0
        self._live -= len(rows)
        if self._ann is not None and rows:
            self._ann.remove_ids(np.asarray(rows, dtype=np.int64))

    def holds(self, sample_id: str, vector: np.ndarray) -> bool:
        """True when ``sample_id`` is indexed with exactly this vector (once normalised)."""
        r = self._pos.get(sample_id)
        if r is None:
            return False
        v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        return bool(np.array_equal(self._mat[r], np.divide(v, n, out=np.zeros_like(v), where=n > 0)[0]))

    def prepare(self) -> None:
        """Build the IVF now if searches will use it (before saving a snapshot)."""
        if self.uses_ann and (self._ann is None or self._live > self.retrain_growth * max(self._trained_at, 1)):
            self._build_ann()

    def _state(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The used rows of the matrix and, when an IVF is built, its centroids and
        each row's list (-1: not in the IVF). Not the serialised IVF: an IVF-Flat
        holds a second copy of every vector, which would double what is saved and read."""
        mat = np.ascontiguousarray(self._mat[: self._n])
        if self._ann is None:
            return mat, None, None
        import faiss

        ann = self._ann
        assign = np.full(self._n, -1, dtype=np.int32)
        for lst in range(ann.nlist):
            size = ann.invlists.list_size(lst)
            if size:
                assign[faiss.rev_swig_ptr(ann.invlists.get_ids(lst), size)] = lst
        centroids = np.ascontiguousarray(ann.quantizer.reconstruct_n(0, ann.nlist), dtype=np.float32)
        return mat, centroids, assign

    def _load_state(self, dim: int | None, ids: list[str | None], mat: np.ndarray | None, trained_at: int, centroids: np.ndarray | None, assign: np.ndarray | None) -> None:
        """Become the index :meth:`_state` described (``ids``: ``None`` for removed
        rows). The IVF is rebuilt from its centroids and the rows' lists: no training,
        no assignment, and the same lists in the same order as the saved one."""
        self.dim = dim
        self._ids = list(ids)
        self._pos = {sid: r for r, sid in enumerate(ids) if sid is not None}
        self._n = len(ids)
        self._live = len(self._pos)
        self._mat = mat if mat is not None else np.zeros((0, dim or 0), dtype=np.float32)
        self._trained_at = trained_at
        self._ann = None
        if centroids is not None and assign is not None and dim:
            import faiss

            quantizer = faiss.IndexFlatIP(dim)
            quantizer.add(centroids)
            ann = faiss.IndexIVFFlat(quantizer, dim, int(centroids.shape[0]), faiss.METRIC_INNER_PRODUCT)
            ann.is_trained = True
            rows = np.flatnonzero(assign >= 0).astype(np.int64)
            vecs = self._mat if len(rows) == self._n else np.ascontiguousarray(self._mat[rows])  # no copy in the usual case
            lists = assign[rows].astype(np.int64)
            ann.add_core(len(rows), faiss.swig_ptr(vecs), faiss.swig_ptr(rows), faiss.swig_ptr(lists))
            ann.nprobe = max(self.min_probes, int(round(self.probe_fraction * ann.nlist)))
            self._ann = ann

    def vector(self, sample_id: str) -> np.ndarray | None:
        r = self._pos.get(sample_id)
        return None if r is None else self._mat[r].copy()

    @property
    def uses_ann(self) -> bool:
        return self._live >= self.ann_threshold

    def _build_ann(self) -> None:
        import faiss

        rows = np.asarray([r for r in range(self._n) if self._ids[r] is not None], dtype=np.int64)
        vecs = self._mat[rows]
        nlist = int(min(max(16, round(len(rows) ** 0.5)), 65536, max(1, len(rows) // 39)))
        rng = np.random.default_rng(0)  # deterministic training sample
        sample = vecs if len(vecs) <= 40 * nlist else vecs[rng.choice(len(vecs), 40 * nlist, replace=False)]
        assert self.dim is not None  # set by the first add, and the ANN is built only over added vectors
        quantizer = faiss.IndexFlatIP(self.dim)
        ann = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ann.cp.niter = 10
        ann.cp.seed = 0
        ann.train(np.ascontiguousarray(sample))
        ann.add_with_ids(np.ascontiguousarray(vecs), rows)
        ann.nprobe = max(self.min_probes, int(round(self.probe_fraction * nlist)))
        self._ann = ann
        self._trained_at = len(rows)

    def search(self, query: np.ndarray, k: int, *, exclude: Iterable[str] = (), exact: bool | None = None) -> list[tuple[str, float]]:
        """Top-``k`` ``(id, cosine)`` pairs, best first; ``exclude`` ids never appear."""
        if self._live == 0 or k <= 0:
            return []
        q = normalise(query)
        if q.shape[0] != self.dim:
            raise ValueError(f"query has {q.shape[0]} dimensions, the index holds {self.dim}")
        excluded = set(exclude)
        want = min(k + len(excluded), self._live)
        use_ann = (not exact) if exact is not None else self.uses_ann
        if use_ann:
            if self._ann is None or self._live > self.retrain_growth * max(self._trained_at, 1):
                self._build_ann()
            assert self._ann is not None
            sims_, rows_ = self._ann.search(q.reshape(1, -1), want)
            pairs = [(self._ids[int(r)], float(d)) for r, d in zip(rows_[0], sims_[0]) if r >= 0]
        else:
            sims = self._mat[: self._n] @ q
            rows = min(want + (self._n - self._live), self._n)  # removed rows (zeros) may rank first
            if rows < self._n:
                top = np.argpartition(-sims, rows - 1)[:rows]
            else:
                top = np.arange(self._n)
            top = top[np.argsort(-sims[top], kind="stable")]
            pairs = [(self._ids[int(r)], float(sims[r])) for r in top]
        out = [(sid, s) for sid, s in pairs if sid is not None and sid not in excluded]
        return out[:k]


# ------------------------------------------------------------- persisted index
#
# Why: every process used to rebuild the index from all embeddings on its first
# search (3.9 s at 100k x 512: reading the rows, normalising, training the IVF), and
# again whenever another process had written. A store now keeps a snapshot of the
# index (the normalised matrix, the ids and the trained IVF) together with the
# newest history ``seq`` it reflects; a process loads it and applies only the
# samples the history names after that ``seq``, and follows other processes' writes
# the same way (the history is the change log: every change of an embedding or of
# the deleted flag is a history entry).

#: Persist the index once it holds at least this many vectors: below, rebuilding it
#: from the rows takes ~0.1 s (exact search, no IVF to train) and a snapshot saves
#: little (measured at 10k: SQLite 0.09 -> 0.05 s, PostgreSQL none) for the disk it
#: costs; above, the IVF's training is what a snapshot saves most.
DEFAULT_SNAPSHOT_MIN = DEFAULT_ANN_THRESHOLD
#: Save a new snapshot when the vectors changed since the saved one exceed this share
#: of the index (or 1000, whichever is larger): loading then replays little.
DEFAULT_RESAVE_FRACTION = 0.1
#: Snapshot part size: rows of at most this many bytes (PostgreSQL ``bytea`` and
#: SQLite blobs stay far below their 1 GB limits at any store size).
SNAPSHOT_PART_BYTES = 32 << 20
_SNAPSHOT_FORMAT = 2


@attrs.frozen
class VectorRead:
    """What a store read in one consistent snapshot: the ``vectors_version`` and the
    newest history ``seq`` at that moment, and vectors (all of them, or only those
    of samples changed since a ``seq``: then ``removed`` lists the changed samples
    that are deleted or have no embedding)."""

    version: int
    seq: int
    ids: list[str]
    vectors: np.ndarray | None
    removed: list[str] = attrs.field(factory=list)

    @classmethod
    def from_blobs(cls, version: int, seq: int, ids: Sequence[str], blobs: Sequence[bytes | memoryview | None], *, changes: bool = False) -> VectorRead:
        keep = [(i, b) for i, b in zip(ids, blobs) if b is not None]
        removed = [i for i, b in zip(ids, blobs) if b is None] if changes else []
        if not keep:
            return cls(version, seq, [], None, removed)
        mat = np.frombuffer(b"".join(bytes(b) for _, b in keep), dtype=np.float32).reshape(len(keep), -1)
        return cls(version, seq, [i for i, _ in keep], mat, removed)

    @classmethod
    def from_stream(cls, version: int, seq: int, count: int, rows: Iterable[tuple[str, bytes | memoryview]]) -> VectorRead:
        """All vectors, streamed row by row into one preallocated matrix (``count``:
        the number of rows, read in the same snapshot)."""
        ids: list[str] = []
        mat: np.ndarray | None = None
        for sid, blob in rows:
            v = np.frombuffer(blob, dtype=np.float32)
            if mat is None:
                mat = np.empty((max(count, 1), v.shape[0]), dtype=np.float32)
            if len(ids) == mat.shape[0]:  # more rows than counted (cannot happen in one snapshot): grow
                mat = np.concatenate([mat, np.empty_like(mat)])
            mat[len(ids)] = v
            ids.append(sid)
        return cls(version, seq, ids, None if mat is None else mat[: len(ids)])


class VectorSource(Protocol):
    """What :class:`PersistentIndex` needs from a store (each back-end has one)."""

    def version(self) -> int:
        """The store's ``vectors_version`` (bumped by every commit that changed vectors)."""
        ...

    def read_all(self) -> VectorRead: ...

    def read_changes(self, since: int) -> VectorRead:
        """Current vectors of the samples named by history entries after ``since``."""
        ...

    def count_changes(self, since: int) -> int: ...

    def load_snapshot(self) -> list[bytes]:
        """The saved snapshot's parts (empty when none)."""
        ...

    def save_snapshot(self, parts: Sequence[bytes], replace: Callable[[list[bytes] | None], bool]) -> bool:
        """In one write transaction: ask ``replace(head)`` (``head``: the saved
        snapshot's part 0, ``None`` when there is none) whether to replace it, and do;
        ``False`` when not saved (also when the store is busy: it is a cache)."""
        ...


def encode_snapshot(index: VectorIndex, seq: int) -> list[bytes]:
    """Part 0: a JSON header (``seq``, ids, sizes); then the matrix, and the IVF's
    centroids and row lists when it has one, in parts of :data:`SNAPSHOT_PART_BYTES`."""
    mat, centroids, assign = index._state()
    nlist = 0 if centroids is None else int(centroids.shape[0])
    payload = memoryview(b"".join([mat.tobytes(), b"" if centroids is None else centroids.tobytes(), b"" if assign is None else assign.tobytes()]))
    head = {"format": _SNAPSHOT_FORMAT, "seq": int(seq), "dim": index.dim, "rows": int(mat.shape[0]), "ids": index._ids[: index._n], "trained_at": index._trained_at, "nlist": nlist}
    return [json.dumps(head, separators=(",", ":")).encode()] + [bytes(payload[i : i + SNAPSHOT_PART_BYTES]) for i in range(0, len(payload), SNAPSHOT_PART_BYTES)]


def snapshot_seq(parts: list[bytes]) -> int | None:
    """The ``seq`` a snapshot reflects (from its header alone), ``None`` if unreadable."""
    try:
        head = json.loads(parts[0])
        return int(head["seq"]) if head.get("format") == _SNAPSHOT_FORMAT else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def decode_snapshot(parts: list[bytes], index: VectorIndex) -> int | None:
    """Fill the empty ``index`` from a snapshot; returns its ``seq`` (``None``, index
    untouched, when the snapshot is unreadable or of another format)."""
    seq = snapshot_seq(parts)
    if seq is None:
        return None
    head = json.loads(parts[0])
    rows, dim, nlist = int(head["rows"]), int(head["dim"] or 0), int(head["nlist"])
    size = rows * dim * 4
    total = size + (nlist * dim * 4 + rows * 4 if nlist else 0)
    if sum(len(p) for p in parts[1:]) != total or len(head["ids"]) != rows:
        return None
    payload = np.empty(total, dtype=np.uint8)  # one copy, writable (the index zeroes removed rows)
    at = 0
    for part in parts[1:]:
        payload[at : at + len(part)] = np.frombuffer(part, dtype=np.uint8)
        at += len(part)
    mat = payload[:size].view(np.float32).reshape(rows, dim) if dim else None
    centroids = assign = None
    if nlist:
        centroids = payload[size : size + nlist * dim * 4].view(np.float32).reshape(nlist, dim)
        assign = payload[size + nlist * dim * 4 :].view(np.int32)
    index._load_state(head["dim"], head["ids"], mat, int(head["trained_at"]), centroids, assign)
    return seq


class PersistentIndex:
    """A store's :class:`VectorIndex`, loaded from its snapshot and kept current by
    replaying the history (see the comment above :data:`DEFAULT_SNAPSHOT_MIN`).

    :meth:`current` costs one small read (``vectors_version``) when nothing changed.
    ``snapshot_min`` (default :data:`DEFAULT_SNAPSHOT_MIN`) is the size from which a
    snapshot is saved; ``resave_fraction`` (default :data:`DEFAULT_RESAVE_FRACTION`)
    when a newer one replaces it.
    """

    def __init__(self, source: VectorSource, *, ann_threshold: int = DEFAULT_ANN_THRESHOLD, snapshot_min: int = DEFAULT_SNAPSHOT_MIN, resave_fraction: float = DEFAULT_RESAVE_FRACTION) -> None:
        self.source = source
        self.ann_threshold = ann_threshold
        self.snapshot_min = snapshot_min
        self.resave_fraction = resave_fraction
        self.index = VectorIndex(ann_threshold=ann_threshold)
        self.version: int | None = None  # vectors_version the index reflects
        self.seq: int | None = None  # newest history entry the index reflects
        self.unsaved: float = math.inf  # vectors changed since the saved snapshot
        self.loaded_from: str = ""  # "snapshot" or "rows": how this process got it
        self._in_tx = False

    def reset(self) -> None:
        """Forget the in-memory index (the next :meth:`current` loads it again)."""
        self.index = VectorIndex(ann_threshold=self.ann_threshold)
        self.version = self.seq = None
        self.unsaved = math.inf

    def transaction_ended(self, committed: bool) -> None:
        """A store calls this when its write transaction ends: an index refreshed
        inside a transaction that was rolled back holds vectors that never were."""
        if self._in_tx and not committed:
            self.reset()
        self._in_tx = False

    def current(self, *, may_save: bool = True, in_transaction: bool = False, dirty: bool = False) -> VectorIndex:
        """The index as of the store's newest committed state or, inside a write
        transaction, its own state (``dirty``: the transaction changed vectors, which
        ``vectors_version`` does not show before the commit). ``may_save``: a
        snapshot may be written now (never inside a transaction or on a read-only
        store)."""
        self._in_tx = self._in_tx or in_transaction
        version = self.source.version()
        if self.seq is not None and version == self.version and not dirty:
            return self.index
        if self.seq is None:
            self._load_or_build()
        elif self.source.count_changes(self.seq) > max(1000, len(self.index)):
            self._build()  # most of the store changed: reading it all is cheaper
        else:
            self._apply(self.source.read_changes(self.seq))
        if may_save and not in_transaction and len(self.index) >= self.snapshot_min and self.unsaved > max(1000.0, self.resave_fraction * len(self.index)):
            self._save()
        return self.index

    def _load_or_build(self) -> None:
        parts = self.source.load_snapshot()
        if parts:
            index = VectorIndex(ann_threshold=self.ann_threshold)
            seq = decode_snapshot(parts, index)
            if seq is not None:
                self.index, self.seq, self.version, self.unsaved = index, seq, -1, 0
                self.loaded_from = "snapshot"
                read = self.source.read_changes(seq)
                self._apply(read)
                return
        self._build()

    def _build(self) -> None:
        read = self.source.read_all()
        index = VectorIndex(ann_threshold=self.ann_threshold)
        if read.vectors is not None:
            index.adopt(read.ids, read.vectors)
        self.index, self.seq, self.version, self.unsaved = index, read.seq, read.version, math.inf
        self.loaded_from = "rows"

    def _apply(self, read: VectorRead) -> None:
        index = self.index
        changed = 0
        if read.removed:
            gone = [i for i in read.removed if i in index]
            index.remove(gone)
            changed += len(gone)
        if read.vectors is not None:
            fresh = [j for j, sid in enumerate(read.ids) if not index.holds(sid, read.vectors[j])]
            if fresh:
                index.add([read.ids[j] for j in fresh], read.vectors[fresh])
                changed += len(fresh)
        self.seq, self.version = read.seq, read.version
        self.unsaved += changed

    def _replace(self, head: list[bytes] | None) -> bool:
        """Replace the saved snapshot only when it is missing, unreadable, or older
        than ours by more than the re-save margin: several processes that loaded the
        same snapshot must not each write a new one a few entries apart."""
        saved = None if head is None else snapshot_seq(head)
        assert self.seq is not None
        return saved is None or self.seq - saved > max(1000.0, self.resave_fraction * len(self.index))

    def _save(self) -> None:
        assert self.seq is not None
        self.index.prepare()  # a trained IVF is what makes a large snapshot worth loading
        if self.source.save_snapshot(encode_snapshot(self.index, self.seq), self._replace):
            log.info("vector_snapshot_saved", vectors=len(self.index), seq=self.seq)
        self.unsaved = 0  # saved, or another process saved a newer one: either way, not again now
