"""Local features: extraction with OpenCV SIFT / RootSIFT.

The record (:class:`consist.contracts.LocalFeatures`), its serialisation and the
per-sample cache in the store (:func:`consist.features.features_for`) belong to the
core contract, so that any registered extractor plugs into the audit and the checkers;
they are re-exported here for convenience.

Feature extraction dominates the cost of spatial verification (DESIGN.md 3.1: SIFT
~0.07 s per 1024 px image, matching ~10 ms, DEGENSAC ~2 ms), so features are
extracted once per sample and kept as a store artefact whose *kind* encodes every
parameter that changes them (``features/sift-rootsift-1024-2048``): changing a
parameter never reads stale features, it just fills a new cache.

Coordinates are always in pixels of the ORIGINAL image (x right, y down, pixel
centres at integers, OpenCV's convention), whatever resolution the features were
extracted at; ``resize_factor`` remembers that resolution, because keypoint
localisation accuracy (and hence a sensible RANSAC threshold) is set by it.
"""

from __future__ import annotations

import attrs
import cv2
import numpy as np
import structlog

from consist.contracts.features import FORMAT_VERSION, FeatureExtractor, LocalFeatures
from consist.features import features_for
from consist.images import load_image

__all__ = [
    "FORMAT_VERSION",
    "FeatureExtractor",
    "LocalFeatures",
    "SiftExtractor",
    "features_for",
    "resize_long_side",
    "rootsift",
]

log = structlog.get_logger("consist.spatial")


def rootsift(descriptors: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman, CVPR 2012): L1-normalise, square-root.

    Euclidean distance between RootSIFT vectors is the Hellinger kernel on the
    original SIFT histograms, which matches and retrieves better than L2 on SIFT.
    The result has unit L2 norm.
    """
    d = np.asarray(descriptors, dtype=np.float32)
    if d.size == 0:
        return d
    d = d / (np.abs(d).sum(axis=1, keepdims=True) + eps)
    return np.sqrt(np.maximum(d, 0.0))


def resize_long_side(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so that the long side is at most ``max_side`` (never upscale).

    Returns the image and the factor ``working / original``. INTER_AREA averages
    pixels, so downscaling does not alias (which would create spurious keypoints).
    """
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    factor = max_side / float(max(h, w))
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    # the factor actually applied (rounding changes it by < 1 px over the image)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / float(w)


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB(A)/grey uint8 pixels to one uint8 grey channel."""
    img = load_image(image)  # normalises dtype and channels of an array
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


@attrs.frozen
class SiftExtractor:
    """OpenCV SIFT (Lowe, IJCV 2004), RootSIFT descriptors by default.

    Attributes:
        max_keypoints: keep at most this many keypoints, the strongest by response
            (2048: enough for instance matching at 1024 px, and matching stays
            ~10 ms per pair; more mostly adds weak, unstable points).
        max_side: downscale images so that their long side is at most this
            (1024, the revisitop protocol's resolution; ``None`` keeps full size).
        root: convert descriptors to RootSIFT (Arandjelović & Zisserman 2012).
        contrast_threshold, edge_threshold, sigma: OpenCV/Lowe defaults (0.04, 10, 1.6).
    """

    max_keypoints: int = 2048
    max_side: int | None = 1024
    root: bool = True
    contrast_threshold: float = 0.04
    edge_threshold: float = 10.0
    sigma: float = 1.6

    @property
    def kind(self) -> str:
        """Artefact kind, e.g. ``features/sift-rootsift-1024-2048``.

        Non-default detector thresholds are appended so that they get their own cache.
        """
        name = "sift-rootsift" if self.root else "sift"
        kind = f"features/{name}-{self.max_side or 'full'}-{self.max_keypoints}"
        if (self.contrast_threshold, self.edge_threshold, self.sigma) != (0.04, 10.0, 1.6):
            kind += f"-c{self.contrast_threshold:g}-e{self.edge_threshold:g}-s{self.sigma:g}"
        return kind

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """Detect and describe; keypoints are returned in original-image pixels."""
        gray = to_gray(image)
        return self.extract_gray(gray, (gray.shape[1], gray.shape[0]))

    def extract_gray(self, gray: np.ndarray, original_size: tuple[int, int]) -> LocalFeatures:
        """:meth:`extract` on grey pixels of an image whose full size is
        ``original_size`` ``(w, h)``; the pixels may already be reduced (a JPEG decoded
        at a DCT scale by :func:`consist.images.load_gray`), keypoints are mapped to
        the full size either way."""
        w, h = int(original_size[0]), int(original_size[1])
        if self.max_side and max(w, h) > self.max_side:
            f = self.max_side / float(max(w, h))
            size = (max(1, round(w * f)), max(1, round(h * f)))
        else:
            size = (w, h)
        work = gray if (gray.shape[1], gray.shape[0]) == size else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        factor = size[0] / float(w)  # the factor actually applied (rounding: < 1 px over the image)
        sift = cv2.SIFT_create(  # type: ignore[attr-defined]  # in OpenCV >= 4.4, missing from its stubs
            nfeatures=int(self.max_keypoints),
            contrastThreshold=self.contrast_threshold,
            edgeThreshold=self.edge_threshold,
            sigma=self.sigma,
        )  # one detector per call: cheap, and no state shared between threads
        kps, desc = sift.detectAndCompute(work, None)
        if desc is None or not kps:
            return LocalFeatures(np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros((0, 128), np.float32), (w, h), factor, self.kind)
        response = np.array([k.response for k in kps], dtype=np.float32)
        if len(kps) > self.max_keypoints:  # OpenCV may keep ties beyond nfeatures
            keep = np.sort(np.argsort(-response, kind="stable")[: self.max_keypoints])
            kps = [kps[i] for i in keep]
            desc = desc[keep]
        xy = np.array([k.pt for k in kps], dtype=np.float32)
        # pixel centres are at integers in both frames: x_orig = (x_work + 0.5) / f - 0.5
        xy = (xy + 0.5) / factor - 0.5
        scales = np.array([k.size for k in kps], dtype=np.float32) / factor
        angles = np.array([k.angle for k in kps], dtype=np.float32)
        desc = rootsift(desc) if self.root else np.asarray(desc, dtype=np.float32)
        return LocalFeatures(xy, scales, angles, desc, (w, h), factor, self.kind)
