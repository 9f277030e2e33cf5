"""Tentative correspondences: mutual nearest neighbours + Lowe's ratio test.

Both filters come from one distance matrix (a GEMM, computed in row blocks so that
memory stays bounded for large feature sets), so matching two 2k-feature images
costs ~10 ms and is deterministic (no approximate search, no random tie-breaking).
"""

from __future__ import annotations

import numpy as np

from consist_spatial.features import LocalFeatures

__all__ = ["LOWE_RATIO", "match_descriptors", "match_features"]

#: Lowe (IJCV 2004, sec. 7.1): rejecting matches whose nearest/second-nearest
#: distance ratio exceeds 0.8 drops 90% of false matches and < 5% of true ones.
LOWE_RATIO = 0.8

_BLOCK = 4096  # rows of the distance matrix computed at once (4096 x N float32)


def _sq_dists(a: np.ndarray, b_neg2: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``|a|^2 + |b|^2 - 2 a.b`` (``b_neg2 = -2 b``, so the
    GEMM yields ``-2 a.b`` directly: two in-place additions, no extra full-matrix pass).
    Rounding can leave tiny negatives; callers clamp the few values they read."""
    d = a @ b_neg2.T
    d += b_sq[None, :]
    d += np.einsum("ij,ij->i", a, a)[:, None]
    return d


def match_descriptors(d1: np.ndarray, d2: np.ndarray, *, ratio: float | None = LOWE_RATIO, mutual: bool = True) -> np.ndarray:
    """Match descriptor sets by Euclidean distance.

    Args:
        d1, d2: ``N1 x D`` and ``N2 x D`` descriptors (any numeric dtype).
        ratio: keep a match only if ``dist(1st) < ratio * dist(2nd)`` among ``d2``
            (Lowe's test; ``None`` disables it). With fewer than two descriptors in
            ``d2`` the test cannot be applied and nothing is matched.
        mutual: keep only pairs that are each other's nearest neighbour, which
            makes matching one-to-one (several query points cannot pile onto one
            database point and inflate the inlier count).

    Returns:
        ``M x 2`` int64 array of ``(index in d1, index in d2)`` pairs, by ``d1`` index.

    Cost: one GEMM and four passes over the distance matrix, all row-wise (a
    column-wise ``argmin`` is ~20x slower than a row-wise one on a C-ordered
    matrix, so the mutual check compares each row's best distance with its
    column's minimum instead of computing column arg-minima).
    """
    empty = np.zeros((0, 2), dtype=np.int64)
    n1, n2 = len(d1), len(d2)
    if n1 == 0 or n2 == 0 or (ratio is not None and n2 < 2):
        return empty
    a = np.ascontiguousarray(np.asarray(d1, dtype=np.float32).reshape(n1, -1))
    b = np.asarray(d2, dtype=np.float32).reshape(n2, -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"descriptor sizes differ: {a.shape[1]} vs {b.shape[1]}")
    b_sq = np.einsum("ij,ij->i", b, b)
    b_neg2 = np.ascontiguousarray(b * np.float32(-2.0))
    nn12 = np.empty(n1, dtype=np.int64)
    best = np.empty(n1, dtype=np.float32)
    keep = np.ones(n1, dtype=bool)
    col_best = np.full(n2, np.inf, dtype=np.float32)
    rows = np.arange(_BLOCK)
    for start in range(0, n1, _BLOCK):
        d = _sq_dists(a[start : start + _BLOCK], b_neg2, b_sq)
        m = len(d)
        first = np.argmin(d, axis=1)
        nn12[start : start + m] = first
        d1st = d[rows[:m], first]
        best[start : start + m] = d1st
        if mutual:  # before the ratio test below overwrites the row minima
            np.minimum(col_best, d.min(axis=0), out=col_best)
        if ratio is not None:
            d[rows[:m], first] = np.inf
            d2nd = d.min(axis=1)
            # compare squared distances: d1 < r * d2  <=>  d1^2 < r^2 * d2^2
            keep[start : start + m] = np.maximum(d1st, 0.0) < (ratio * ratio) * np.maximum(d2nd, 0.0)
    idx1 = np.arange(n1)
    if mutual:
        # i is j's nearest neighbour iff no row is closer to j; on exact ties the
        # first such row wins (argmin's convention), so matching stays one-to-one
        keep &= best <= col_best[nn12]
        cand = np.flatnonzero(keep)
        _, first_of_j = np.unique(nn12[cand], return_index=True)
        keep[:] = False
        keep[cand[first_of_j]] = True
    return np.stack([idx1[keep], nn12[keep]], axis=1).astype(np.int64)


def match_features(f1: LocalFeatures, f2: LocalFeatures, *, ratio: float | None = LOWE_RATIO, mutual: bool = True) -> np.ndarray:
    """:func:`match_descriptors` on two :class:`~consist_spatial.features.LocalFeatures`."""
    return match_descriptors(f1.descriptors, f2.descriptors, ratio=ratio, mutual=mutual)
