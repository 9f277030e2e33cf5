from __future__ import annotations

import numpy as np
import pydegensac
import pytest
from shapely.geometry import Polygon

from consist.records import Region
from consist_spatial import DEFAULT_THRESHOLDS, Verification, match_features, project_points, verify_pair


def _median_error(H_est, H_true, size) -> float:
    w, h = size
    pts = np.random.default_rng(0).uniform([0, 0], [w, h], (300, 2))
    return float(np.median(np.linalg.norm(project_points(H_est, pts)[0] - project_points(H_true, pts)[0], axis=1)))


def _iou(a, b) -> float:
    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket"])
def test_warped_copy_verifies_and_recovers_H(name, feats, warped_feats, h_true) -> None:
    f1, f2 = feats[name], warped_feats[name]
    m = match_features(f1, f2)
    v = verify_pair(f1, f2, m)
    assert v.verified, v.reason
    assert v.inliers >= 50 and v.inlier_ratio > 0.5
    assert v.H is not None and v.F is None and abs(v.H[2][2] - 1) < 1e-9
    assert _median_error(v.H, h_true, f1.image_size) < 3.0
    assert 0.6 < v.scale_change < 1.2
    assert v.inlier_hull is not None and len(v.inlier_hull) >= 3
    assert v.coverage > 0.2
    assert v.reason == ""
    assert len(v.inlier_matches) >= v.inliers


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_projected_polygon_matches_true_corners(name, feats, warped_feats, h_true) -> None:
    f1, f2 = feats[name], warped_feats[name]
    v = verify_pair(f1, f2, match_features(f1, f2))
    w, h = f1.image_size
    true = project_points(h_true, [[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])[0]
    assert _iou(v.polygon, true) > 0.8


def test_query_region_is_projected(feats, warped_feats, h_true) -> None:
    f1, f2 = feats["astronaut"], warped_feats["astronaut"]
    region = Region.from_box(150, 50, 350, 300)
    inside = (f1.keypoints[:, 0] >= 150) & (f1.keypoints[:, 0] <= 350) & (f1.keypoints[:, 1] >= 50) & (f1.keypoints[:, 1] <= 300)
    fq = f1.subset(inside)
    v = verify_pair(fq, f2, match_features(fq, f2), query_region=region)
    assert v.verified, v.reason
    true = project_points(h_true, region.vertices)[0]
    assert _iou(v.polygon, true) > 0.8
    assert v.coverage > 0.3  # coverage is relative to the region, not the image


@pytest.mark.parametrize("a,b", [("astronaut", "chelsea"), ("coffee", "rocket"), ("chelsea", "coffee"), ("rocket", "astronaut")])
@pytest.mark.parametrize("estimator", ["degensac", "magsac"])
def test_different_photos_do_not_verify(a, b, estimator, feats, warped_feats) -> None:
    f1, f2 = feats[a], warped_feats[b]
    v = verify_pair(f1, f2, match_features(f1, f2), estimator=estimator)
    assert not v.verified and v.reason
    assert v.inliers < 15


@pytest.mark.parametrize("estimator", ["degensac", "magsac"])
def test_stereo_pair_verifies_with_H_and_F(motorcycle, estimator) -> None:
    left, right = motorcycle
    m = match_features(left, right)
    assert len(m) > 100
    vh = verify_pair(left, right, m, estimator=estimator)
    assert vh.verified, vh.reason
    vf = verify_pair(left, right, m, model="fundamental", estimator=estimator)
    assert vf.verified, vf.reason
    assert vf.F is not None and vf.H is None and vf.polygon is None and vf.inlier_hull is not None
    assert vf.inliers > 100
    F = np.asarray(vf.F)
    assert np.linalg.norm(F) == pytest.approx(1.0)
    # rectified stereo: corresponding points lie on the same row, and F says so
    q = left.keypoints[vf.inlier_matches[:, 0]].astype(float)
    d = right.keypoints[vf.inlier_matches[:, 1]].astype(float)
    lines = np.c_[q, np.ones(len(q))] @ F.T  # epipolar lines in the right image
    dist = np.abs((lines * np.c_[d, np.ones(len(d))]).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)
    assert np.median(dist) < 1.0
    assert np.median(np.abs(q[:, 1] - d[:, 1])) < 2.0


def test_same_seed_same_answer(feats, warped_feats) -> None:
    f1, f2 = feats["coffee"], warped_feats["coffee"]
    m = match_features(f1, f2)
    runs = [verify_pair(f1, f2, m, seed=7) for _ in range(3)] + [verify_pair(f1, f2, m, estimator="magsac") for _ in range(2)]
    assert runs[0].H == runs[1].H == runs[2].H and runs[0].inliers == runs[2].inliers
    assert runs[3].H == runs[4].H


def test_too_few_matches_never_calls_the_estimator(feats, monkeypatch) -> None:
    def boom(*_a, **_k):
        raise AssertionError("estimator must not be called")

    monkeypatch.setattr(pydegensac, "findHomography", boom)
    monkeypatch.setattr(pydegensac, "findFundamentalMatrix", boom)
    f = feats["chelsea"]
    m = np.stack([np.arange(6), np.arange(6)], axis=1)
    v = verify_pair(f, f, m[:3], min_inliers=0)
    assert not v.verified and "3 tentative matches, 4 needed" in v.reason
    v = verify_pair(f, f, m, model="fundamental", min_inliers=0)
    assert not v.verified and "6 tentative matches, 8 needed" in v.reason
    v = verify_pair(f, f, np.zeros((0, 2), int))
    assert not v.verified and v.inliers == 0 and v.H is None
    v = verify_pair(f, f, np.stack([np.arange(14), np.arange(14)], axis=1))  # below min_inliers 15
    assert not v.verified and "14 tentative matches, 15 needed" in v.reason


def test_blank_image_gives_no_model(feats, extractor) -> None:
    blank = extractor.extract(np.zeros((200, 300, 3), np.uint8))
    v = verify_pair(feats["rocket"], blank, match_features(feats["rocket"], blank))
    assert not v.verified and v.matches == 0 and v.H is None


@pytest.mark.parametrize("failure", ["zeros", "raises", "nan"])
def test_estimator_failures_are_no_model(feats, monkeypatch, failure) -> None:
    def fake(p1, p2, *a, **k):
        if failure == "raises":
            raise ValueError("degenerate")
        H = np.zeros((3, 3)) if failure == "zeros" else np.full((3, 3), np.nan)
        return H, np.zeros(len(p1), bool) if failure == "zeros" else np.ones(len(p1), bool)

    monkeypatch.setattr(pydegensac, "findHomography", fake)
    f = feats["chelsea"]
    m = np.stack([np.arange(40), np.arange(40)], axis=1)
    v = verify_pair(f, f, m)
    assert not v.verified and v.reason == "no model found" and v.H is None


def _with_fixed_H(monkeypatch, H) -> None:
    monkeypatch.setattr(pydegensac, "findHomography", lambda p1, p2, *a, **k: (np.asarray(H, float), np.ones(len(p1), bool)))


@pytest.mark.parametrize(
    "H,reason",
    [
        ([[0.01, 0, 0], [0, 0.01, 0], [0, 0, 1]], "covers"),  # the image collapses to a speck
        ([[20, 0, 0], [0, 20, 0], [0, 0, 1]], "scale change"),
        ([[1, 0, 0], [0, 1, 0], [-0.004, 0, 1]], "horizon"),  # the right side goes behind the camera
        ([[1, 0, 5000], [0, 1, 5000], [0, 0, 1]], "outside the neighbour"),
    ],
)
def test_degenerate_homographies_are_rejected(feats, monkeypatch, H, reason) -> None:
    _with_fixed_H(monkeypatch, H)
    f = feats["astronaut"]  # 512 x 512
    m = np.stack([np.arange(100), np.arange(100)], axis=1)
    v = verify_pair(f, f, m)
    assert not v.verified and reason in v.reason, v.reason
    assert v.inliers >= 15 and v.H is not None  # the fit is reported, with why it was refused


def test_collinear_inliers_are_rejected(monkeypatch) -> None:
    from consist_spatial import LocalFeatures

    xy = np.c_[np.linspace(10, 90, 30), np.linspace(10, 90, 30)]
    f = LocalFeatures(xy, np.ones(30), np.zeros(30), np.eye(30, 8, dtype=np.float32), (100, 100))
    _with_fixed_H(monkeypatch, np.eye(3))
    v = verify_pair(f, f, np.stack([np.arange(30), np.arange(30)], axis=1))
    assert not v.verified and "collinear" in v.reason


def test_duplicate_positions_count_once(monkeypatch) -> None:
    from consist_spatial import LocalFeatures

    rng = np.random.default_rng(0)
    xy = np.repeat(rng.uniform(0, 100, (10, 2)), 3, axis=0)  # 10 places x 3 orientations
    f = LocalFeatures(xy, np.ones(30), np.zeros(30), np.eye(30, 8, dtype=np.float32), (100, 100))
    _with_fixed_H(monkeypatch, np.eye(3))
    v = verify_pair(f, f, np.stack([np.arange(30), np.arange(30)], axis=1))
    assert v.inliers == 10 and not v.verified


def test_working_frame_threshold_and_arguments(feats) -> None:
    assert DEFAULT_THRESHOLDS == {"homography": 4.0, "fundamental": 1.0}
    f = feats["coffee"]
    with pytest.raises(ValueError):
        verify_pair(f, f, np.zeros((0, 2), int), model="affine")
    with pytest.raises(ValueError):
        verify_pair(f, f, np.zeros((0, 2), int), estimator="ransac")


def test_evidence_is_json(feats, warped_feats) -> None:
    import json

    f1, f2 = feats["chelsea"], warped_feats["chelsea"]
    v = verify_pair(f1, f2, match_features(f1, f2))
    ev = json.loads(json.dumps(v.evidence()))
    assert ev["verified"] and ev["inliers"] == v.inliers and len(ev["H"]) == 3 and len(ev["projected"]) >= 3
    assert isinstance(Verification(False, reason="x").evidence(), dict)


def test_fundamental_without_parallax_falls_back_to_homography(feats) -> None:
    """A duplicate photo has no epipolar geometry (DEGENSAC finds no F); the pair is
    still the same image, verified by a homography."""
    f = feats["coffee"]
    v = verify_pair(f, f, match_features(f, f), model="fundamental")
    assert v.verified and v.model == "homography" and v.H is not None
    np.testing.assert_allclose(np.asarray(v.H), np.eye(3), atol=1e-3)


def test_localisation_rasterises_to_a_mask_matching_the_true_warp(feats, warped_feats, h_true) -> None:
    from consist.metrics import mask_iou
    from consist_spatial import rasterise

    f1, f2 = feats["astronaut"], warped_feats["astronaut"]
    v = verify_pair(f1, f2, match_features(f1, f2))
    w, h = f2.image_size
    mask = v.mask((w, h))
    assert mask.shape == (h, w) and mask.dtype == bool
    true = rasterise(project_points(h_true, [[0, 0], [f1.image_size[0], 0], list(f1.image_size), [0, f1.image_size[1]]])[0], (w, h))
    assert mask_iou(mask, true) > 0.85
    # a square fills exactly its pixels; outside parts are clipped
    sq = rasterise([[2, 2], [6, 2], [6, 6], [2, 6]], (10, 8))
    assert sq.sum() == 25 and sq[2:7, 2:7].all()
    assert rasterise([[-5, -5], [5, -5], [5, 5], [-5, 5]], (10, 10)).sum() == 36


def test_consistent_matches_find_the_similarity_of_a_true_pair(extractor, photos, warp_image) -> None:
    """A rotated, scaled copy: the matches agree on one scale/orientation change,
    while the matches between two unrelated photos scatter over the bins."""
    from consist_spatial import consistent_matches, pair_score

    img = photos["astronaut"]
    c, s = np.cos(np.radians(40)), np.sin(np.radians(40))
    S = np.array([[0.7 * c, -0.7 * s, 200.0], [0.7 * s, 0.7 * c, 0.0], [0, 0, 1]])
    f1, f2 = extractor.extract(img), extractor.extract(warp_image(img, S))
    m = match_features(f1, f2)
    same = consistent_matches(f1, f2, m)
    assert len(m) > 50 and same > 0.8 * len(m)
    other = extractor.extract(photos["coffee"])
    m2 = match_features(f1, other)
    diff = consistent_matches(f1, other, m2)
    assert diff < 0.5 * max(1, len(m2)) and diff < 15
    v = verify_pair(f1, f2, m)
    assert v.verified and v.consistent == same and v.score == pytest.approx(pair_score(v.inliers, same))
    assert verify_pair(f1, other, m2).score < 0.2 * v.score


def test_consistent_matches_without_scale_or_orientation_counts_every_match() -> None:
    from consist_spatial import LocalFeatures, consistent_matches

    rng = np.random.default_rng(0)
    f = LocalFeatures(rng.random((10, 2)) * 100, np.ones(10), np.zeros(10), rng.random((10, 8)), (100, 100))
    assert consistent_matches(f, f, np.c_[np.arange(10), np.arange(10)]) == 10
    assert consistent_matches(f, f, np.zeros((0, 2), np.int64)) == 0


def test_pair_score_is_the_geometric_mean_in_inlier_units() -> None:
    from consist_spatial import pair_score

    assert pair_score(0, 0) == 0.0
    assert pair_score(20, 20) == pytest.approx(20.0)
    assert pair_score(30, 0) < pair_score(15, 15)  # needs both kinds of evidence
    assert pair_score(-3, 5) == pair_score(0, 5)
