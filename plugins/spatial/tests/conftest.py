"""Fixtures of the spatial plugin's tests: real photos bundled with scikit-image
(no download), warped by known homographies, and their features (extracted once).

Everything runs at ``max_side=640`` to keep the suite fast on two cores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")

from consist_spatial import LocalFeatures, SiftExtractor  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")

#: A moderate perspective warp: rotation, shear, ~0.9 scale, visible keystone.
H_TRUE = np.array([[0.85, 0.12, 40.0], [-0.08, 0.92, 50.0], [2.0e-4, 1.0e-4, 1.0]])


def warp(image: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Warp onto a canvas large enough to hold the whole warped image."""
    h, w = image.shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], float) @ H.T
    xy = corners[:, :2] / corners[:, 2:]
    size = (int(np.ceil(xy[:, 0].max())) + 20, int(np.ceil(xy[:, 1].max())) + 20)
    return cv2.warpPerspective(image, H, size, flags=cv2.INTER_LINEAR)


@pytest.fixture(scope="session")
def extractor() -> SiftExtractor:
    return SiftExtractor(max_side=640)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(skimage_data, name)() for name in PHOTOS}


@pytest.fixture(scope="session")
def warped(photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: warp(img, H_TRUE) for name, img in photos.items()}


@pytest.fixture(scope="session")
def feats(photos: dict[str, np.ndarray], extractor: SiftExtractor) -> dict[str, LocalFeatures]:
    return {name: extractor.extract(img) for name, img in photos.items()}


@pytest.fixture(scope="session")
def warped_feats(warped: dict[str, np.ndarray], extractor: SiftExtractor) -> dict[str, LocalFeatures]:
    return {name: extractor.extract(img) for name, img in warped.items()}


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, np.ndarray]) -> dict[str, Path]:
    """The photos as PNG files (what a real store's samples point at)."""
    from consist.images import encode_png

    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name, img in photos.items():
        path = folder / f"{name}.png"
        path.write_bytes(encode_png(img))
        out[name] = path
    return out


@pytest.fixture
def counting_extractor() -> Callable[..., SiftExtractor]:
    """An extractor that counts its calls (to see whether the cache answered)."""

    class Counting(SiftExtractor):
        calls = 0

        def extract_gray(self, gray: np.ndarray, original_size: tuple[int, int]) -> LocalFeatures:
            type(self).calls += 1  # extract() goes through here too
            return super().extract_gray(gray, original_size)

    def make(**kwargs: object) -> SiftExtractor:
        Counting.calls = 0
        return Counting(max_side=640, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def h_true() -> np.ndarray:
    return H_TRUE.copy()


@pytest.fixture(scope="session")
def warp_image() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return warp


@pytest.fixture(scope="session")
def motorcycle(extractor: SiftExtractor) -> tuple[LocalFeatures, LocalFeatures]:
    left, right, _disparity = skimage_data.stereo_motorcycle()
    return extractor.extract(left), extractor.extract(right)
