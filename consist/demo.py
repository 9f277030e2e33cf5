"""The built-in demo: real photos that scikit-image ships, seen from new viewpoints.

It builds a small labelled store (several views per object: crops, perspective
changes, lighting, and the real second view of scikit-image's stereo motorcycle),
then recognises held-out views with the weight-free kNN recognizer and lets the
checkers verify, correct and adapt. Everything is generated locally; nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

__all__ = ["AUDIT_LABELS", "AUDIT_VIEWS", "DEMO_LABELS", "PLANTED_ERRORS", "AuditDemo", "DemoData", "build_audit_demo", "build_demo_data", "demo_photos", "perspective"]

#: label -> scikit-image loader name
DEMO_LABELS = {
    "cat": "chelsea",
    "coffee": "coffee",
    "astronaut": "astronaut",
    "rocket": "rocket",
    "motorcycle": "motorcycle_left",
}


#: The audit demo's classes: label -> scikit-image loader name (all ship with the
#: package: no download). ``motorcycle`` also uses the stereo pair's real second view.
AUDIT_LABELS = {
    "cat": "chelsea",
    "coffee": "coffee",
    "astronaut": "astronaut",
    "rocket": "rocket",
    "motorcycle": "motorcycle_left",
    "cameraman": "camera",
    "coins": "coins",
    "hubble": "hubble_deep_field",
    "tissue": "immunohistochemistry",
}


def demo_photos() -> dict[str, np.ndarray]:
    """The photos, by label, plus ``motorcycle_right`` (the stereo pair's other view)."""
    try:
        import skimage.data as data
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        from consist.errors import ConsistError

        raise ConsistError("the demo needs scikit-image: pip install 'consist[demo]'") from exc
    names = {**DEMO_LABELS, **AUDIT_LABELS}
    photos = {label: _rgb(np.asarray(getattr(data, name)())) for label, name in names.items() if name != "motorcycle_left"}
    left, right, _disp = data.stereo_motorcycle()
    photos["motorcycle"] = left
    photos["motorcycle_right"] = right
    return photos


def _rgb(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([arr] * 3, axis=-1) if arr.ndim == 2 else arr[..., :3])


def perspective(
    image: np.ndarray, *, tilt: float = 0.0, pan: float = 0.0, scale: float = 1.0, rotate_deg: float = 0.0, crop: tuple[float, float, float, float] = (0, 0, 1, 1), gain: float = 1.0
) -> np.ndarray:
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


def _perspective_coeffs(dst: Sequence[tuple[float, float]], src: Sequence[tuple[float, float]]) -> list[float]:
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


# ------------------------------------------------------------------ audit demo

#: Five views of every audit-demo class: perspective() arguments (crops, tilts,
#: rotations, scale and lighting changes: what a real collection looks like).
AUDIT_VIEWS: tuple[dict[str, Any], ...] = (
    {"scale": 0.8},
    {"tilt": 0.3, "scale": 0.7, "gain": 0.8},
    {"crop": (0.1, 0.05, 0.85, 0.9), "rotate_deg": 15, "gain": 1.2, "scale": 0.8},
    {"pan": 0.3, "crop": (0.0, 0.1, 0.9, 1.0), "scale": 0.75, "gain": 0.7},
    {"crop": (0.15, 0.0, 1.0, 0.8), "rotate_deg": -20, "scale": 0.7},
)

#: The labels deliberately wrong in the audit demo: (true class, view index, wrong label).
PLANTED_ERRORS: tuple[tuple[str, int, str], ...] = (
    ("cat", 2, "coffee"),
    ("rocket", 0, "astronaut"),
    ("coins", 1, "cameraman"),
    ("hubble", 3, "tissue"),
    ("motorcycle", 1, "rocket"),
)


@attrs.frozen
class AuditDemo:
    """The audit demo's dataset: ``images`` (class sub-folders, some images in the
    wrong one), the true label of every image, the planted errors and the files
    that are broken on purpose."""

    root: Path
    images: Path
    truth: dict[str, str]
    planted: tuple[str, ...]
    broken: tuple[str, ...]


def build_audit_demo(root: Path) -> AuditDemo:
    """Write the audit demo dataset under ``root/images`` (idempotent).

    Nine classes of real photos that scikit-image ships, five views each; five
    images sit in the wrong class folder (:data:`PLANTED_ERRORS`), and one file is
    a truncated JPEG, to show how bad input is reported.
    """
    from PIL import Image

    photos = demo_photos()
    images = root / "images"
    truth: dict[str, str] = {}
    planted: list[str] = []
    wrong = {(cls, i): label for cls, i, label in PLANTED_ERRORS}
    for cls in AUDIT_LABELS:
        for i, view in enumerate(AUDIT_VIEWS):
            source = photos["motorcycle_right"] if cls == "motorcycle" and i == 3 else photos[cls]
            label = wrong.get((cls, i), cls)
            rel = f"{label}/img-{_digest(cls, i)}.jpg"
            path = images / rel
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(perspective(source, **view)).save(path, quality=90)
            truth[rel] = cls
            if label != cls:
                planted.append(rel)
    broken = images / "coffee" / "scan-truncated.jpg"
    if not broken.exists():
        full = images / "coffee" / f"img-{_digest('coffee', 0)}.jpg"
        broken.write_bytes(full.read_bytes()[:600])
    return AuditDemo(root=root, images=images, truth=truth, planted=tuple(planted), broken=("coffee/scan-truncated.jpg",))


def _digest(cls: str, i: int) -> str:
    """A short stable tag so that file names do not give the class away."""
    import hashlib

    return hashlib.blake2b(f"{cls}/{i}".encode(), digest_size=3).hexdigest()
