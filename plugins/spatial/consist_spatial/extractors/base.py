"""What the learned extractors share: the image tensor they take, and a base class
that names their features' cache kind and turns the network's output into
:class:`~consist_spatial.features.LocalFeatures`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from consist.images import load_image
from consist_spatial.features import LocalFeatures, resize_long_side
from consist_spatial.torch_models import import_torch, resolve_device
from consist_spatial.weights import weights_digest, weights_path

__all__ = ["LearnedExtractor", "rgb_tensor"]


def rgb_tensor(image: np.ndarray, max_side: int | None, device: str, scale: float = 1.0 / 255.0) -> tuple[Any, tuple[int, int], float]:
    """Decode, downscale (INTER_AREA) and make a ``1x3xHxW`` float tensor."""
    torch = import_torch()
    rgb = load_image(image)
    h, w = rgb.shape[:2]
    work, factor = resize_long_side(rgb, max_side)
    t = torch.from_numpy(np.array(work, copy=True)).permute(2, 0, 1)[None].float().mul_(scale)
    return t.to(device), (w, h), factor


@attrs.frozen
class LearnedExtractor:
    """Shared behaviour: a cache ``kind`` naming model, resolution, budget, non-default
    threshold and a digest of the weight file; keypoints sorted by decreasing score."""

    max_keypoints: int = attrs.field(default=2048, converter=int)
    max_side: int | None = 1024
    device: str = "cpu"
    weights_dir: str | None = None
    detection_threshold: float | None = None

    #: the model's name (a key of WEIGHT_FILES), set by subclasses
    model_name = ""
    #: the detector's default threshold (kept out of ``kind``)
    default_threshold = 0.0
    #: nominal keypoint diameter in working pixels (NMS window or cell): these
    #: detectors have no scale, and LocalFeatures.scales must hold something meaningful
    nominal_size = 5.0

    @property
    def name(self) -> str:
        return self.model_name

    @property
    def threshold(self) -> float:
        return self.default_threshold if self.detection_threshold is None else float(self.detection_threshold)

    @property
    def weights(self) -> Path:
        """The weight file (raises :class:`WeightsNotFoundError`)."""
        return weights_path(self.name, self.weights_dir)

    @property
    def kind(self) -> str:
        """Artefact kind, e.g. ``features/aliked-n16-1024-2048-w1a2b3c4d``.

        The device is not part of it (same model, same features); the weights are,
        through a digest of the file, so features of other weights never mix.
        """
        kind = f"features/{self.name}-{self.max_side or 'full'}-{self.max_keypoints}"
        if self.threshold != self.default_threshold:
            kind += f"-t{self.threshold:g}"
        return f"{kind}-w{weights_digest(self.weights)}"

    def _detect(self, tensor: Any) -> tuple[Any, Any, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """Detect and describe; keypoints in original-image pixels (centres at integers),
        strongest first, descriptors float32 (L2-normalised)."""
        torch = import_torch()
        kind = self.kind  # resolves the weights first: a clear error before any work
        tensor, size, factor = self._rgb(image)
        with torch.inference_mode():
            xy, desc, scores = self._detect(tensor)
        xy = xy.detach().float().cpu().numpy().reshape(-1, 2)
        desc = desc.detach().float().cpu().numpy()
        scores = scores.detach().float().cpu().numpy().reshape(-1)
        d = desc.shape[1] if desc.ndim == 2 else 0
        if len(xy) == 0:
            return LocalFeatures(np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros((0, d), np.float32), size, factor, kind)
        order = np.argsort(-scores, kind="stable")[: self.max_keypoints]
        xy, desc = xy[order], desc[order]
        xy = (xy + 0.5) / factor - 0.5  # working -> original pixels
        n = len(xy)
        scales = np.full(n, self.nominal_size / factor, np.float32)
        angles = np.full(n, -1.0, np.float32)  # OpenCV's "no orientation"
        return LocalFeatures(xy, scales, angles, desc, size, factor, kind)

    def _rgb(self, image: np.ndarray) -> tuple[Any, tuple[int, int], float]:
        return rgb_tensor(image, self.max_side, resolve_device(self.device))
