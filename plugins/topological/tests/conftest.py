"""Fixtures of the topological plugin's tests: real photos that scikit-image ships,
seen in several views (crops, perspective warps, rotations with dimmer light),
written as labelled folders; SIFT at 512 px with 600 keypoints keeps it fast."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")

from consist.images import encode_png  # noqa: E402
from consist_spatial.features import SiftExtractor  # noqa: E402

EXTRACTOR = SiftExtractor(max_side=512, max_keypoints=600)
SPATIAL = {"max_side": 512, "max_keypoints": 600}
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def shrink(img: np.ndarray, side: int = 420) -> np.ndarray:
    h, w = img.shape[:2]
    s = side / max(h, w)
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else img


def warp(img: np.ndarray, tl: float, tr: float) -> np.ndarray:
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[w * tl, h * 0.05], [w * (1 - tr), 0], [w, h], [0, h * 0.95]])
    return cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (w, h))


def rotate(img: np.ndarray, deg: float, scale: float = 1.0) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), deg, scale), (w, h))


def views_of(img: np.ndarray) -> dict[str, np.ndarray]:
    img = shrink(img)
    h, w = img.shape[:2]
    return {
        "full": img,
        "crop": np.ascontiguousarray(img[int(0.08 * h) : int(0.85 * h), int(0.12 * w) : int(0.92 * w)]),
        "warp": warp(img, 0.12, 0.02),
        "dim": np.clip(rotate(img, 12, 0.9).astype(np.float32) * 0.65, 0, 255).astype(np.uint8),
    }


PHOTOS = {"astronaut": skimage_data.astronaut, "cat": skimage_data.chelsea, "coffee": skimage_data.coffee}


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/<label>/<view>.png: 3 objects x 4 views."""
    root = tmp_path_factory.mktemp("topo") / "views"
    for label, load in PHOTOS.items():
        (root / label).mkdir(parents=True)
        for name, view in views_of(load()).items():
            (root / label / f"{name}.png").write_bytes(encode_png(view))
    return root


@pytest.fixture(scope="session")
def noise_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Smoothed random texture: keypoints, but nothing in common with the photos."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (360, 480, 3), dtype=np.uint8), (5, 5), 1.5)
    path = tmp_path_factory.mktemp("noise") / "noise.png"
    path.write_bytes(encode_png(img))
    return path
