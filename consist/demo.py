"""The built-in demo: real photos that scikit-image ships, seen from new viewpoints.

It builds a small labelled store (several views per object: crops, perspective
changes, lighting, and the real second view of scikit-image's stereo motorcycle),
then recognises held-out views with the weight-free kNN recognizer and lets the
checkers verify, correct and adapt. Everything is generated locally; nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np

__all__ = ["DemoData", "build_demo_data", "demo_photos", "perspective", "DEMO_LABELS"]

#: label -> scikit-image loader name
DEMO_LABELS = {
    "cat": "chelsea",
    "coffee": "coffee",
    "astronaut": "astronaut",
    "rocket": "rocket",
    "motorcycle": "motorcycle_left",
}


def demo_photos() -> dict[str, np.ndarray]:
    """The photos, by label, plus ``motorcycle_right`` (the stereo pair's other view)."""
    try:
        import skimage.data as data
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        from consist.errors import ConsistError

        raise ConsistError("the demo needs scikit-image: pip install 'consist[demo]'") from exc
    photos = {label: np.asarray(getattr(data, name)()) for label, name in DEMO_LABELS.items() if name != "motorcycle_left"}
    left, right, _disp = data.stereo_motorcycle()
    photos["motorcycle"] = left
    photos["motorcycle_right"] = right
    return photos


def perspective(image: np.ndarray, *, tilt: float = 0.0, pan: float = 0.0, scale: float = 1.0, rotate_deg: float = 0.0, crop: tuple[float, float, float, float] = (0, 0, 1, 1), gain: float = 1.0) -> np.ndarray:
    """A new "view" of a photo: crop (fractions), then a perspective warp that tilts
    (top edge shrinks by ``tilt``) and pans (left edge shrinks by ``pan``), rotation,
    scale, and a brightness ``gain``. Pure Pillow (the core needs no OpenCV)."""
    from PIL import Image

    h, w = image.shape[:2]
    x0, y0, x1, y1 = int(crop[0] * w), int(crop[1] * h), int(crop[2] * w), int(crop[3] * h)
    img = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    w, h = img.size
    if tilt or pan:
        dx, dy = tilt * w / 2, pan * h / 2
        dst = [(dx, 0), (w - dx, dy), (w, h - dy), (0, h)]  # where the corners go
        src = [(0, 0), (w, 0), (w, h), (0, h)]
        coeffs = _perspective_coeffs(dst, src)
        img = img.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
    if rotate_deg:
        img = img.rotate(rotate_deg, resample=Image.Resampling.BICUBIC, expand=True)
    if scale != 1.0:
        img = img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))), Image.Resampling.LANCZOS)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) * gain
    return np.clip(arr, 0, 255).astype(np.uint8)


def _perspective_coeffs(dst: list[tuple[float, float]], src: list[tuple[float, float]]) -> list[float]:
    """Coefficients mapping output pixels ``dst`` back to input pixels ``src`` (PIL's convention)."""
    a = []
    b = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return [float(c) for c in np.linalg.solve(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))]


#: The stored (reference) views per object: name -> perspective() arguments.
REFERENCE_VIEWS: dict[str, dict[str, Any]] = {
    "front": {},
    "tilted": {"tilt": 0.35, "scale": 0.8},
    "crop-dim": {"crop": (0.1, 0.05, 0.85, 0.9), "gain": 0.7},
}

#: The held-out query views: object -> (view name, perspective() arguments).
QUERY_VIEWS: dict[str, tuple[str, dict[str, Any]]] = {
    "cat": ("rotated-crop", {"crop": (0.15, 0.0, 0.95, 0.85), "rotate_deg": 90, "scale": 0.7}),
    "coffee": ("panned-bright", {"pan": 0.4, "gain": 1.25, "crop": (0.05, 0.1, 0.9, 1.0)}),
    "astronaut": ("zoom", {"crop": (0.2, 0.05, 0.75, 0.6), "scale": 1.2}),
    "rocket": ("tilted-rotated", {"tilt": 0.3, "rotate_deg": -25}),
}


@attrs.frozen
class DemoData:
    """Where the demo's files went: reference images (with labels) and queries."""

    root: Path
    references: tuple[tuple[Path, str], ...]
    queries: tuple[tuple[Path, str], ...]  # (image, true label)


def build_demo_data(root: Path, progress: Callable[[str], None] | None = None) -> DemoData:
    """Write the demo's reference and query images under ``root`` (idempotent)."""
    from PIL import Image

    photos = demo_photos()
    refs: list[tuple[Path, str]] = []
    queries: list[tuple[Path, str]] = []
    (root / "references").mkdir(parents=True, exist_ok=True)
    (root / "queries").mkdir(parents=True, exist_ok=True)

    def save(arr: np.ndarray, path: Path) -> Path:
        if not path.exists():
            Image.fromarray(arr).save(path)
        return path

    for label in DEMO_LABELS:
        photo = photos[label]
        for view, kwargs in REFERENCE_VIEWS.items():
            refs.append((save(perspective(photo, **kwargs), root / "references" / f"{label}-{view}.png"), label))
        if label in QUERY_VIEWS:
            view, kwargs = QUERY_VIEWS[label]
            queries.append((save(perspective(photo, **kwargs), root / "queries" / f"{label}-{view}.png"), label))
    # the real second viewpoint of the stereo pair is a query
    queries.append((save(perspective(photos["motorcycle_right"], crop=(0.08, 0.0, 1.0, 1.0)), root / "queries" / "motorcycle-right-view.png"), "motorcycle"))
    if progress:
        progress(f"wrote {len(refs)} reference views and {len(queries)} queries under {root}")
    return DemoData(root=root, references=tuple(refs), queries=tuple(queries))
