"""Pure evaluation metrics: revisitop retrieval mAP, pixel-retrieval mAP, label audits.

Self-contained (numpy + attrs) so that benchmarks and tests can use it
without importing the rest of :mod:`consist`.
"""

from __future__ import annotations

from .audit import PRF, audit_scores, suggestion_accuracy
from .pixel import DEFAULT_IOU_THRESHOLDS, PixelMapResult, box_iou, mask_iou, pixel_map
from .retrieval import (
    PROTOCOLS,
    MapResult,
    QueryResult,
    average_precision,
    evaluate_query,
    protocol_ground_truth,
    revisitop_map,
    revisitop_protocols,
)

__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "PRF",
    "PROTOCOLS",
    "MapResult",
    "PixelMapResult",
    "QueryResult",
    "audit_scores",
    "average_precision",
    "box_iou",
    "evaluate_query",
    "mask_iou",
    "pixel_map",
    "protocol_ground_truth",
    "revisitop_map",
    "revisitop_protocols",
    "suggestion_accuracy",
]
