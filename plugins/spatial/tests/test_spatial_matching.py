from __future__ import annotations

import numpy as np
import pytest

from consist_spatial import LOWE_RATIO, match_descriptors, matching


def _unit(rng: np.random.Generator, n: int, d: int = 32) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_lowe_default() -> None:
    assert LOWE_RATIO == 0.8


def test_identical_sets_match_one_to_one() -> None:
    d = _unit(np.random.default_rng(0), 50)
    perm = np.random.default_rng(1).permutation(50)
    m = match_descriptors(d, d[perm])
    assert m.shape == (50, 2) and m.dtype == np.int64
    np.testing.assert_array_equal(perm[m[:, 1]], m[:, 0])


def test_ratio_test_drops_ambiguous_matches() -> None:
    rng = np.random.default_rng(2)
    d1 = _unit(rng, 10)
    e = (0.01 * rng.normal(size=d1.shape)).astype(np.float32)
    d2 = np.concatenate([d1 + e, d1 - e])  # two equally near candidates each: ratio 1
    assert len(match_descriptors(d1, d2, mutual=False)) == 0  # two near-equal candidates each
    assert len(match_descriptors(d1, d2, ratio=None, mutual=False)) == 10


def test_mutual_check() -> None:
    # two query points share one nearest neighbour: without the mutual check both match it
    d1 = np.array([[0.0, 0.0], [0.1, 0.0]], np.float32)
    d2 = np.array([[0.05, 0.0], [5.0, 5.0]], np.float32)
    assert len(match_descriptors(d1, d2, mutual=False)) == 2
    m = match_descriptors(d1, d2, mutual=True)
    assert m.tolist() == [[0, 0]] or m.tolist() == [[1, 0]]


def test_empty_and_too_few() -> None:
    d = _unit(np.random.default_rng(3), 5)
    assert match_descriptors(d[:0], d).shape == (0, 2)
    assert match_descriptors(d, d[:0]).shape == (0, 2)
    assert match_descriptors(d, d[:1]).shape == (0, 2)  # no second neighbour for the ratio test
    assert len(match_descriptors(d, d[:1], ratio=None)) == 1
    with pytest.raises(ValueError):
        match_descriptors(d, np.zeros((5, 3), np.float32))


def test_blocked_computation_matches_unblocked(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    d1, d2 = _unit(rng, 300), _unit(rng, 200)
    d2[:100] = d1[:100] + 0.05 * _unit(rng, 100)
    whole = match_descriptors(d1, d2)
    monkeypatch.setattr(matching, "_BLOCK", 37)
    np.testing.assert_array_equal(match_descriptors(d1, d2), whole)
    assert len(whole) >= 90


def test_uint8_descriptors() -> None:
    d = np.random.default_rng(5).integers(0, 255, (40, 128)).astype(np.uint8)
    assert len(match_descriptors(d, d)) == 40


def _naive(a: np.ndarray, b: np.ndarray, ratio: float | None, mutual: bool) -> np.ndarray:
    """The definition, written out: full distance matrix, argmin both ways."""
    d = ((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1)
    nn = d.argmin(1)
    keep = np.ones(len(a), bool)
    if ratio is not None:
        s = np.sort(d, 1)
        keep &= s[:, 0] < ratio * ratio * s[:, 1]
    if mutual:
        keep &= d.argmin(0)[nn] == np.arange(len(a))
    idx = np.flatnonzero(keep)
    return np.stack([idx, nn[idx]], axis=1)


@pytest.mark.parametrize("ratio", [None, 0.8])
@pytest.mark.parametrize("mutual", [True, False])
def test_agrees_with_the_definition_including_ties(ratio: float | None, mutual: bool) -> None:
    rng = np.random.default_rng(7)
    b = rng.integers(0, 8, size=(300, 16)).astype(np.float32)  # a coarse lattice: many exact ties
    a = np.r_[b[:150] + rng.integers(-1, 2, size=(150, 16)), rng.integers(0, 8, size=(100, 16))].astype(np.float32)
    a[:20] = b[:20]  # duplicates: distance exactly 0
    b[200:210] = b[:10]  # repeated database points: ties in the mutual check
    got = match_descriptors(a, b, ratio=ratio, mutual=mutual)
    np.testing.assert_array_equal(got, _naive(a, b, ratio, mutual))
