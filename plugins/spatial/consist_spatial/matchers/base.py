"""The matchers' common output: ``M x 2`` int64 ``(query index, neighbour index)``
rows sorted by the query index (the format of
:func:`~consist_spatial.matching.match_features`), with ``M`` float32 scores."""

from __future__ import annotations

import numpy as np

__all__ = ["EMPTY_MATCHES", "sorted_by_query"]

#: No matches, in that format.
EMPTY_MATCHES = np.zeros((0, 2), np.int64)


def sorted_by_query(matches: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(matches, scores)`` reordered by the query index (stable), in the output dtypes."""
    order = np.argsort(matches[:, 0], kind="stable")
    return np.ascontiguousarray(matches[order], dtype=np.int64), np.ascontiguousarray(scores[order], dtype=np.float32)
