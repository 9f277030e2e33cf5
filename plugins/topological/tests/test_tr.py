"""Topological RANSAC on real photos: views of one object verify with a large
homeomorphic region, unrelated photos do not; the fovea test is scale- and
rotation-aware."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EXTRACTOR, rotate, shrink, skimage_data, warp

from consist_spatial.features import LocalFeatures
from consist_topological.tr import TrParams, _cells, _mutual_ratio, topological_ransac


@pytest.fixture(scope="module")
def feats() -> dict[str, LocalFeatures]:
    astro = shrink(skimage_data.astronaut())
    coffee = shrink(skimage_data.coffee())
    cat = shrink(skimage_data.chelsea())
    images = {
        "astro": astro,
        "astro_warp": warp(astro, 0.12, 0.02),
        "astro_rot": rotate(astro, 35, 0.75),
        "coffee": coffee,
        "cat": cat,
    }
    return {k: EXTRACTOR.extract(v) for k, v in images.items()}


def test_views_of_one_object_form_a_large_region_and_unrelated_photos_do_not(feats: dict[str, LocalFeatures]) -> None:
    same = topological_ransac(feats["astro"], feats["astro_warp"])
    assert same.score >= 60 and same.regions >= 1 and same.foveas > 0
    assert same.region_sizes[0] == same.score and same.matches.shape == (same.score, 2)
    assert len(set(same.matches[:, 0].tolist())) == same.score == len(set(same.matches[:, 1].tolist())), "regions are one-to-one"
    assert same.hull is not None and len(same.hull) >= 3
    for a, b in (("astro", "coffee"), ("astro", "cat"), ("coffee", "cat")):
        diff = topological_ransac(feats[a], feats[b])
        assert diff.score < 15, (a, b, diff)
    ev = same.evidence()
    assert ev["tr_score"] == same.score and ev["tr_regions"] == same.regions


def test_scale_and_rotation_aware_fovea_keeps_rotated_zoomed_views(feats: dict[str, LocalFeatures]) -> None:
    aware = topological_ransac(feats["astro"], feats["astro_rot"])
    plain = topological_ransac(feats["astro"], feats["astro_rot"], TrParams(scale_aware=False))
    assert aware.score >= 30
    assert aware.score > plain.score, (aware.score, plain.score)


def test_seeds_inside_verified_hulls_are_skipped(feats: dict[str, LocalFeatures]) -> None:
    r = topological_ransac(feats["astro"], feats["astro_warp"])
    # far fewer fovea checks than seeds x saccades: explored areas are not re-seeded
    assert r.foveas < r.seeds + r.score
    empty = feats["astro"].subset(np.arange(5))
    assert topological_ransac(empty, feats["astro"]).score == 0


def test_grid_cells_and_local_matching_helpers() -> None:
    pts = np.array([[0, 0], [10, 10], [5, 5], [0, 10]], dtype=np.float64)
    assert _cells(pts, 3).tolist() == [0, 8, 4, 2]
    d = np.array([[0.0, 4.0, 9.0], [4.0, 0.1, 0.12], [9.0, 9.0, 0.05]])
    m = _mutual_ratio(d, 0.8)
    assert m.tolist() == [[0, 0], [2, 2]], "row 1 is ambiguous (0.1 vs 0.12) and fails the ratio test"
