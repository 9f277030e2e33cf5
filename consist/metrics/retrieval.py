"""Revisited Oxford/Paris retrieval metrics (Radenović et al., CVPR 2018).

The numbers produced here are meant to be comparable with published
ROxford5k / RParis6k results, so the semantics follow the reference
``revisitop`` evaluation (``compute_ap`` / ``compute_map``) exactly,
including its quirks:

* junk images are removed from a ranking before anything is measured;
* AP integrates the precision/recall curve with the trapezoid rule,
  anchoring the first trapezoid at precision 1 when the first positive is
  ranked first;
* a query without positives is reported as NaN and left out of the mean;
* mP@k clips ``k`` to the rank of the last retrieved positive, i.e.
  ``P@k = #{positives at rank <= k'} / k'`` with ``k' = min(k, last)``.

Two generalisations that ``revisitop`` does not need (its rankings always
cover the whole database) are documented where they apply: a ranking may be
partial, and positives it does not contain are simply never retrieved.

This module depends on numpy and attrs only, so it can be imported without
the rest of :mod:`consist`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
import numpy.typing as npt

__all__ = [
    "PROTOCOLS",
    "MapResult",
    "QueryResult",
    "average_precision",
    "evaluate_query",
    "protocol_ground_truth",
    "revisitop_map",
    "revisitop_protocols",
]

Protocol = Literal["easy", "medium", "hard"]
#: The three revisited protocols, in the order revisitop reports them.
PROTOCOLS: tuple[Protocol, ...] = ("easy", "medium", "hard")
DEFAULT_KS: tuple[int, ...] = (1, 5, 10)

IndexArray = npt.NDArray[np.int64]


# --------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------


@attrs.frozen
class QueryResult:
    """Metrics of one query under one choice of positives and junk.

    ``ap`` and every precision are NaN when the query has no positives
    (revisitop excludes such queries from the means).
    """

    ap: float
    precision_at_k: dict[int, float]
    n_positives: int
    #: 0-based ranks of the retrieved positives in the junk-removed ranking.
    positive_ranks: tuple[int, ...]

    @property
    def is_empty(self) -> bool:
        """True when the query has no positives and is excluded from means."""
        return self.n_positives == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ap": self.ap,
            "precision_at_k": dict(self.precision_at_k),
            "n_positives": self.n_positives,
            "positive_ranks": list(self.positive_ranks),
        }


@attrs.frozen
class MapResult:
    """Mean metrics over queries, with the per-query APs kept for inspection.

    ``map`` and ``mp_at_k`` average over the ``n_queries - n_empty`` queries
    that have positives; they are NaN when every query is empty.
    """

    map: float
    mp_at_k: dict[int, float]
    aps: tuple[float, ...]
    n_empty: int
    protocol: str | None = None

    @property
    def n_queries(self) -> int:
        return len(self.aps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "map": self.map,
            "mp_at_k": dict(self.mp_at_k),
            "aps": list(self.aps),
            "n_empty": self.n_empty,
            "n_queries": self.n_queries,
        }


# --------------------------------------------------------------------------
# Input normalisation
# --------------------------------------------------------------------------


def _index_array(values: Any, what: str) -> IndexArray:
    """Coerce a collection of database indices to a 1-D int64 array."""
    arr = np.asarray(values if values is not None else [])
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    arr = arr.reshape(-1) if arr.ndim == 0 else arr
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{what} must hold integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if np.any(arr < 0):
        raise ValueError(f"{what} must hold non-negative indices")
    return arr


def _unique_ids(values: Any, what: str) -> IndexArray:
    arr = _index_array(values, what)
    uniq = np.unique(arr)
    if uniq.size != arr.size:
        raise ValueError(f"{what} contains duplicate indices")
    return uniq


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if any(k < 1 for k in out):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    return out


def protocol_ground_truth(entry: Mapping[str, Any], protocol: Protocol) -> tuple[IndexArray, IndexArray]:
    """Return ``(positives, junk)`` of one revisitop gnd entry under ``protocol``.

    Easy: positives = easy, junk = junk + hard.  Medium: positives = easy +
    hard, junk = junk.  Hard: positives = hard, junk = junk + easy.  A
    missing ``'junk'`` key means no junk, as in revisitop.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if "easy" not in entry or "hard" not in entry:
        raise ValueError("gnd entry must have 'easy' and 'hard' keys")
    easy = _index_array(entry["easy"], "gnd 'easy'")
    hard = _index_array(entry["hard"], "gnd 'hard'")
    junk = _index_array(entry.get("junk"), "gnd 'junk'")
    if protocol == "easy":
        return easy, np.concatenate([junk, hard])
    if protocol == "medium":
        return np.concatenate([easy, hard]), junk
    return hard, np.concatenate([junk, easy])


