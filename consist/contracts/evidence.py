"""The pair-evidence schema: what a checker that verifies image pairs reports about each
pair it tried, in a form every consumer can read without knowing the checker.

The audit builds its verified matching graph from it, the report draws the matches and
the localised outline from it, the topological plugin builds its hypergraph from it and
re-rankers order neighbours by it. A checker publishes its pairs in a vote's evidence
under the key :data:`PAIRS_KEY` (a list of :meth:`PairEvidence.to_dict` dicts, JSON
only), and may offer single-pair verification through :class:`PairVerifier`.

Coordinates are in pixels of the original images (x right, y down).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import numpy as np

if TYPE_CHECKING:
    from consist.contracts.features import FeatureSpec
    from consist.contracts.store import Store
    from consist.records import Query, Region, Sample, Vote

__all__ = ["MAX_DRAWN_MATCHES", "PAIRS_KEY", "PairEvidence", "PairVerifier", "pairs_in_votes"]

#: Key of the list of pair records in a vote's ``evidence``.
PAIRS_KEY = "pairs"
#: Inlier correspondences kept per pair in JSON evidence, for drawing (spread evenly
#: over the inliers): enough to see a match, small enough for 10^5 pairs in a journal.
MAX_DRAWN_MATCHES = 24

Polygon = tuple[tuple[float, float], ...]


def _polygon(value: Any) -> Polygon | None:
    if value is None:
        return None
    pts = tuple((float(x), float(y)) for x, y in value)
    return pts if len(pts) >= 3 else None


def _points(value: Any) -> np.ndarray:
    arr = np.asarray(value if value is not None else (), dtype=np.float32)
    arr = arr.reshape(-1, 2) if arr.size else np.zeros((0, 2), np.float32)
    arr.setflags(write=False)
    return arr


def _indices(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.int64).reshape(-1)
    arr.setflags(write=False)
    return arr


def _same_indices(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and bool(np.array_equal(a, b)))


_eq_arrays = attrs.cmp_using(eq=lambda a, b: a.shape == b.shape and bool(np.array_equal(a, b)))


@attrs.frozen
class PairEvidence:
    """The outcome of verifying the query against one neighbour.

    Attributes:
        neighbour: the neighbour sample's id.
        verified: whether the checker accepts the pair as showing the same object.
        inliers: number of distinct inlier correspondences (0 when none).
        score: the checker's pair score (higher = stronger; for ordering pairs).
        model: the geometric or topological model (``"homography"``,
            ``"fundamental"``, ``"topological"``), or ``None``.
        matrix: the fitted 3x3 model as nested lists (query -> neighbour), or ``None``.
        query_points, neighbour_points: ``M x 2`` float32 matched inlier locations in
            the query and the neighbour, row ``i`` of one matching row ``i`` of the
            other (all of them from :class:`PairVerifier`; at most
            :data:`MAX_DRAWN_MATCHES` in JSON evidence).
        query_indices, neighbour_indices: the inliers as indices into each image's
            :class:`~consist.contracts.LocalFeatures` (of the run's features), when the
            verifier matched local features (for a query restricted to a region: into
            its features inside the region): what a matching graph keeps per pair
            (``None`` otherwise, and in JSON evidence).
        query_polygon: where the object lies in the query (the inlier hull), or ``None``.
        neighbour_polygon: the query region (or the query's inlier hull) localised in
            the neighbour, or ``None``.
        inlier_ratio: inliers / tentative matches, or ``None``.
        coverage: share of the query (region) covered by the inliers' hull, or
            ``None``; with a high ``inlier_ratio``, a near-duplicate.
        reason: why the pair failed (empty when verified).
    """

    neighbour: str
    verified: bool
    inliers: int = attrs.field(default=0, converter=int)
    score: float = attrs.field(default=0.0, converter=float)
    model: str | None = None
    matrix: tuple[tuple[float, ...], ...] | None = attrs.field(default=None, converter=lambda m: None if m is None else tuple(tuple(float(v) for v in row) for row in m))
    query_points: np.ndarray = attrs.field(factory=lambda: _points(None), converter=_points, eq=_eq_arrays, hash=False, repr=False)
    neighbour_points: np.ndarray = attrs.field(factory=lambda: _points(None), converter=_points, eq=_eq_arrays, hash=False, repr=False)
    query_indices: np.ndarray | None = attrs.field(default=None, converter=_indices, eq=attrs.cmp_using(eq=_same_indices), hash=False, repr=False)
    neighbour_indices: np.ndarray | None = attrs.field(default=None, converter=_indices, eq=attrs.cmp_using(eq=_same_indices), hash=False, repr=False)
    query_polygon: Polygon | None = attrs.field(default=None, converter=_polygon)
    neighbour_polygon: Polygon | None = attrs.field(default=None, converter=_polygon)
    inlier_ratio: float | None = attrs.field(default=None, converter=lambda v: None if v is None else float(v))
    coverage: float | None = attrs.field(default=None, converter=lambda v: None if v is None else float(v))
    reason: str = ""

    def __attrs_post_init__(self) -> None:
        if len(self.query_points) != len(self.neighbour_points):
            raise ValueError(f"pair {self.neighbour!r}: {len(self.query_points)} query points but {len(self.neighbour_points)} neighbour points")
        for name in ("query_indices", "neighbour_indices"):
            idx = getattr(self, name)
            if idx is not None and len(idx) != len(self.query_points):
                raise ValueError(f"pair {self.neighbour!r}: {len(idx)} {name} for {len(self.query_points)} correspondences")

    def to_dict(self, *, max_points: int | None = MAX_DRAWN_MATCHES) -> dict[str, Any]:
        """JSON-able form for vote evidence; keeps ``max_points`` correspondences spread
        evenly over the inliers (all with ``None``)."""
        idx = np.arange(len(self.query_points))
        if max_points is not None and len(idx) > max_points:
            idx = np.unique(np.linspace(0, len(idx) - 1, max_points).round().astype(int))

        def pts(a: np.ndarray) -> list[list[float]]:
            return [[round(float(x), 1), round(float(y), 1)] for x, y in a[idx]]

        def poly(p: Polygon | None) -> list[list[float]] | None:
            return None if p is None else [[round(x, 1), round(y, 1)] for x, y in p]

        return {
            "neighbour": self.neighbour,
            "verified": self.verified,
            "inliers": self.inliers,
            "score": round(self.score, 4),
            "model": self.model,
            "matrix": None if self.matrix is None else [list(r) for r in self.matrix],
            "query_points": pts(self.query_points),
            "neighbour_points": pts(self.neighbour_points),
            "query_polygon": poly(self.query_polygon),
            "neighbour_polygon": poly(self.neighbour_polygon),
            "inlier_ratio": None if self.inlier_ratio is None else round(self.inlier_ratio, 4),
            "coverage": None if self.coverage is None else round(self.coverage, 4),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairEvidence:
        """Read a :meth:`to_dict` record (unknown keys ignored, so the schema can grow)."""
        return cls(
            neighbour=str(data["neighbour"]),
            verified=bool(data.get("verified", False)),
            inliers=int(data.get("inliers") or 0),
            score=float(data.get("score") or 0.0),
            model=data.get("model"),
            matrix=data.get("matrix"),
            query_points=data.get("query_points"),
            neighbour_points=data.get("neighbour_points"),
            query_polygon=data.get("query_polygon"),
            neighbour_polygon=data.get("neighbour_polygon"),
            inlier_ratio=data.get("inlier_ratio"),
            coverage=data.get("coverage"),
            reason=str(data.get("reason") or ""),
        )


def pairs_in_votes(votes: Iterable[Vote]) -> list[tuple[str, PairEvidence]]:
    """Every ``(checker, pair)`` published under :data:`PAIRS_KEY` in ``votes``;
    malformed records are skipped (evidence comes from plugins)."""
    out: list[tuple[str, PairEvidence]] = []
    for vote in votes:
        records = (vote.evidence or {}).get(PAIRS_KEY)
        if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
            continue
        for rec in records:
            if isinstance(rec, Mapping) and isinstance(rec.get("neighbour"), str):
                try:
                    out.append((vote.checker, PairEvidence.from_dict(rec)))
                except (TypeError, ValueError, KeyError):
                    continue
    return out


@runtime_checkable
class PairVerifier(Protocol):
    """A checker that can also verify one pair on request (the topological plugin builds
    its matching hypergraph with it; the report and re-rankers use it).

    ``query`` may be a stored :class:`~consist.Sample` or a :class:`~consist.Query`;
    ``region`` restricts the query to a region; ``features`` names the local features
    of the run (``None``: the checker's own); ``options`` are the checker's own options
    (as in ``checker_options``; unknown ones raise ``ValueError``). Returns the pair with
    ALL its inlier correspondences (and their keypoint indices when it matched local
    features).
    """

    name: str

    def verify_pair(
        self, query: Query | Sample, neighbour: Sample, store: Store | None, *, region: Region | None = None, features: FeatureSpec | None = None, options: Mapping[str, Any] | None = None
    ) -> PairEvidence: ...
