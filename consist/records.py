"""The data that flows through consist: immutable records with a JSON round-trip.

Every record is a frozen attrs class so that a checker cannot mutate what another
checker (or the store) will read, and every record converts to and from plain JSON
(``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json``) so that decisions can be
logged, cached, sent to a Dask worker or written to ``audit.jsonl`` unchanged.

Embeddings are numpy arrays; they compare with ``numpy.array_equal`` and serialise
as lists of floats (dtype float32).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast

import attrs
import cattrs
import numpy as np

__all__ = [
    "TRUST",
    "Candidate",
    "CheckerRun",
    "Decision",
    "HistoryEntry",
    "Localisation",
    "Neighbour",
    "Prediction",
    "Provenance",
    "Query",
    "Region",
    "RunStatus",
    "Sample",
    "Vote",
    "from_dict",
    "from_json",
    "to_dict",
    "to_json",
]

T = TypeVar("T")


class Provenance(str, enum.Enum):  # noqa: UP042 -- StrEnum would change str()/format() of members
    """Where a label came from; decides who may overwrite whom (see :data:`TRUST`)."""

    AUTO = "auto"  #: written by adaptation after a confident decision
    IMPORT = "import"  #: came with a dataset (``consist index``, ``Store.put``)
    USER = "user"  #: a person said so: highest trust, never silently overwritten

    def __str__(self) -> str:
        return self.value


#: Trust order. An automatic change never replaces a label of higher trust.
TRUST: dict[Provenance, int] = {Provenance.AUTO: 0, Provenance.IMPORT: 1, Provenance.USER: 2}


def _embedding(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"embedding must be one-dimensional, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


_array_eq = attrs.cmp_using(eq=lambda a, b: (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b)))


def _freeze_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


def _finite(value: Any) -> bool:
    """A coordinate that is a finite number (1e309 reads as infinity: refused, it would
    make the history's JSON invalid)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


@attrs.frozen
class Region:
    """A region of an image in pixel coordinates: a box, a polygon, or both.

    ``box`` is ``(x0, y0, x1, y1)`` with x to the right and y down; ``polygon`` is a
    sequence of ``(x, y)`` vertices. When both are given the polygon is the region and
    the box its bounds.
    """

    box: tuple[float, float, float, float] | None = attrs.field(default=None)
    polygon: tuple[tuple[float, float], ...] | None = attrs.field(default=None)

    @box.validator
    def _check_box(self, _attr: Any, value: Any) -> None:
        if value is None:
            return
        if len(value) != 4:
            raise ValueError(f"box needs 4 numbers x0,y0,x1,y1, got {len(value)}")
        x0, y0, x1, y1 = value
        if not all(_finite(v) for v in value):
            raise ValueError(f"box {tuple(value)} has a coordinate that is not a finite number")
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"box {tuple(value)} is empty: need x1 > x0 and y1 > y0")

    @polygon.validator
    def _check_polygon(self, _attr: Any, value: Any) -> None:
        if value is not None and len(value) < 3:
            raise ValueError(f"polygon needs at least 3 vertices, got {len(value)}")
        if value is not None and not all(_finite(c) for p in value for c in p):
            raise ValueError("polygon has a coordinate that is not a finite number")

    def __attrs_post_init__(self) -> None:
        if self.box is None and self.polygon is None:
            raise ValueError("a region needs a box or a polygon")
        if self.box is not None:
            object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        if self.polygon is not None:
            object.__setattr__(self, "polygon", tuple((float(x), float(y)) for x, y in self.polygon))

    @classmethod
    def from_box(cls, x0: float, y0: float, x1: float, y1: float) -> Region:
        return cls(box=(x0, y0, x1, y1))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """The axis-aligned bounding box of the region."""
        if self.polygon is not None:
            xs = [p[0] for p in self.polygon]
            ys = [p[1] for p in self.polygon]
            return (min(xs), min(ys), max(xs), max(ys))
        assert self.box is not None
        return self.box

    @property
    def vertices(self) -> tuple[tuple[float, float], ...]:
        """The region as a polygon (a box becomes its four corners, clockwise)."""
        if self.polygon is not None:
            return self.polygon
        x0, y0, x1, y1 = self.bounds
        return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


@attrs.frozen
class Sample:
    """One labelled image in the store.

    ``uri`` is a path or URI the plugins can read the pixels from; ``provenance`` says
    who gave ``label`` (see :class:`Provenance`). ``meta`` holds JSON-able extras
    (the extra columns of an imported CSV, notes, the decision that added it).
    """

    id: str
    uri: str | None = None
    label: str | None = None
    provenance: Provenance = attrs.field(default=Provenance.IMPORT, converter=Provenance)
    region: Region | None = None
    embedding: np.ndarray | None = attrs.field(default=None, converter=_embedding, eq=_array_eq, repr=False)
    meta: dict[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping, hash=False)