def _per_query_rankings(rankings: Any, n_queries: int, query_axis: int) -> list[IndexArray]:
    """Split ``rankings`` into one 1-D ranking per query.

    A 2-D numpy array is read along ``query_axis`` (1 = revisitop's
    ``(n_db, n_q)`` layout, one column per query; 0 = one row per query).
    Anything else is taken as a sequence of per-query rankings, which may
    differ in length.
    """
    if isinstance(rankings, np.ndarray):
        if rankings.ndim != 2:
            raise ValueError(f"rankings array must be 2-D, got shape {rankings.shape}")
        if query_axis not in (0, 1):
            raise ValueError(f"query_axis must be 0 or 1, got {query_axis!r}")
        per_query = rankings if query_axis == 0 else rankings.T
        if per_query.shape[0] != n_queries:
            raise ValueError(f"rankings has {per_query.shape[0]} queries along axis {query_axis} but gnd has {n_queries}")
        return [_index_array(row, "ranking") for row in per_query]
    per_query_list = list(rankings)
    if len(per_query_list) != n_queries:
        raise ValueError(f"got {len(per_query_list)} rankings but gnd has {n_queries} queries")
    return [_index_array(r, "ranking") for r in per_query_list]


# --------------------------------------------------------------------------
# Core computations
# --------------------------------------------------------------------------


def average_precision(ranks_of_positives: npt.ArrayLike, n_positives: int) -> float:
    """revisitop ``compute_ap``: trapezoidal AP from the ranks of retrieved positives.

    ``ranks_of_positives`` are 0-based ranks in the junk-removed ranking (any
    order; they are sorted here).  ``n_positives`` is the size of the ground
    truth, so positives that were never retrieved contribute zero recall.
    The j-th positive (0-based) at rank r adds a trapezoid of width
    ``1/n_positives`` between precision ``j/r`` (1 when r == 0) and
    ``(j+1)/(r+1)``.
    """
    if n_positives <= 0:
        raise ValueError(f"n_positives must be positive, got {n_positives}")
    ranks = np.sort(_unique_ids(ranks_of_positives, "ranks_of_positives")).astype(np.float64)
    if ranks.size > n_positives:
        raise ValueError(f"{ranks.size} retrieved positives exceed n_positives={n_positives}")
    j = np.arange(ranks.size, dtype=np.float64)
    precision_0 = np.ones_like(ranks)
    np.divide(j, ranks, out=precision_0, where=ranks > 0)
    precision_1 = (j + 1.0) / (ranks + 1.0)
    return float(np.sum(precision_0 + precision_1) / (2.0 * n_positives))


def _precision_at_k(sorted_ranks: IndexArray, ks: tuple[int, ...]) -> dict[int, float]:
    """revisitop's clipped P@k: ``k' = min(k, rank of last positive)`` (1-based).

    With no positive retrieved at all (only possible for partial rankings,
    where revisitop would fail) every P@k is 0.
    """
    if sorted_ranks.size == 0:
        return {k: 0.0 for k in ks}
    one_based = sorted_ranks + 1
    last = int(one_based[-1])
    out: dict[int, float] = {}
    for k in ks:
        kq = min(last, k)
        out[k] = float(np.count_nonzero(one_based <= kq)) / kq
    return out


def _junk_removed_ranks(ranking: IndexArray, junk: IndexArray) -> IndexArray:
    """Rank of every ranking entry once junk is dropped (junk entries get -1)."""
    if ranking.size and np.unique(ranking).size != ranking.size:
        raise ValueError("ranking contains duplicate database indices")
    kept = ~np.isin(ranking, junk)
    return np.where(kept, np.cumsum(kept) - 1, -1)


