"""A small labelled dataset for the audit tests: views of photos that scikit-image
ships, with two labels deliberately wrong (generated; nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

#: class -> scikit-image photo (see consist.demo.AUDIT_LABELS)
CLASSES = ("cat", "coffee", "astronaut", "hubble")
#: four views per class: perspective() arguments, small images to keep tests fast
VIEWS = (
    {"scale": 0.55},
    {"tilt": 0.3, "scale": 0.5, "gain": 0.8},
    {"crop": (0.1, 0.05, 0.85, 0.9), "rotate_deg": 15, "gain": 1.2, "scale": 0.55},
    {"pan": 0.3, "crop": (0.0, 0.1, 0.9, 1.0), "scale": 0.5, "gain": 0.75},
)
#: (true class, view, wrong label)
WRONG = (("cat", 1, "coffee"), ("astronaut", 2, "hubble"))


def build(root: Path) -> tuple[Path, dict[str, str]]:
    """Write the dataset under ``root``; returns (folder, sample id -> true label)."""
    from PIL import Image

    from consist.demo import demo_photos, perspective

    photos = demo_photos()
    wrong = {(c, i): lab for c, i, lab in WRONG}
    truth = {}
    for cls in CLASSES:
        for i, view in enumerate(VIEWS):
            label = wrong.get((cls, i), cls)
            rel = f"{label}/{cls[:3]}{i}.jpg"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                img = photos[cls]
                if cls == "hubble":
                    img = img[:600, :600]
                Image.fromarray(perspective(img, **view)).save(path, quality=90)
            truth[rel] = cls
    return root, truth


def thread_probe(_: object) -> tuple[str | None, int, int]:
    """Run in an audit worker process: its BLAS setting, OpenCV threads, pid."""
    import os

    import cv2

    return os.environ.get("OPENBLAS_NUM_THREADS"), cv2.getNumThreads(), os.getpid()
