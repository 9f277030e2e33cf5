"""In-memory vector search over sample embeddings: exact for small stores, HNSW above.

Vectors are L2-normalised on insert, so the similarity is the cosine. Exact search is
one matrix-vector product (numpy/BLAS); above ``ann_threshold`` vectors an HNSW
index from ``usearch`` answers instead (built on first search, then kept up to date
incrementally). Exact search is the reference: the ANN path is benchmarked against
it for recall in ``benchmarks/bench_store.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["VectorIndex", "DEFAULT_ANN_THRESHOLD", "normalise"]

#: Below this many vectors, exact search is both fast enough (< 20 ms per query at
#: 100k x 512 on one core is the target; exact takes ~8 ms at 20k) and exact.
DEFAULT_ANN_THRESHOLD = 20_000


def normalise(vec: np.ndarray) -> np.ndarray:
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class VectorIndex:
    """Id-addressed vectors with exact or approximate (HNSW) top-k search."""

    def __init__(self, dim: int | None = None, *, ann_threshold: int = DEFAULT_ANN_THRESHOLD, connectivity: int = 16, expansion_search: int = 64) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.connectivity = connectivity
        self.expansion_search = expansion_search
        self._ids: list[str | None] = []
        self._pos: dict[str, int] = {}
        self._mat = np.zeros((0, dim or 0), dtype=np.float32)
        self._n = 0  # rows used in _mat (deleted rows are zeroed and their id None)
        self._live = 0
        self._ann = None  # usearch.index.Index, keyed by row number

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
            self._ann.add(np.arange(start, start + len(ids), dtype=np.uint64), vecs)

    def remove(self, ids: Iterable[str]) -> None:
        rows = [self._pos.pop(i) for i in ids if i in self._pos]
        for r in rows:
            self._ids[r] = None
            self._mat[r] = 0.0
        self._live -= len(rows)
        if self._ann is not None and rows:
            self._ann.remove(np.asarray(rows, dtype=np.uint64))

    def vector(self, sample_id: str) -> np.ndarray | None:
        r = self._pos.get(sample_id)
        return None if r is None else self._mat[r].copy()

    @property
    def uses_ann(self) -> bool:
        return self._live >= self.ann_threshold

    def _build_ann(self) -> None:
        from usearch.index import Index

        ann = Index(ndim=self.dim, metric="ip", dtype="f32", connectivity=self.connectivity, expansion_search=self.expansion_search)
        rows = np.asarray([r for r in range(self._n) if self._ids[r] is not None], dtype=np.uint64)
        if len(rows):
            ann.add(rows, self._mat[rows.astype(np.int64)])
        self._ann = ann

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
            if self._ann is None:
                self._build_ann()
            assert self._ann is not None
            res = self._ann.search(q, want)
            pairs = [(self._ids[int(r)], 1.0 - float(d)) for r, d in zip(res.keys, res.distances)]
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