def _score(
    ranking: IndexArray,
    new_ranks: IndexArray,
    positives: IndexArray,
    n_res: int,
    ks: tuple[int, ...],
) -> QueryResult:
    """Score one query given precomputed junk-removed ranks."""
    if n_res == 0:
        nan = float("nan")
        return QueryResult(ap=nan, precision_at_k={k: nan for k in ks}, n_positives=0, positive_ranks=())
    pos_ranks = np.sort(new_ranks[np.isin(ranking, positives)])
    return QueryResult(
        ap=average_precision(pos_ranks, n_res),
        precision_at_k=_precision_at_k(pos_ranks, ks),
        n_positives=n_res,
        positive_ranks=tuple(int(r) for r in pos_ranks),
    )


def evaluate_query(
    ranking: Sequence[int] | npt.ArrayLike,
    positives: Sequence[int] | npt.ArrayLike,
    junk: Sequence[int] | npt.ArrayLike = (),
    ks: Sequence[int] = DEFAULT_KS,
) -> QueryResult:
    """AP and clipped P@k of one ranking (database indices, best first).

    Junk entries are dropped from the ranking first.  The ranking may be
    partial: positives it lacks count as never retrieved.  Positives and
    junk must be disjoint (revisitop's easy/hard/junk lists are).
    """
    ks_t = _check_ks(ks)
    ranking_arr = _index_array(ranking, "ranking")
    pos = _unique_ids(positives, "positives")
    junk_arr = _index_array(junk, "junk")
    if np.intersect1d(pos, junk_arr).size:
        raise ValueError("positives and junk overlap")
    new_ranks = _junk_removed_ranks(ranking_arr, junk_arr)
    return _score(ranking_arr, new_ranks, pos, int(pos.size), ks_t)


def _aggregate(results: Sequence[QueryResult], ks: tuple[int, ...], protocol: str | None) -> MapResult:
    """Mean over non-empty queries, as revisitop's ``compute_map`` does."""
    aps = tuple(r.ap for r in results)
    valid = [r for r in results if not r.is_empty]
    if valid:
        mean_ap = float(np.mean([r.ap for r in valid]))
        mp = {k: float(np.mean([r.precision_at_k[k] for r in valid])) for k in ks}
    else:
        mean_ap = math.nan
        mp = {k: math.nan for k in ks}
    return MapResult(map=mean_ap, mp_at_k=mp, aps=aps, n_empty=len(results) - len(valid), protocol=protocol)


def revisitop_map(
    rankings: npt.NDArray[np.integer] | Sequence[Sequence[int]],
    gnd: Sequence[Mapping[str, Any]],
    protocol: Protocol = "medium",
    ks: Sequence[int] = DEFAULT_KS,
    *,
    query_axis: Literal[0, 1] = 1,
) -> MapResult:
    """mAP and mP@k over all queries under one revisited protocol.

    ``rankings`` is either a 2-D integer array or a sequence of per-query
    rankings (database indices, best first).  For an array, ``query_axis``
    says where the queries are: 1 (default) is revisitop's ``(n_db, n_q)``
    layout, i.e. ``np.argsort(-sim, axis=0)`` on a ``(n_db, n_q)`` similarity
    matrix; 0 means one row per query.  ``gnd`` is the list of dicts from
    ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl`` ('easy', 'hard', 'junk').
    """
    ks_t = _check_ks(ks)
    per_query = _per_query_rankings(rankings, len(gnd), query_axis)
    results = []
    for ranking, entry in zip(per_query, gnd):
        pos, junk = protocol_ground_truth(entry, protocol)
        results.append(evaluate_query(ranking, pos, junk, ks_t))
    return _aggregate(results, ks_t, protocol)


def revisitop_protocols(
    rankings: npt.NDArray[np.integer] | Sequence[Sequence[int]],
    gnd: Sequence[Mapping[str, Any]],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    query_axis: Literal[0, 1] = 1,
) -> dict[str, MapResult]:
    """:func:`revisitop_map` under Easy, Medium and Hard, keyed by protocol name."""
    return {p: revisitop_map(rankings, gnd, p, ks, query_axis=query_axis) for p in PROTOCOLS}
