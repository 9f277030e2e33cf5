"""Loading the shared evaluation photos for ``bench_spatial.py`` (../shared/data).

Four folders are read, each as its README describes it (the images are never copied
into the project: their licences are research / non-commercial):

* ``landmark-multiview``: 82 photos of 14 landmarks, ``labels.csv`` (``file``,
  ``instance``); the label is the instance (folder) name. ``alamo_plaza_1dsfm`` is
  ambiguous (two facade photos, a cenotaph, a crowd): it is left out unless asked for.
* ``ukbench-subset``: 56 photos, 14 objects x 4 views, ``labels.csv`` (``file``,
  ``object_id``).
* ``homography-pairs``: 20 pairs with a ground-truth homography mapping image 1 to
  image 2 (``pairs.csv``); EVD's files are not normalised (some have ``H[2,2] < 0``),
  so every matrix is divided by ``H[2,2]`` here.
* ``wxbs-v1.1``: 34 wide-baseline pair folders (``01``/``02`` images, hand-clicked
  ``corrs.txt``); ``WLABS/ministry`` lacks ``01`` and is skipped; ``WGLBS/maidan``'s
  extra ``03`` is ignored. No negatives are defined by the dataset: cross-pair
  negatives are drawn between folders of *different scenes* (:func:`wxbs_scene`).

The data folder is ``--data``, else ``$CONSIST_SHARED_DATA``, else ``../shared/data``
next to the repository.
"""

from __future__ import annotations

import csv
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "AMBIGUOUS_LANDMARKS",
    "DATA_ENV",
    "HomographyPair",
    "Item",
    "WxbsPair",
    "data_root",
    "homography_pairs",
    "landmark_items",
    "negative_pairs",
    "open_dataset_store",
    "positive_pairs",
    "ukbench_items",
    "wxbs_pairs",
    "wxbs_scene",
]

DATA_ENV = "CONSIST_SHARED_DATA"
AMBIGUOUS_LANDMARKS = frozenset({"alamo_plaza_1dsfm"})


@dataclass(frozen=True)
class Item:
    """One image: ``id`` (path relative to its dataset folder: the store's sample id),
    absolute ``path``, ``label``, and ``(width, height)`` when the CSV gives it."""

    id: str
    path: str
    label: str
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class HomographyPair:
    name: str  # e.g. "oxford_graf/1-4", "evd/adam"
    set: str
    img1: Item
    img2: Item
    H: np.ndarray = field(repr=False)  # 3x3, maps image-1 pixels to image-2 pixels, H[2,2] == 1


@dataclass(frozen=True)
class WxbsPair:
    name: str  # "WGABS/kyiv"
    img1: Item
    img2: Item
    corrs: np.ndarray = field(repr=False)  # K x 4: x1 y1 x2 y2