@attrs.frozen
class Query:
    """The image being recognised: a path/URI, pixels already in memory, or both.

    ``image`` (an ``HxWxC`` uint8 array) is never serialised; ``region`` limits the
    question to part of the image (user feedback, a detector's box).
    """

    id: str
    uri: str | None = None
    image: np.ndarray | None = attrs.field(default=None, eq=False, repr=False)
    region: Region | None = None
    embedding: np.ndarray | None = attrs.field(default=None, converter=_embedding, eq=_array_eq, repr=False)
    meta: dict[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping, hash=False)


@attrs.frozen
class Candidate:
    """One ranked answer of a recognizer. ``score`` is a probability in [0, 1]."""

    label: str
    score: float = attrs.field(converter=float)
    source: str = "recognizer"

    @score.validator
    def _check_score(self, _attr: Any, value: float) -> None:
        if not (0.0 <= value <= 1.0) or value != value:
            raise ValueError(f"candidate score for {self.label!r} must be a probability in [0, 1], got {value}")


def _candidates(value: Any) -> tuple[Candidate, ...]:
    """Candidates as given, or ``(label, score)`` pairs (what recognizers return)."""
    out = []
    for c in value:
        if isinstance(c, Candidate):
            out.append(c)
        elif isinstance(c, (tuple, list)) and len(c) == 2 and isinstance(c[0], str):
            out.append(Candidate(c[0], c[1]))
        else:
            raise TypeError(f"a candidate must be a Candidate or a (label, score) pair, got {c!r}")
    return tuple(out)


@attrs.frozen
class Prediction:
    """What a recognizer said about a query: candidates, best first
    (:class:`Candidate` objects, or ``(label, score)`` pairs, converted)."""

    query: Query
    candidates: tuple[Candidate, ...] = attrs.field(converter=_candidates)
    recognizer: str = "recognizer"

    @candidates.validator
    def _check_candidates(self, _attr: Any, value: tuple[Candidate, ...]) -> None:
        if not value:
            raise ValueError(f"prediction for query {self.query.id!r} has no candidates")

    @property
    def top(self) -> Candidate:
        return self.candidates[0]

    def score_of(self, label: str) -> float | None:
        for c in self.candidates:
            if c.label == label:
                return c.score
        return None


@attrs.frozen
class Neighbour:
    """A stored sample retrieved for a query, with its similarity and 0-based rank.

    ``evidence`` is JSON-able detail a re-ranker attaches (the pair it verified under
    ``"pair"`` in the :class:`consist.contracts.PairEvidence` schema, the propagation
    hop and active region, ...); empty from plain retrieval.
    """

    sample: Sample
    similarity: float = attrs.field(converter=float)
    rank: int = 0
    source: str = "retriever"
    evidence: dict[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping, hash=False)


@attrs.frozen
class Vote:
    """One checker's opinion about one label for the query.

    ``support`` is the checker's probability that the query shows ``label`` (0.5 says
    nothing, 1 says "certainly", 0 says "certainly not"); ``confidence`` in [0, 1]
    scales how much the vote counts. ``evidence`` is JSON-able detail (inliers,
    polygons, the LMM's answer) and ``neighbour_id`` the sample that produced it.
    """

    checker: str
    label: str
    support: float = attrs.field(converter=float)
    confidence: float = attrs.field(default=1.0, converter=float)
    evidence: dict[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping, hash=False)
    neighbour_id: str | None = None

    @support.validator
    def _check_support(self, _attr: Any, value: float) -> None:
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"vote support must be in [0, 1], got {value} (checker {self.checker!r})")

    @confidence.validator
    def _check_confidence(self, _attr: Any, value: float) -> None:
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"vote confidence must be in [0, 1], got {value} (checker {self.checker!r})")


class RunStatus(str, enum.Enum):  # noqa: UP042 -- StrEnum would change str()/format() of members
    """What happened to one checker during one decision."""

    RAN = "ran"  #: returned votes
    ABSTAINED = "abstained"  #: ran and had nothing to say (no votes, or raised Abstain)
    FAILED = "failed"  #: raised: recorded as an abstention, never a crash
    TIMEOUT = "timeout"  #: did not answer within its time limit: abstention
    SKIPPED = "skipped"  #: the controller did not run it (the reason says why)

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class CheckerRun:
    """The record of one checker in one decision: status, why, and how long it took."""

    checker: str
    status: RunStatus = attrs.field(converter=RunStatus)
    reason: str = ""
    elapsed_s: float = 0.0
    n_votes: int = 0


@attrs.frozen
class Localisation:
    """Where the query's object lies in a neighbour (pixel retrieval)."""

    sample_id: str
    region: Region
    checker: str
    score: float = 0.0


def _vote_tuple(v: Iterable[Vote]) -> tuple[Vote, ...]:
    return tuple(v)


def _run_tuple(v: Iterable[CheckerRun]) -> tuple[CheckerRun, ...]:
    return tuple(v)


