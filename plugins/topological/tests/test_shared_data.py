"""On the shared real photos (skipped when ../shared/data is absent, as in CI):
TR separates same-landmark from cross-landmark pairs."""

from __future__ import annotations

import csv
import random

import pytest
from conftest import SHARED

from consist.images import load_image
from consist_spatial.features import SiftExtractor
from consist_topological.tr import topological_ransac

pytestmark = pytest.mark.skipif(not (SHARED / "landmark-multiview" / "labels.csv").is_file(), reason="shared data folder absent")


def test_tr_separates_same_and_different_landmarks() -> None:
    base = SHARED / "landmark-multiview"
    with open(base / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["instance"] != "alamo_plaza_1dsfm"]
    rng = random.Random(0)
    by_label: dict[str, list[str]] = {}
    for r in rows:
        by_label.setdefault(r["instance"], []).append(r["file"])
    labels = sorted(by_label)
    pos = [tuple(rng.sample(by_label[lb], 2)) for lb in rng.sample(labels, 8)]
    neg = []
    for _ in range(8):
        a, b = rng.sample(labels, 2)
        neg.append((rng.choice(by_label[a]), rng.choice(by_label[b])))
    ext = SiftExtractor(max_side=640, max_keypoints=1024)
    cache: dict[str, object] = {}

    def feats(f: str) -> object:
        if f not in cache:
            cache[f] = ext.extract(load_image(str(base / f)))
        return cache[f]

    sp = [topological_ransac(feats(a), feats(b)).score for a, b in pos]
    sn = [topological_ransac(feats(a), feats(b)).score for a, b in neg]
    auc = sum((p > n) + 0.5 * (p == n) for p in sp for n in sn) / (len(sp) * len(sn))
    assert auc >= 0.85, (auc, sp, sn)
