"""Pixel-retrieval mAP@50:5:95 (An et al., ICCV 2023: PROxford / PRParis).

Pixel retrieval asks a system both to rank database images and to localise
the query object in them.  A ground-truth positive only counts as a hit at
IoU threshold ``t`` when its predicted region overlaps the ground-truth
region with IoU strictly greater than ``t``; otherwise it stays where it is
in the ranking as a false positive.  The revisitop mAP is computed at each
of ``t = 0.50, 0.55, ..., 0.95`` and the ten values are averaged.

``n_positives`` picks the AP denominator:

* ``"ground_truth"`` (default, our design doc): the number of ground-truth
  positives, so a mislocalised positive also costs recall, and a query is
  empty only when it has no ground-truth positives.
* ``"localised"``: the number of positives localised above ``t``, and a
  query with none is dropped from that threshold's mean.  This reproduces
  the authors' released evaluation code (``evaluate_pixel.compute_map``);
  note that code additionally skips two queries per dataset, which callers
  can reproduce by leaving those queries out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
import numpy.typing as npt

from .retrieval import (
    MapResult,
    Protocol,
    _aggregate,
    _junk_removed_ranks,
    _per_query_rankings,
    _score,
    _unique_ids,
    protocol_ground_truth,
)

__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "PixelMapResult",
    "box_iou",
    "mask_iou",
    "pixel_map",
]

#: 0.50:0.05:0.95 written out so that threshold comparisons are exact decimals.
DEFAULT_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.50 + 0.05 * i, 2) for i in range(10))

RegionKind = Literal["box", "mask"]
PositivesMode = Literal["ground_truth", "localised"]


@attrs.frozen
class PixelMapResult:
    """Average of the per-threshold mAPs, plus the per-threshold breakdown."""

    map: float
    per_threshold: dict[float, float]
    results: dict[float, MapResult]
    protocol: str
    kind: str
    n_positives: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "map": self.map,
            "per_threshold": dict(self.per_threshold),
            "results": {t: r.to_dict() for t, r in self.results.items()},
            "protocol": self.protocol,
            "kind": self.kind,
            "n_positives": self.n_positives,
        }


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """IoU of two axis-aligned boxes ``(x0, y0, x1, y1)``.

    Inverted boxes are treated as empty, and an empty union gives 0 so that
    a degenerate prediction never counts as a localisation.
    """
    ba = np.asarray(a, dtype=np.float64).reshape(-1)
    bb = np.asarray(b, dtype=np.float64).reshape(-1)
    if ba.size != 4 or bb.size != 4:
        raise ValueError(f"boxes must have 4 coordinates, got {ba.size} and {bb.size}")
    if not (np.all(np.isfinite(ba)) and np.all(np.isfinite(bb))):
        raise ValueError("box coordinates must be finite")
    area_a = max(ba[2] - ba[0], 0.0) * max(ba[3] - ba[1], 0.0)
    area_b = max(bb[2] - bb[0], 0.0) * max(bb[3] - bb[1], 0.0)
    iw = max(min(ba[2], bb[2]) - max(ba[0], bb[0]), 0.0)
    ih = max(min(ba[3], bb[3]) - max(ba[1], bb[1]), 0.0)
    inter = iw * ih
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def mask_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """IoU of two boolean masks of equal shape (empty union gives 0)."""
    ma = np.asarray(a, dtype=bool)
    mb = np.asarray(b, dtype=bool)
    if ma.shape != mb.shape:
        raise ValueError(f"mask shapes differ: {ma.shape} vs {mb.shape}")
    union = np.count_nonzero(ma | mb)
    return float(np.count_nonzero(ma & mb)) / union if union else 0.0


def _row(container: Any, q: int, n_queries: int, what: str) -> Any:
    """Per-query entry of a region container (sequence or mapping by query)."""
    if container is None:
        return None
    if isinstance(container, Mapping):
        return container.get(q)
    if len(container) != n_queries:
        raise ValueError(f"{what} has {len(container)} queries but gnd has {n_queries}")
    return container[q]


def _cell(row: Any, db: int) -> Any:
    """Region for database image ``db`` in a per-query row; None when absent."""
    if row is None:
        return None
    if isinstance(row, Mapping):
        return row.get(db)
    return row[db] if db < len(row) else None


def _check_thresholds(thresholds: Sequence[float] | npt.ArrayLike) -> tuple[float, ...]:
    ts = tuple(float(t) for t in np.asarray(thresholds, dtype=np.float64).reshape(-1))
    if not ts:
        raise ValueError("thresholds must not be empty")
    if any(not 0.0 <= t < 1.0 for t in ts):
        raise ValueError(f"IoU thresholds must lie in [0, 1), got {ts}")
    return ts


def pixel_map(
    rankings: npt.NDArray[np.integer] | Sequence[Sequence[int]],
    gnd: Sequence[Mapping[str, Any]],
    predicted_regions: Any,
    gt_regions: Any,
    protocol: Protocol = "medium",
    kind: RegionKind = "box",
    thresholds: Sequence[float] | npt.ArrayLike = DEFAULT_IOU_THRESHOLDS,
    *,
    n_positives: PositivesMode = "ground_truth",
    query_axis: Literal[0, 1] = 1,
) -> PixelMapResult:
    """Pixel-retrieval mAP averaged over IoU thresholds.

    ``rankings``, ``gnd``, ``protocol`` and ``query_axis`` are as in
    :func:`consist.metrics.revisitop_map`.  ``predicted_regions[q][db]`` is
    the region predicted for database image ``db`` under query ``q`` (a box
    ``(x0, y0, x1, y1)`` or a boolean mask, per ``kind``); a missing entry or
    None means no localisation (IoU 0).  ``gt_regions[q][db]`` must exist for
    every positive of query ``q`` under ``protocol``.  Both containers may be
    sequences or mappings at either level.
    """
    if kind not in ("box", "mask"):
        raise ValueError(f"unknown region kind {kind!r}; expected 'box' or 'mask'")
    if n_positives not in ("ground_truth", "localised"):
        raise ValueError(f"unknown n_positives mode {n_positives!r}; expected 'ground_truth' or 'localised'")
    ts = _check_thresholds(thresholds)
    iou = box_iou if kind == "box" else mask_iou
    n_q = len(gnd)
    per_query = _per_query_rankings(rankings, n_q, query_axis)

    per_t: dict[float, list] = {t: [] for t in ts}
    for q, (ranking, entry) in enumerate(zip(per_query, gnd)):
        pos, junk = protocol_ground_truth(entry, protocol)
        pos = _unique_ids(pos, "positives")
        if np.intersect1d(pos, junk).size:
            raise ValueError(f"positives and junk overlap for query {q}")
        pred_row = _row(predicted_regions, q, n_q, "predicted_regions")
        gt_row = _row(gt_regions, q, n_q, "gt_regions") if pos.size else None
        ious = np.empty(pos.size, dtype=np.float64)
        for i, db in enumerate(pos.tolist()):
            gt = _cell(gt_row, db)
            if gt is None:
                raise ValueError(f"no ground-truth region for positive {db} of query {q}")
            pred = _cell(pred_row, db)
            ious[i] = 0.0 if pred is None else iou(pred, gt)
        # Junk does not depend on the threshold, so ranks are computed once.
        new_ranks = _junk_removed_ranks(ranking, junk)
        for t in ts:
            localised = pos[ious > t]
            n_res = int(pos.size) if n_positives == "ground_truth" else int(localised.size)
            per_t[t].append(_score(ranking, new_ranks, localised, n_res, ()))

    results = {t: _aggregate(rs, (), protocol) for t, rs in per_t.items()}
    per_threshold = {t: r.map for t, r in results.items()}
    return PixelMapResult(
        map=float(np.mean(list(per_threshold.values()))),
        per_threshold=per_threshold,
        results=results,
        protocol=protocol,
        kind=kind,
        n_positives=n_positives,
    )
