"""Topological RANSAC (TR): instance verification without a planar model.

An, Seon, An, Huo & Yoon, NeurIPS 2023 ("Topological RANSAC for instance
verification and retrieval without fine-tuning"). Instead of asking whether the
matches fit one homography, TR asks whether they preserve the *neighbourhood
structure* locally, which holds for non-planar objects, strong viewpoint changes
and deformations:

1. **seeds**: ratio-test correspondences (Lowe's 0.8), strongest first;
2. **fovea**: around a seed, a window in each image (~100 px); the keypoints inside
   the two windows (at least 10 on each side) are matched among themselves, and
   both matched point sets are mapped onto a 3x3 grid over their own bounding
   boxes. The fovea passes when at least 20% of the matches land in the same cell
   on both sides: the local arrangement is preserved (a homeomorphism, not a
   particular model);
3. **saccades**: the window then moves (steps of ~30 px) to the unvisited features
   of the region and the check repeats until nothing is left: one exploration is
   one homeomorphic region. Seeds inside the convex hull of an already verified
   region are skipped.

Score: the size of the largest region (distinct points), and the number of regions.

Where this implementation differs from the reference code, on purpose (the
reference scores ROC-AUC 0.57 on true/false pairs where plain inlier counts
reach 0.60, see docs/topological.md):

* the second window is scaled by the seed's keypoint scale ratio and the grid of the
  second image is rotated by the seed's orientation difference, so that the fovea
  test is scale- and rotation-invariant as the features are (the reference uses
  the same axis-aligned window on both sides, which fails under zoom and rotation);
* windows are in the *working* frame of the features (long side <= 1024 px), so
  the 100 px / 30 px constants mean the same for every photo size;
* a fovea must also contain ``min_same_cell`` (4) same-cell matches: 20% of 5
  matches is one coincidence;
* the region counts *distinct* points on both sides (one-to-one), so a repeated
  texture matched many-to-one does not inflate it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
import cv2
import numpy as np

from consist.contracts.features import LocalFeatures

__all__ = ["SEED_RATIO", "TrParams", "TrResult", "topological_ransac"]

#: Ratio test of TR's seed correspondences: 0.8, the TR paper's value (An et al.,
#: NeurIPS 2023, step 1 above), which is Lowe's (IJCV 2004, sec. 7.1: it drops 90% of
#: false matches and under 5% of true ones). TR's own constant, not imported from a
#: verifier, so that the method keeps the paper's seeds whatever plugin verifies pairs.
SEED_RATIO = 0.8


@attrs.frozen
class TrParams:
    """Parameters of TR, with the paper's defaults.

    Attributes:
        ratio: Lowe's ratio of the seed matches (0.8).
        fovea: window side in working-frame pixels (100, the paper's ~100 px).
        min_keypoints: keypoints needed in each window (10, the paper's).
        grid: cells per side of the grid over each matched point set (3: 3x3).
        min_same_cell: share of the window's matches that must land in the same
            cell on both sides (0.2, the paper's 20%).
        min_same_cell_count: and at least this many of them (4).
        saccade: the window moves to features at least this far (working px) from
            the centres visited (30, the paper's ~30 px).
        local_ratio: ratio test of the matching *inside* windows (0.9: the window
            holds few distractors, so the test can be looser than globally).
        max_seeds: seeds tried at most (200; strongest first).
        max_saccades: fovea checks per region at most (200).
        min_region: distinct points for an exploration to count as a region (4).
        scale_aware: scale the second window by the seed's keypoint scale ratio
            and rotate its grid by the orientation difference (True).
    """

    ratio: float = SEED_RATIO
    fovea: float = 100.0
    min_keypoints: int = 10
    grid: int = 3
    min_same_cell: float = 0.2
    min_same_cell_count: int = 4
    saccade: float = 30.0
    local_ratio: float = 0.9
    max_seeds: int = 200
    max_saccades: int = 200
    min_region: int = 4
    scale_aware: bool = True
    max_scale_ratio: float = 4.0


@attrs.frozen
class TrResult:
    """Outcome of TR on one pair.

    Attributes:
        score: distinct points of the largest homeomorphic region.
        regions: number of regions with at least ``min_region`` points.
        region_sizes: sizes of those regions, largest first.
        seeds: ratio-test matches available as seeds; ``foveas``: fovea checks run.
        matches: ``K x 2`` (query index, neighbour index) of the largest region.
        hull: convex hull of the largest region in the neighbour (pixels), or ``None``.
    """

    score: int
    regions: int
    region_sizes: tuple[int, ...]
    seeds: int
    foveas: int
    matches: np.ndarray = attrs.field(eq=False, repr=False, factory=lambda: np.zeros((0, 2), np.int64))
    hull: tuple[tuple[float, float], ...] | None = None

    def evidence(self) -> dict[str, Any]:
        return {
            "tr_score": self.score,
            "tr_regions": self.regions,
            "tr_region_sizes": list(self.region_sizes[:5]),
            "tr_seeds": self.seeds,
            "tr_foveas": self.foveas,
            "inlier_hull": None if self.hull is None else [[round(x, 1), round(y, 1)] for x, y in self.hull],
        }


def _working(f: LocalFeatures) -> np.ndarray:
    return f.keypoints.astype(np.float64) * f.resize_factor + (0.5 * f.resize_factor - 0.5)


def _cells(pts: np.ndarray, grid: int) -> np.ndarray:
    lo = pts.min(axis=0)
    span = np.maximum(pts.max(axis=0) - lo, 1e-9)
    c = np.minimum((grid * (pts - lo) / span).astype(np.int64), grid - 1)
    return c[:, 0] * grid + c[:, 1]


class _Visited:
    """Fovea centres visited in one exploration (Chebyshev distance, as windows are squares)."""

    def __init__(self, first: np.ndarray) -> None:
        self.pts = np.empty((16, 2))
        self.pts[0] = first
        self.n = 1

    def add(self, pt: np.ndarray) -> None:
        if self.n == len(self.pts):
            self.pts = np.concatenate([self.pts, np.empty_like(self.pts)])
        self.pts[self.n] = pt
        self.n += 1

    def far(self, pt: np.ndarray, step: float) -> bool:
        return bool(np.abs(self.pts[: self.n] - pt).max(axis=1).min() >= step)


class _Pair:
    """Precomputed state of one image pair."""

    def __init__(self, f1: LocalFeatures, f2: LocalFeatures, p: TrParams) -> None:
        self.p = p
        self.x1, self.x2 = _working(f1), _working(f2)
        self.s1 = np.maximum(f1.scales.astype(np.float64) * f1.resize_factor, 1e-3)
        self.s2 = np.maximum(f2.scales.astype(np.float64) * f2.resize_factor, 1e-3)
        self.a1 = np.deg2rad(f1.angles.astype(np.float64))
        self.a2 = np.deg2rad(f2.angles.astype(np.float64))
        d1 = np.asarray(f1.descriptors, dtype=np.float32)
        d2 = np.asarray(f2.descriptors, dtype=np.float32)
        # one GEMM per pair: every window's matching reads a block of it
        self.dist = _sq_dists(d1, d2)

    def match(self, w1: np.ndarray, w2: np.ndarray, ratio: float | None) -> np.ndarray:
        """Mutual NN + ratio test among the keypoints ``w1`` x ``w2`` (``M x 2``
        positions into ``w1`` and ``w2``)."""
        d = self.dist[np.ix_(w1, w2)] if len(w1) < len(self.x1) or len(w2) < len(self.x2) else self.dist
        return _mutual_ratio(d, ratio)

    def _window(self, x: np.ndarray, centre: np.ndarray, half: float) -> np.ndarray:
        return np.flatnonzero((np.abs(x[:, 0] - centre[0]) <= half) & (np.abs(x[:, 1] - centre[1]) <= half))

    def fovea(self, i: int, j: int) -> np.ndarray | None:
        """Fovea check centred on correspondence ``(i, j)``: the same-cell matches
        (``M x 2`` global indices) when it passes, else ``None``."""
        p = self.p
        half1 = p.fovea / 2.0
        scale, rot = 1.0, 0.0
        if p.scale_aware:
            scale = float(np.clip(self.s2[j] / self.s1[i], 1.0 / p.max_scale_ratio, p.max_scale_ratio))
            rot = float(self.a2[j] - self.a1[i])
        w1 = self._window(self.x1, self.x1[i], half1)
        w2 = self._window(self.x2, self.x2[j], half1 * scale * (1.0 if not p.scale_aware else max(abs(np.cos(rot)) + abs(np.sin(rot)), 1.0)))
        if len(w1) < p.min_keypoints or len(w2) < p.min_keypoints:
            return None
        m = self.match(w1, w2, p.local_ratio)
        if len(m) < p.min_same_cell_count:
            return None
        g1, g2 = w1[m[:, 0]], w2[m[:, 1]]
        q = self.x1[g1] - self.x1[i]
        r = self.x2[g2] - self.x2[j]
        if rot:
            c, s = np.cos(-rot), np.sin(-rot)  # undo the rotation from image 1 to image 2
            r = r @ np.array([[c, s], [-s, c]])
        same = _cells(q, p.grid) == _cells(r, p.grid)
        n_same = int(same.sum())
        if n_same < p.min_same_cell_count or n_same < p.min_same_cell * len(m):
            return None
        return np.stack([g1[same], g2[same]], axis=1)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a @ b.T
    d *= -2.0
    d += np.einsum("ij,ij->i", a, a)[:, None]
    d += np.einsum("ij,ij->i", b, b)[None, :]
    return np.maximum(d, 0.0, out=d)


def _mutual_ratio(d: np.ndarray, ratio: float | None) -> np.ndarray:
    """Mutual nearest neighbours of a squared-distance matrix passing Lowe's test
    (the rule of consist-spatial's ``match_descriptors``, written out here)."""
    n1, n2 = d.shape
    if n1 == 0 or n2 < 2:
        return np.zeros((0, 2), dtype=np.int64)
    rows = np.arange(n1)
    first = np.argmin(d, axis=1)
    keep = np.argmin(d, axis=0)[first] == rows
    if ratio is not None:
        best = d[rows, first]
        second = np.partition(d, 1, axis=1)[:, 1]
        keep &= best < (ratio * ratio) * second
    return np.stack([rows[keep], first[keep]], axis=1).astype(np.int64)


def _inside_hull(hull: np.ndarray | None, pt: np.ndarray) -> bool:
    if hull is None:
        return False
    return cv2.pointPolygonTest(hull, (float(pt[0]), float(pt[1])), False) >= 0


def topological_ransac(f1: LocalFeatures, f2: LocalFeatures, params: TrParams | None = None, *, seeds: np.ndarray | None = None) -> TrResult:
    """Run TR between query features ``f1`` and neighbour features ``f2``.

    ``seeds`` (``M x 2`` index pairs) replaces the ratio-test seeds (for example the
    matches of a learned matcher).
    """
    p = params or TrParams()
    if len(f1) < p.min_keypoints or len(f2) < p.min_keypoints:
        return TrResult(0, 0, (), 0 if seeds is None else len(seeds), 0)
    pair = _Pair(f1, f2, p)
    if seeds is None:
        seeds = _mutual_ratio(pair.dist, p.ratio)
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1, 2)
    n_seeds = len(seeds)
    if n_seeds == 0:
        return TrResult(0, 0, (), 0, 0)
    # strongest seeds first: smallest descriptor distance
    seeds = seeds[np.argsort(pair.dist[seeds[:, 0], seeds[:, 1]], kind="stable")][: p.max_seeds]
    hulls: list[np.ndarray] = []
    regions: list[np.ndarray] = []
    used1: set[int] = set()
    foveas = 0
    for i, j in seeds.tolist():
        if i in used1 or any(_inside_hull(h, pair.x1[i]) for h in hulls):
            continue
        foveas += 1
        first = pair.fovea(i, j)
        if first is None:
            continue
        region: dict[int, int] = {}  # query index -> neighbour index (one-to-one)
        taken2: set[int] = set()
        visited = _Visited(pair.x1[i])
        queue: deque[tuple[int, int]] = deque()

        def absorb(ms: np.ndarray) -> None:
            for a, b in ms.tolist():
                if a in region or b in taken2:  # noqa: B023 -- absorb() is called only within this iteration
                    continue
                region[a] = b  # noqa: B023 -- absorb() is called only within this iteration
                taken2.add(b)  # noqa: B023 -- absorb() is called only within this iteration
                pt = pair.x1[a]
                if visited.far(pt, p.saccade):  # noqa: B023 -- absorb() is called only within this iteration
                    queue.append((a, b))  # noqa: B023 -- absorb() is called only within this iteration

        absorb(first)
        checks = 0
        while queue and checks < p.max_saccades:
            a, b = queue.popleft()
            pt = pair.x1[a]
            if not visited.far(pt, p.saccade):
                continue
            visited.add(pt)
            checks += 1
            foveas += 1
            got = pair.fovea(a, b)
            if got is not None:
                absorb(got)
        if len(region) >= p.min_region:
            idx = np.array(sorted(region.items()), dtype=np.int64)
            regions.append(idx)
            used1.update(region)
            pts = pair.x1[idx[:, 0]].astype(np.float32)
            if len(pts) >= 3:
                hulls.append(cv2.convexHull(pts))
    if not regions:
        return TrResult(0, 0, (), n_seeds, foveas)
    regions.sort(key=len, reverse=True)
    best = regions[0]
    hull = None
    pts2 = f2.keypoints[best[:, 1]].astype(np.float32)
    if len(pts2) >= 3:
        h = cv2.convexHull(pts2).reshape(-1, 2)
        hull = tuple((float(x), float(y)) for x, y in h)
    sizes = tuple(int(len(r)) for r in regions)
    return TrResult(sizes[0], len(sizes), sizes, n_seeds, foveas, best, hull)
