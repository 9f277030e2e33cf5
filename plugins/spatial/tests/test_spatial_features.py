from __future__ import annotations

import cv2
import numpy as np
import pytest

import consist
from consist.images import load_gray, load_image
from consist.records import Query, Sample
from consist_spatial import LocalFeatures, SiftExtractor, features_for, rootsift
from consist_spatial.features import resize_long_side


def test_sift_defaults_and_kind() -> None:
    ex = SiftExtractor()
    assert (ex.max_keypoints, ex.max_side, ex.root) == (2048, 1024, True)
    assert ex.kind == "features/sift-rootsift-1024-2048"
    assert SiftExtractor(max_side=640, max_keypoints=500, root=False).kind == "features/sift-640-500"
    assert SiftExtractor(contrast_threshold=0.02).kind != ex.kind


def test_extract_is_rootsift_in_original_coordinates(photos, feats) -> None:
    f = feats["astronaut"]
    assert 100 < len(f) <= 2048
    assert f.keypoints.dtype == np.float32 and f.keypoints.shape == (len(f), 2)
    assert f.image_size == (512, 512) and f.resize_factor == 1.0
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-4)  # RootSIFT is unit-norm
    assert (f.descriptors >= 0).all()


def test_downscaled_keypoints_map_back_to_original_pixels(photos) -> None:
    """A 2x upscaled photo extracted at max_side = its original size gives keypoints at
    twice the coordinates of the original photo's keypoints."""
    import cv2

    img = photos["coffee"]  # 600 x 400
    big = cv2.resize(img, (1200, 800), interpolation=cv2.INTER_CUBIC)
    small = SiftExtractor(max_side=None, max_keypoints=500).extract(img)
    f = SiftExtractor(max_side=600, max_keypoints=500).extract(big)
    assert f.image_size == (1200, 800) and f.resize_factor == pytest.approx(0.5)
    assert f.working_size == (600, 400)
    assert f.keypoints[:, 0].max() > 700  # in big-image pixels
    # each downscaled-extraction keypoint has an original-extraction keypoint at half its position
    d = np.linalg.norm((f.keypoints[:, None, :] + 0.5) / 2 - 0.5 - small.keypoints[None, :, :], axis=2).min(axis=1)
    assert np.median(d) < 0.5
    np.testing.assert_allclose(np.median(f.scales) / 2, np.median(small.scales), rtol=0.25)


def test_resize_long_side_never_upscales() -> None:
    img = np.zeros((100, 50, 3), np.uint8)
    assert resize_long_side(img, 200)[1] == 1.0
    out, factor = resize_long_side(img, 50)
    assert out.shape[:2] == (50, 25) and factor == pytest.approx(0.5)


def test_blank_image_has_no_keypoints(extractor) -> None:
    f = extractor.extract(np.full((120, 160, 3), 127, np.uint8))
    assert len(f) == 0 and f.descriptors.shape[0] == 0
    assert LocalFeatures.from_bytes(f.to_bytes()).image_size == (160, 120)


def test_rootsift_of_empty_and_known() -> None:
    assert rootsift(np.zeros((0, 128))).shape == (0, 128)
    r = rootsift(np.array([[4.0, 0.0, 0.0, 12.0]]))
    np.testing.assert_allclose(r, [[0.5, 0.0, 0.0, np.sqrt(0.75)]], atol=1e-6)


@pytest.mark.parametrize("quantize", [True, False])
def test_to_bytes_round_trip(feats, quantize: bool) -> None:
    f = feats["chelsea"]
    blob = f.to_bytes(quantize=quantize)
    g = LocalFeatures.from_bytes(blob)
    np.testing.assert_array_equal(g.keypoints, f.keypoints)
    np.testing.assert_array_equal(g.scales, f.scales)
    np.testing.assert_array_equal(g.angles, f.angles)
    assert (g.image_size, g.resize_factor, g.extractor) == (f.image_size, f.resize_factor, f.extractor)
    assert g.descriptors.dtype == np.float32
    np.testing.assert_allclose(g.descriptors, f.descriptors, atol=0.003 if quantize else 5e-4)
    # compact: quantised RootSIFT costs ~1 byte per dimension
    if quantize:
        assert len(blob) < len(f) * (128 + 16) + 2048


def test_uint8_descriptors_round_trip_exactly() -> None:
    rng = np.random.default_rng(0)
    f = LocalFeatures(rng.random((5, 2)) * 100, np.ones(5), np.zeros(5), rng.integers(0, 255, (5, 128), dtype=np.uint8), (100, 80), 0.5, "x")
    g = LocalFeatures.from_bytes(f.to_bytes())
    assert g == f and g.descriptors.dtype == np.uint8