def _localisation_tuple(v: Iterable[Localisation]) -> tuple[Localisation, ...]:
    return tuple(v)


@attrs.frozen
class Decision:
    """The engine's verdict on one prediction.

    ``label`` is the final label, ``confidence`` its posterior probability under the
    aggregation rule, ``changed`` whether it differs from the recognizer's top label.
    ``scores`` are the per-label posterior log-odds, ``votes`` the evidence, ``runs``
    what each checker did (including skipped and failed ones, with reasons).
    """

    query_id: str
    label: str
    confidence: float
    changed: bool
    predicted_label: str
    scores: dict[str, float] = attrs.field(factory=dict, converter=_freeze_mapping, hash=False)
    votes: tuple[Vote, ...] = attrs.field(default=(), converter=_vote_tuple)
    runs: tuple[CheckerRun, ...] = attrs.field(default=(), converter=_run_tuple)
    localisations: tuple[Localisation, ...] = attrs.field(default=(), converter=_localisation_tuple)
    elapsed_s: float = 0.0
    adapted: str | None = None  #: why/how the store was updated, or None

    @property
    def skipped(self) -> tuple[CheckerRun, ...]:
        return tuple(r for r in self.runs if r.status is RunStatus.SKIPPED)

    @property
    def abstained(self) -> tuple[CheckerRun, ...]:
        return tuple(r for r in self.runs if r.status in (RunStatus.ABSTAINED, RunStatus.FAILED, RunStatus.TIMEOUT))

    def votes_for(self, label: str) -> tuple[Vote, ...]:
        return tuple(v for v in self.votes if v.label == label)


@attrs.frozen
class HistoryEntry:
    """One change to the store, with enough state to undo it.

    ``before``/``after`` are the sample as JSON (``None`` when absent); ``undoes`` points
    at the entry an undo reverted, ``undone_by`` at the undo that reverted this one.
    """

    seq: int
    ts: float
    action: str
    sample_id: str
    provenance: Provenance = attrs.field(converter=Provenance)
    reason: str = ""
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    undoes: int | None = None
    undone_by: int | None = None


# ---------------------------------------------------------------------------- JSON

_converter = cattrs.Converter(unstruct_collection_overrides={tuple: list})
_converter.register_unstructure_hook(Provenance, lambda e: e.value)
_converter.register_unstructure_hook(RunStatus, lambda e: e.value)
_converter.register_unstructure_hook(np.ndarray, lambda a: [float(x) for x in a.tolist()])
_converter.register_structure_hook(np.ndarray, lambda v, _t: _embedding(v))
_converter.register_structure_hook_func(lambda t: t == (np.ndarray | None), lambda v, _t: _embedding(v))
_converter.register_structure_hook_func(lambda t: t == dict[str, Any], lambda v, _t: dict(v))
_converter.register_structure_hook_func(lambda t: t == (dict[str, Any] | None), lambda v, _t: None if v is None else dict(v))


def _unstructure_query(q: Query) -> dict[str, Any]:
    return {
        "id": q.id,
        "uri": q.uri,
        "region": _converter.unstructure(q.region),
        "embedding": None if q.embedding is None else _converter.unstructure(q.embedding),
        "meta": dict(q.meta),
    }


_converter.register_unstructure_hook(Query, _unstructure_query)


def _structure_query(v: Mapping[str, Any], _t: Any) -> Query:
    return Query(
        id=v["id"],
        uri=v.get("uri"),
        region=_converter.structure(v.get("region"), cast("type[Region | None]", Region | None)),
        embedding=v.get("embedding"),
        meta=v.get("meta") or {},
    )


_converter.register_structure_hook(Query, _structure_query)


def to_dict(record: Any) -> Any:
    """Convert a record (or a list/tuple of records) to JSON-able Python objects."""
    return _converter.unstructure(record)


def from_dict(cls: type[T], data: Any) -> T:
    """Rebuild a record of type ``cls`` from :func:`to_dict` output."""
    return _converter.structure(data, cls)


def to_json(record: Any, **kwargs: Any) -> str:
    return json.dumps(to_dict(record), ensure_ascii=False, **kwargs)


def from_json(cls: type[T], text: str | bytes) -> T:
    return from_dict(cls, json.loads(text))


def _attach_methods() -> None:
    for cls in (Region, Sample, Query, Candidate, Prediction, Neighbour, Vote, CheckerRun, Localisation, Decision, HistoryEntry):
        attrs.resolve_types(cls, globals(), locals())
        cls.to_dict = to_dict  # type: ignore[union-attr]
        cls.to_json = to_json  # type: ignore[union-attr]
        cls.from_dict = classmethod(lambda c, d: from_dict(c, d))  # type: ignore[union-attr]
        cls.from_json = classmethod(lambda c, t: from_json(c, t))  # type: ignore[union-attr]


_attach_methods()
