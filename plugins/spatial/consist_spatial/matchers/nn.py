"""Mutual nearest neighbour + Lowe's ratio test: in numpy (:class:`NNMatcher`, no
torch) and on torch for CUDA (:class:`TorchNNMatcher`), with the same filters so that
CPU and GPU agree."""

from __future__ import annotations

import attrs
import numpy as np

from consist_spatial.features import LocalFeatures
from consist_spatial.matchers.base import EMPTY_MATCHES, sorted_by_query
from consist_spatial.matching import LOWE_RATIO, match_descriptors
from consist_spatial.torch_models import import_torch, resolve_device

__all__ = ["NNMatcher", "TorchNNMatcher"]


@attrs.frozen
class NNMatcher:
    """Mutual nearest neighbour + ratio test in numpy
    (:func:`~consist_spatial.matching.match_descriptors`); scores ``1 - d1/d2``."""

    ratio: float | None = LOWE_RATIO
    mutual: bool = True

    def match(self, f1: LocalFeatures, f2: LocalFeatures) -> np.ndarray:
        return match_descriptors(f1.descriptors, f2.descriptors, ratio=self.ratio, mutual=self.mutual)

    def match_scored(self, f1: LocalFeatures, f2: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        m = self.match(f1, f2)
        if len(m) == 0 or len(f2) < 2:
            return m, np.ones(len(m), np.float32)
        a = np.asarray(f1.descriptors, np.float32)[m[:, 0]]
        b = np.asarray(f2.descriptors, np.float32)
        d = np.sqrt(np.maximum(np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None] - 2 * a @ b.T, 0))
        two = np.partition(d, 1, axis=1)[:, :2]
        return m, (1.0 - two[:, 0] / np.maximum(two[:, 1], 1e-12)).astype(np.float32)


@attrs.frozen
class TorchNNMatcher:
    """Mutual nearest neighbour + Lowe's ratio on torch (for ``device="cuda"``), built on
    ``kornia.feature.match_snn`` / ``match_nn`` over one distance matrix, plus the mutual
    check: the same filters as :func:`~consist_spatial.matching.match_descriptors`
    (ratio test from the query's side), so CPU and GPU agree up to float rounding.
    Scores ``1 - d1/d2`` (1 without the ratio test)."""

    ratio: float | None = LOWE_RATIO
    mutual: bool = True
    device: str = "cuda"

    def match(self, f1: LocalFeatures, f2: LocalFeatures) -> np.ndarray:
        return self.match_scored(f1, f2)[0]

    def match_scored(self, f1: LocalFeatures, f2: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        n1, n2 = len(f1), len(f2)
        if n1 == 0 or n2 == 0 or (self.ratio is not None and n2 < 2):
            return EMPTY_MATCHES.copy(), np.zeros(0, np.float32)
        if f1.descriptors.shape[1] != f2.descriptors.shape[1]:
            raise ValueError(f"descriptor sizes differ: {f1.descriptors.shape[1]} vs {f2.descriptors.shape[1]}")
        torch = import_torch()
        import kornia.feature as kf

        dev = resolve_device(self.device)
        with torch.inference_mode():
            d1 = torch.from_numpy(np.array(f1.descriptors, np.float32)).to(dev)
            d2 = torch.from_numpy(np.array(f2.descriptors, np.float32)).to(dev)
            dm = torch.cdist(d1, d2)
            if self.ratio is not None:
                # strict "<" as in the numpy matcher (match_snn keeps "<=")
                vals, idx = kf.match_snn(d1, d2, float(np.nextafter(np.float32(self.ratio), np.float32(0))), dm)
                scores = 1.0 - vals.view(-1)
            else:
                _, idx = kf.match_nn(d1, d2, dm)
                scores = torch.ones(len(idx), device=dm.device)
            if self.mutual and len(idx):
                back = dm.argmin(dim=0)
                keep = back[idx[:, 1]] == idx[:, 0]
                idx, scores = idx[keep], scores[keep]
            m, s = idx.cpu().numpy().astype(np.int64).reshape(-1, 2), scores.float().cpu().numpy()
        return sorted_by_query(m, s)