def test_from_bytes_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        LocalFeatures.from_bytes(b"not an npz")


def test_features_record_validates() -> None:
    with pytest.raises(ValueError):
        LocalFeatures(np.zeros((3, 2)), np.zeros(2), np.zeros(3), np.zeros((3, 4)), (10, 10))


def test_store_cache_is_read_back(photo_files, counting_extractor) -> None:
    store = consist.open_store("memory://")
    sample = Sample(id="cat1", uri=str(photo_files["chelsea"]), label="cat")
    store.put([sample])
    ex = counting_extractor()
    first = features_for(sample, store, ex)
    assert type(ex).calls == 1
    assert store.get_artefact("cat1", "features/sift-rootsift-640-2048") is not None
    second = features_for(sample, store, ex)
    assert type(ex).calls == 1  # answered by the cache
    np.testing.assert_array_equal(first.keypoints, second.keypoints)
    np.testing.assert_allclose(first.descriptors, second.descriptors, atol=0.003)
    # another parameter set is another artefact kind: no stale features
    other = counting_extractor(max_keypoints=100)
    assert len(features_for(sample, store, other)) <= 100
    assert type(other).calls == 1


def test_cache_notices_a_changed_image(photo_files, counting_extractor) -> None:
    store = consist.open_store("memory://")
    ex = counting_extractor()
    features_for(Sample(id="s", uri=str(photo_files["chelsea"])), store, ex)
    moved = features_for(Sample(id="s", uri=str(photo_files["rocket"])), store, ex)
    assert type(ex).calls == 2
    assert moved.image_size == (640, 427)


def test_queries_cached_only_when_asked(photos, counting_extractor) -> None:
    store = consist.open_store("memory://")
    q = Query(id="q1", image=photos["coffee"])
    ex = counting_extractor()
    features_for(q, store, ex)
    features_for(q, store, ex)
    assert type(ex).calls == 2 and store.get_artefact("q1", ex.kind) is None
    features_for(q, store, ex, cache_queries=True)
    features_for(q, store, ex, cache_queries=True)
    assert type(ex).calls == 3
    # same id, other pixels: recomputed
    features_for(Query(id="q1", image=photos["rocket"]), store, ex, cache_queries=True)
    assert type(ex).calls == 4


def test_without_store_and_unreadable(photo_files, extractor, tmp_path) -> None:
    f = features_for(Sample(id="a", uri=str(photo_files["rocket"])), None, extractor)
    assert f.image_size == (640, 427)
    with pytest.raises(consist.ImageError):
        features_for(Sample(id="b", uri=str(tmp_path / "missing.png")), None, extractor)
    with pytest.raises(consist.ImageError):
        features_for(Query(id="c"), None, extractor)


def test_grey_fast_path_matches_the_rgb_path(tmp_path) -> None:
    """A JPEG decoded straight to grey and at a reduced DCT scale gives the same
    features, in full-size coordinates, as decoding it to RGB first."""
    from PIL import Image
    from skimage import data

    img = np.concatenate([data.astronaut(), data.astronaut()[:, ::-1]], axis=1)  # 1024 x 512
    big = cv2.resize(img, (2048, 1024), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=95)
    ex = SiftExtractor(max_side=512)
    slow = ex.extract(load_image(path))
    gray, size = load_gray(path, max_side=512)
    assert size == (2048, 1024) and max(gray.shape) < 2048  # decoded reduced (1/2 or 1/4 DCT scale)
    fast = features_for(Sample(id="s", uri=str(path), label="x"), consist.open_store("memory://"), ex)
    assert fast.image_size == slow.image_size == (2048, 1024)
    assert abs(len(fast) - len(slow)) <= 0.1 * len(slow)
    # most keypoints of one are within 2 px (full-size frame) of a keypoint of the other
    d = np.linalg.norm(fast.keypoints[:, None, :] - slow.keypoints[None, :, :], axis=2).min(axis=1)
    assert np.mean(d < 2.0) > 0.8


def test_grey_loader_honours_exif_orientation(tmp_path) -> None:
    from PIL import Image
    from skimage import data

    img = data.astronaut()[:, :400]  # 512 rows x 400 cols
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / "rot.jpg"
    Image.fromarray(img).save(path, exif=exif)
    gray, size = load_gray(path, max_side=256)
    assert size == (512, 400)  # width and height swapped, like load_image
    assert load_image(path).shape[:2] == (400, 512)
    assert gray.shape[1] >= gray.shape[0]
