"""Label-audit metrics: how well flagged samples match the true label errors.

A label audit flags samples it believes are mislabelled and may suggest a
replacement label.  Detection quality is scored with precision/recall/F1
against the known errors; correction quality with the accuracy of the
suggestions over a chosen subset (typically the truly mislabelled samples).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

__all__ = ["PRF", "audit_scores", "suggestion_accuracy"]


@attrs.frozen
class PRF:
    """Precision, recall and F1 with the confusion counts they come from.

    Any ratio whose denominator is zero is defined as 0.0 (e.g. precision
    when nothing was flagged), so an audit that flags nothing never scores
    better than one that flags something.
    """

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _bool_vector(values: Sequence[bool] | npt.ArrayLike, what: str) -> npt.NDArray[np.bool_]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if arr.size and not (np.issubdtype(arr.dtype, np.number) and np.all(np.isin(arr, (0, 1)))):
            raise ValueError(f"{what} must hold booleans (or 0/1)")
        arr = arr.astype(bool)
    return arr


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def audit_scores(flagged: Sequence[bool] | npt.ArrayLike, is_error: Sequence[bool] | npt.ArrayLike) -> PRF:
    """Score flagged samples against the true label errors; 0/0 is defined as 0.0."""
    f = _bool_vector(flagged, "flagged")
    e = _bool_vector(is_error, "is_error")
    if f.shape != e.shape:
        raise ValueError(f"flagged and is_error differ in length: {f.size} vs {e.size}")
    tp = int(np.count_nonzero(f & e))
    fp = int(np.count_nonzero(f & ~e))
    fn = int(np.count_nonzero(~f & e))
    tn = int(np.count_nonzero(~f & ~e))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return PRF(precision=precision, recall=recall, f1=f1, tp=tp, fp=fp, fn=fn, tn=tn)


def suggestion_accuracy(
    suggested: Sequence[Hashable | None],
    true_labels: Sequence[Hashable],
    among: Sequence[bool] | npt.ArrayLike | None = None,
) -> float:
    """Fraction of selected samples whose suggested label equals the true one.

    ``among`` selects the samples to score (default: all), e.g. the truly
    mislabelled ones.  A missing suggestion (None) counts as wrong.  Returns
    NaN when nothing is selected, since there is no accuracy to report and
    0.0 would read as "every suggestion was wrong".
    """
    if len(suggested) != len(true_labels):
        raise ValueError(f"suggested and true_labels differ in length: {len(suggested)} vs {len(true_labels)}")
    if among is None:
        sel = np.ones(len(suggested), dtype=bool)
    else:
        sel = _bool_vector(among, "among")
        if sel.size != len(suggested):
            raise ValueError(f"among has length {sel.size} but there are {len(suggested)} samples")
    idx = np.flatnonzero(sel)
    if idx.size == 0:
        return math.nan
    correct = sum(1 for i in idx.tolist() if suggested[i] is not None and suggested[i] == true_labels[i])
    return correct / idx.size
