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

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT_ANN_THRESHOLD", "DEFAULT_MIN_PROBES", "DEFAULT_PROBE_FRACTION", "VectorIndex", "normalise"]

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

    def remove(self, ids: Iterable[str]) -> None:
        rows = [self._pos.pop(i) for i in ids if i in self._pos]
        for r in rows:
            self._ids[r] = None
            self._mat[r] = 0.0
        self._live -= len(rows)
        if self._ann is not None and rows:
            self._ann.remove_ids(np.asarray(rows, dtype=np.int64))

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
            if want < self._n:
                top = np.argpartition(-sims, want - 1)[:want]
            else:
                top = np.arange(self._n)
            top = top[np.argsort(-sims[top], kind="stable")]
            pairs = [(self._ids[int(r)], float(sims[r])) for r in top]
        out = [(sid, s) for sid, s in pairs if sid is not None and sid not in excluded]
        return out[:k]
