"""The ``extractor`` option: its values, and the extractor each one names."""

from __future__ import annotations

from typing import Any

from consist_spatial.extractors.aliked import AlikedExtractor
from consist_spatial.extractors.disk import DiskExtractor
from consist_spatial.extractors.models import LEARNED_EXTRACTORS
from consist_spatial.extractors.xfeat import XFeatExtractor
from consist_spatial.features import SiftExtractor
from consist_spatial.weights import ALIKED_VARIANTS

__all__ = ["EXTRACTORS", "make_extractor"]

#: Every ``extractor`` option value of the spatial checker.
EXTRACTORS = ("sift", *LEARNED_EXTRACTORS)


def make_extractor(
    name: str = "sift",
    *,
    max_keypoints: int = 2048,
    max_side: int | None = 1024,
    device: str = "cpu",
    weights_dir: str | None = None,
    rootsift: bool = True,
    detection_threshold: float | None = None,
) -> Any:
    """The extractor for an ``extractor`` option value (see :data:`EXTRACTORS`).

    Cheap: nothing is loaded until the first extraction.
    """
    common: dict[str, Any] = {"max_keypoints": max_keypoints, "max_side": max_side}
    if name == "sift":
        return SiftExtractor(root=rootsift, **common)
    learned: dict[str, Any] = {**common, "device": device, "weights_dir": weights_dir, "detection_threshold": detection_threshold}
    if name.startswith("aliked-") and name[len("aliked-") :] in ALIKED_VARIANTS:
        return AlikedExtractor(variant=name[len("aliked-") :], **learned)
    if name == "disk":
        return DiskExtractor(**learned)
    if name == "xfeat":
        return XFeatExtractor(**learned)
    raise ValueError(f"unknown extractor {name!r} (known: {', '.join(EXTRACTORS)})")