def data_root(given: str | os.PathLike[str] | None = None) -> Path | None:
    """The shared data folder, or ``None`` when it is not there."""
    candidates = [given, os.environ.get(DATA_ENV), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def landmark_items(root: Path, *, include_ambiguous: bool = False) -> list[Item]:
    """landmark-multiview, in ``labels.csv`` order sorted by id (deterministic)."""
    base = root / "landmark-multiview"
    out = []
    for row in _read_csv(base / "labels.csv"):
        if row["instance"] in AMBIGUOUS_LANDMARKS and not include_ambiguous:
            continue
        out.append(Item(row["file"], str(base / row["file"]), row["instance"], (int(row["width"]), int(row["height"]))))
    return sorted(out, key=lambda it: it.id)


def ukbench_items(root: Path) -> list[Item]:
    base = root / "ukbench-subset"
    out = [Item(r["file"], str(base / r["file"]), f"object{int(r['object_id']):02d}", (int(r["width"]), int(r["height"]))) for r in _read_csv(base / "labels.csv")]
    return sorted(out, key=lambda it: it.id)


def _read_matrix(path: Path) -> np.ndarray:
    H = np.loadtxt(path, dtype=np.float64).reshape(3, 3)
    return H / H[2, 2]


def homography_pairs(root: Path) -> list[HomographyPair]:
    base = root / "homography-pairs"
    out = []
    for row in _read_csv(base / "pairs.csv"):
        s1 = tuple(int(v) for v in row["size1"].split("x"))
        s2 = tuple(int(v) for v in row["size2"].split("x"))
        if row["set"] == "oxford_graf":
            name = f"oxford_graf/1-{Path(row['img2']).stem[3:]}"
        else:
            name = f"evd/{Path(row['img1']).stem}"
        out.append(
            HomographyPair(
                name=name,
                set=row["set"],
                img1=Item(row["img1"], str(base / row["img1"]), name, s1),  # type: ignore[arg-type]
                img2=Item(row["img2"], str(base / row["img2"]), name, s2),  # type: ignore[arg-type]
                H=_read_matrix(base / row["H"]),
            )
        )
    return out


def wxbs_pairs(root: Path) -> list[WxbsPair]:
    """Complete pair folders (both ``01`` and ``02``), sorted by name."""
    base = root / "wxbs-v1.1"
    out = []
    for corrs in sorted(base.glob("*/*/corrs.txt")):
        folder = corrs.parent
        name = folder.relative_to(base).as_posix()
        ims = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")}
        if "01" not in ims or "02" not in ims:
            continue
        c = np.loadtxt(corrs, dtype=np.float64).reshape(-1, 4)
        i1, i2 = (Item(ims[k].relative_to(base).as_posix(), str(ims[k]), name) for k in ("01", "02"))
        out.append(WxbsPair(name, i1, i2, c))
    return out


def wxbs_scene(name: str) -> str:
    """A coarse scene key: folder name without its category, trailing digits and
    anything after the first ``_`` (``WGALBS/kyiv_dolltheater2`` -> ``kyiv``). Folders
    sharing a key may show the same place (``WGABS/kyiv`` and ``WLABS/kyiv`` do;
    ``ministry``, ``lab``/``lab2``, ``kettle``/``kettle2``, ``submarine``/``submarine2``
    are repeated scenes), so they never form a negative pair."""
    leaf = name.split("/")[-1]
    return re.sub(r"\d+$", "", leaf).split("_")[0]


def positive_pairs(items: Sequence[Item]) -> list[tuple[int, int]]:
    """All ``(i, j)``, ``i < j``, with the same label."""
    return [(i, j) for i in range(len(items)) for j in range(i + 1, len(items)) if items[i].label == items[j].label]


def negative_pairs(items: Sequence[Item], n: int | None, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` cross-label pairs ``(i, j)``, ``i < j``, drawn without replacement with a
    fixed seed (all of them, sorted, when ``n`` is ``None`` or exceeds their number)."""
    every = [(i, j) for i in range(len(items)) for j in range(i + 1, len(items)) if items[i].label != items[j].label]
    if n is None or n >= len(every):
        return every
    rng = random.Random(seed)
    return sorted(rng.sample(every, n))


def open_dataset_store(path: str | os.PathLike[str], items: Iterable[Item], embeddings: dict[str, np.ndarray] | None = None):
    """A SQLite store at ``path`` holding one sample per item (id, uri, label, and an
    embedding when given): features are cached in it as artefacts, the ASMK index
    trains on its samples, and the core's vector retriever searches its embeddings.
    Samples of the store that are not among ``items`` are deleted (a subset run after a
    full one must not retrieve images outside the subset)."""
    from consist.records import Sample
    from consist.stores.sqlite import SQLiteStore

    store = SQLiteStore(path)
    items = list(items)
    wanted = {it.id for it in items}
    with store.transaction():
        for s in list(store.samples()):
            if s.id not in wanted:
                store.delete(s.id, reason="not in this benchmark run")
        store.put(
            [Sample(it.id, uri=it.path, label=it.label, embedding=None if embeddings is None else embeddings.get(it.id)) for it in items],
            reason="bench_spatial",
            force=True,
        )
    return store
