"""The matching hypergraph: which stored images verify against which, and *where*.

An, Huo, Song & Jeon (NeurIPS 2021, "Hypergraph propagation and community selection
for objects retrieval"): offline, every database image is spatially verified against
its top-k retrieved neighbours and, per verified pair, the inlier correspondences are
kept with their region on each side. A :class:`Hyperedge` is that *set* of
correspondences, not a scalar weight: propagation later passes through only the
inliers that lie inside an image's active region.

What it is built from comes through consist's registries (:mod:`.providers`), so any
plugin can supply it: neighbours from a registered retriever, verified pairs with
their inlier keypoints from a registered :class:`~consist.contracts.PairVerifier`
(option ``verifier_checker``: the spatial checker by default), keypoints from the
store's feature cache (:func:`consist.features.features_for`).

Storage (all in the consist store, next to the cached features):

* per sample, artefact ``topology/edges/<features>`` (e.g.
  ``topology/edges/sift-rootsift-1024-2048``): the hyperedges found when *that*
  sample was verified against its neighbours, as compact arrays (uint16 keypoint
  indices, float32 inlier pixels, boxes) plus the list of neighbours tried. The
  blob remembers the image URI it was computed from; a sample whose pixels changed
  is recomputed.
* pseudo-sample ``__topology__``, artefact ``topology/meta/<features>``: the store
  history sequence number the graph reflects and the building parameters.

Incremental: the graph is a :class:`consist.stores.derived.DerivedIndex`, like the
ASMK index: :meth:`MatchingHypergraph.sync` reads the store history since the last
sync and only verifies the samples that appeared or got other pixels against their
top-k; deleted samples leave the graph. A pair already verified from the other side
is not verified again. Cost grows with N·k.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import networkx as nx
import numpy as np
import structlog

from consist import plugins
from consist.contracts.evidence import PairVerifier
from consist.contracts.features import FeatureExtractor, FeatureSpec, LocalFeatures
from consist.errors import ConsistError, ImageError, StoreError
from consist.features import features_for
from consist.records import Query, Sample
from consist.stores.derived import DerivedIndex, PerStoreCache, StoreChanges, SyncReport, newest_seq, owner_id
from consist_topological import providers

if TYPE_CHECKING:
    from consist.contracts.retrieval import Retriever
    from consist.contracts.store import Store

__all__ = [
    "DEFAULT_K",
    "FORMAT_VERSION",
    "GRAPH_SAMPLE_ID",
    "GraphConfig",
    "GraphInputs",
    "GraphSyncReport",
    "Hyperedge",
    "MatchingHypergraph",
    "box_of",
    "edges_kind",
    "gc_paused",
    "graph_for",
]

log = structlog.get_logger("consist.topological")

#: Pseudo-sample holding the graph's metadata artefact.
GRAPH_SAMPLE_ID = owner_id("topology")
#: Version of the per-sample edge blob layout.
FORMAT_VERSION = 1
#: Neighbours verified per image when building: the paper's 200 (An et al. 2021,
#: sec. 4) on ROxford/RParis +1M; a small store caps it at its size - 1.
DEFAULT_K = 200

Box = tuple[float, float, float, float]
Progress = Callable[[int], Any]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a graph is loaded or built.

    A loaded graph is millions of small, acyclic objects (arrays, attrs records,
    networkx dicts); the collector's generation scans over them make bulk loading
    super-linear in N·k. Reference counting still frees everything as usual.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def box_of(points: np.ndarray) -> Box | None:
    """Axis-aligned bounding box ``(x0, y0, x1, y1)`` of ``K x 2`` points (``None`` if empty)."""
    if len(points) == 0:
        return None
    lo = points.min(axis=0)
    hi = points.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def _ro(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


_eq_arrays = attrs.cmp_using(eq=lambda a, b: a.shape == b.shape and bool(np.array_equal(a, b)))


@attrs.frozen
class Hyperedge:
    """The verified correspondences between images ``a`` and ``b``.

    Attributes:
        a, b: sample ids.
        idx_a, idx_b: ``K`` uint16 keypoint indices of the inliers in each image's
            cached features (enough to recover descriptors or scales later).
        pts_a, pts_b: ``K x 2`` float32 inlier positions in original pixels.
        box_a, box_b: the inliers' region on each side (bounding boxes).
    """

    a: str
    b: str
    idx_a: np.ndarray = attrs.field(eq=_eq_arrays, repr=False, converter=lambda v: _ro(np.asarray(v, dtype=np.uint16).reshape(-1)))
    idx_b: np.ndarray = attrs.field(eq=_eq_arrays, repr=False, converter=lambda v: _ro(np.asarray(v, dtype=np.uint16).reshape(-1)))
    pts_a: np.ndarray = attrs.field(eq=_eq_arrays, repr=False, converter=lambda v: _ro(np.asarray(v, dtype=np.float32).reshape(-1, 2)))
    pts_b: np.ndarray = attrs.field(eq=_eq_arrays, repr=False, converter=lambda v: _ro(np.asarray(v, dtype=np.float32).reshape(-1, 2)))

    def __attrs_post_init__(self) -> None:
        n = len(self.pts_a)
        if not (len(self.pts_b) == len(self.idx_a) == len(self.idx_b) == n):
            raise ValueError(f"hyperedge {self.a}-{self.b}: {n} points on one side, {len(self.pts_b)} on the other")
        if self.a == self.b:
            raise ValueError(f"hyperedge from {self.a!r} to itself")

    @property
    def strength(self) -> int:
        """Number of inlier correspondences (the hyperedge's cardinality)."""
        return int(len(self.pts_a))

    @property
    def box_a(self) -> Box | None:
        return box_of(self.pts_a)

    @property
    def box_b(self) -> Box | None:
        return box_of(self.pts_b)

    def oriented(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        """``(points in source, corresponding points in the other image)``."""
        if source == self.a:
            return self.pts_a, self.pts_b
        if source == self.b:
            return self.pts_b, self.pts_a
        raise KeyError(f"{source!r} is not an end of hyperedge {self.a}-{self.b}")

    def other(self, node: str) -> str:
        return self.b if node == self.a else self.a

    @property
    def nbytes(self) -> int:
        return int(self.idx_a.nbytes + self.idx_b.nbytes + self.pts_a.nbytes + self.pts_b.nbytes)


@attrs.frozen
class GraphConfig:
    """How the graph is built.

    Attributes:
        k: neighbours verified per image (:data:`DEFAULT_K` = 200, the paper's).
        min_inliers: distinct inliers for a pair to become a hyperedge (``None``:
            the verifier's own minimum, the spatial checker's 15); passed to the
            verifier as its ``min_inliers`` option.
        spatial: the pair verifier's options (for the ``spatial`` checker, any
            ``SpatialConfig`` field: model, threshold, matcher...). Those named like
            the extractor options of the contract (``max_side``, ``max_keypoints``,
            ``device``), ``extractor`` and ``matcher`` also choose the features.
        verifier: what makes a pair a hyperedge: ``"homography"`` (default: the pair
            verifier's verification, e.g. the spatial plugin's DEGENSAC; its inliers
            are the hyperedge) or ``"tr"`` (topological RANSAC: the largest
            homeomorphic region is the hyperedge; denser graphs on non-planar scenes,
            ~3x the cost per pair).
        tr_min_score: distinct points of TR's largest region for a ``"tr"`` hyperedge
            (15, as ``min_inliers``).
        features: the local features, as ``consist audit --features`` names them
            (``"sift"``, ``"aliked-n16+lightglue"``); ``None`` (default): those the
            retriever indexes the store with when it tells (the ``asmk`` index's, so
            one cache serves retrieval and verification), else ``extractor`` among the
            ``spatial`` options, else SIFT. See :meth:`feature_spec`.
        verifier_checker: the registered checker whose ``verify_pair``
            (:class:`~consist.contracts.PairVerifier`) verifies the pairs
            (``"spatial"``; another registered verifier when it is not there).
        retriever: the registered retriever that gives each image's neighbours
            (``None``: ``asmk`` when registered, else ``vector``); a ``retriever``
            object given to :meth:`MatchingHypergraph.build` takes precedence.
    """

    k: int = attrs.field(default=DEFAULT_K, converter=int)
    min_inliers: int | None = attrs.field(default=None, converter=lambda v: None if v is None else int(v))
    spatial: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda m: dict(m or {}), hash=False)
    verifier: str = attrs.field(default="homography", validator=attrs.validators.in_(("homography", "tr")))
    tr_min_score: int = attrs.field(default=15, converter=int)
    features: str | None = attrs.field(default=None, converter=lambda v: None if v in (None, "") else str(v))
    verifier_checker: str = attrs.field(default=providers.DEFAULT_VERIFIER, converter=str)
    retriever: str | None = attrs.field(default=None, converter=lambda v: None if v in (None, "") else str(v))

    @k.validator
    def _check_k(self, _attr: Any, value: int) -> None:
        if value < 1:
            raise ValueError(f"graph k must be >= 1, got {value}")

    def feature_spec(self, indexed: FeatureSpec | None = None) -> FeatureSpec:
        """The features the pairs are verified on.

        ``features`` when set; else ``extractor`` among the ``spatial`` options; else
        ``indexed`` (the retriever's features for the store); else SIFT defaults. Then
        the ``spatial`` options that name features (``matcher``, ``max_side``,
        ``max_keypoints``, ``device``) apply on top, as the verifier would apply them.
        """
        opts = dict(self.spatial)
        if self.features is not None:
            base = FeatureSpec.parse(self.features)
        elif opts.get("extractor") is not None:
            base = FeatureSpec(extractor=str(opts["extractor"]))
        else:
            base = indexed or FeatureSpec()
        matcher = opts.get("matcher", base.matcher)
        options = {**base.options, **{k: opts[k] for k in providers.FACTORY_OPTIONS if k in opts}}
        return FeatureSpec(extractor=base.extractor, matcher=None if matcher is None else str(matcher), options=options)

    def verifier_options(self) -> dict[str, Any]:
        """The options given to the pair verifier: ``spatial``, with ``min_inliers``."""
        opts = dict(self.spatial)
        if self.min_inliers is not None:
            opts["min_inliers"] = self.min_inliers
        return opts

    def validate(self) -> None:
        """Fail now (``ValueError``) on options the verifier does not know, or features
        or a retriever no plugin registers, instead of at the first build. Without a
        registered verifier its options cannot be checked (building the graph says so)."""
        spec = self.feature_spec()
        if self.features is not None and spec.extractor not in plugins.extractors():
            raise ValueError(f"features {self.features!r}: no registered extractor {spec.extractor!r} (registered: {', '.join(sorted(plugins.extractors())) or 'none'})")
        if self.retriever is not None and self.retriever not in plugins.retrievers():
            raise ValueError(f"retriever {self.retriever!r} is not registered (registered: {', '.join(sorted(plugins.retrievers())) or 'none'})")
        verifier = providers.find_pair_verifier(self.verifier_checker)
        validate = getattr(verifier, "validate_options", None)
        if callable(validate):
            validate(self.verifier_options())


@attrs.frozen
class GraphInputs:
    """What one store's graph is built from, resolved through the registries.

    Attributes:
        retriever: gives each image's neighbours.
        features: the features verified on (:meth:`GraphConfig.feature_spec`).
        extractor: the registered extractor of ``features`` (its ``kind`` names the
            cache the hyperedges' keypoint indices point into).
        retrieval_features: the features given to the retriever: its own when it
            exposes them (``None`` when no registered extractor reproduces them: it
            keeps its own), else ``features``.
        verifier: verifies the pairs (``None`` for a ``"tr"`` graph, which needs none).
        options: the verifier's options.
    """

    retriever: Retriever
    features: FeatureSpec
    extractor: FeatureExtractor
    retrieval_features: FeatureSpec | None
    verifier: PairVerifier | None
    options: Mapping[str, Any]


def edges_kind(features_kind: str, verifier: str = "homography") -> str:
    """``features/sift-rootsift-1024-2048`` -> ``topology/edges/sift-rootsift-1024-2048``
    (``.../tr/...`` for graphs verified by topological RANSAC)."""
    return "topology/edges/" + ("" if verifier == "homography" else f"{verifier}/") + features_kind.split("/", 1)[-1]


def meta_kind(features_kind: str, verifier: str = "homography") -> str:
    return "topology/meta/" + ("" if verifier == "homography" else f"{verifier}/") + features_kind.split("/", 1)[-1]


# ------------------------------------------------------------------ serialisation


def _encode(source_uri: str, tried: Sequence[str], edges: Sequence[Hyperedge], owner: str, k: int | None = None) -> bytes:
    """One sample's verification results: neighbours tried, hyperedges found."""
    others = [e.other(owner) for e in edges]
    counts = np.array([e.strength for e in edges], dtype=np.int64)
    oriented = [(e.idx_a, e.idx_b, e.pts_a, e.pts_b) if e.a == owner else (e.idx_b, e.idx_a, e.pts_b, e.pts_a) for e in edges]
    meta = {"version": FORMAT_VERSION, "uri": source_uri, "owner": owner, "tried": list(tried), "others": others, "k": k}
    cat = lambda i, shape, dt: np.concatenate([o[i] for o in oriented]).astype(dt) if oriented else np.zeros(shape, dt)  # noqa: E731
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        counts=counts,
        idx_self=cat(0, (0,), np.uint16),
        idx_other=cat(1, (0,), np.uint16),
        pts_self=cat(2, (0, 2), np.float32),
        pts_other=cat(3, (0, 2), np.float32),
    )
    return buf.getvalue()


def _decode(blob: bytes) -> tuple[dict[str, Any], list[Hyperedge]]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            arrays = {k: z[k] for k in ("counts", "idx_self", "idx_other", "pts_self", "pts_other")}
    except Exception as exc:  # zip/npy errors vary: one clear error type
        raise ValueError(f"not a topology edge blob: {type(exc).__name__}: {exc}") from exc
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"topology edge format {meta.get('version')} (this version reads {FORMAT_VERSION})")
    owner = meta["owner"]
    edges = []
    start = 0
    for other, n in zip(meta["others"], arrays["counts"].tolist()):
        sl = slice(start, start + n)
        edges.append(Hyperedge(owner, other, arrays["idx_self"][sl], arrays["idx_other"][sl], arrays["pts_self"][sl], arrays["pts_other"][sl]))
        start += n
    return meta, edges


# -------------------------------------------------------------------------- graph


@attrs.frozen
class GraphSyncReport(SyncReport):
    """What one build or :meth:`MatchingHypergraph.sync` did: samples added (their
    hyperedges computed or read back), removed, failed, and the image pairs verified
    now (the cost; pairs verified before are reused)."""

    verified_pairs: int = 0


@attrs.frozen
class Packed:
    """All hyperedges of one node as flat arrays, oriented from that node: what
    propagation reads (one vectorised pass per adopted image instead of one per edge).

    ``others[e]`` is the neighbour of edge ``e``; its correspondences are columns
    ``starts[e]:starts[e + 1]`` of ``src`` (``2 x M``: x, y in this node) and of
    ``dst4`` (``4 x M``: x, y, -x, -y in the neighbour, so that one minimum
    reduction gives a whole box); ``boxes`` (``E x 4``) are the full boxes on the
    neighbours' side.
    """

    others: tuple[str, ...]
    starts: np.ndarray
    src: np.ndarray
    dst4: np.ndarray
    boxes: np.ndarray

    @classmethod
    def of(cls, node: str, edges: Sequence[tuple[str, Hyperedge]]) -> Packed:
        others = tuple(o for o, _ in edges)
        pairs = [e.oriented(node) for _, e in edges]
        counts = np.array([len(a) for a, _ in pairs], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        src = np.concatenate([a for a, _ in pairs]) if pairs else np.zeros((0, 2), np.float32)
        dst = np.concatenate([b for _, b in pairs]) if pairs else np.zeros((0, 2), np.float32)
        dst4 = np.ascontiguousarray(np.concatenate([dst.T, -dst.T]))
        m = np.minimum.reduceat(dst4, starts[:-1], axis=1) if len(counts) else np.zeros((4, 0), np.float32)
        boxes = np.stack([m[0], m[1], -m[2], -m[3]], axis=1)
        return cls(others, starts, np.ascontiguousarray(src.T), dst4, boxes)


class MatchingHypergraph(DerivedIndex[GraphSyncReport]):
    """The matching graph of one store: nodes are sample ids, each edge carries a
    :class:`Hyperedge` (networkx ``Graph``, attribute ``"h"``). Thread-safe.

    Build with :meth:`build` (or :func:`graph_for`), keep current with :meth:`sync`
    (the rule of :class:`~consist.stores.derived.DerivedIndex`: a graph that does not
    know where it stands in the history is built again from the saved hyperedges).
    A graph can also be assembled by hand (:meth:`add_edge`) for tests and the
    scaling benchmark.
    """

    def __init__(self, config: GraphConfig | None = None, *, features_kind: str = "") -> None:
        super().__init__(GraphSyncReport)  # last_seq, lock
        self.config = config or GraphConfig()
        self.features_kind = features_kind
        self.g = nx.Graph()
        self.tried: dict[str, set[str]] = {}  # sample -> neighbours it was verified against
        self.sources: dict[str, str] = {}  # sample -> uri the edges were computed from
        self._packed: dict[str, Packed] = {}

    # ------------------------------------------------------------- structure

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def __contains__(self, node: object) -> bool:
        return node in self.g

    @property
    def n_edges(self) -> int:
        return self.g.number_of_edges()

    def add_node(self, node: str) -> None:
        self.g.add_node(node)

    def add_edge(self, edge: Hyperedge) -> None:
        """Add a hyperedge; when the pair has one already, keep the stronger (the
        two verification directions can disagree by a few inliers)."""
        with self.lock:
            old = self.g.get_edge_data(edge.a, edge.b)
            if old is None or old["h"].strength < edge.strength:
                self.g.add_edge(edge.a, edge.b, h=edge)
                self._packed.pop(edge.a, None)
                self._packed.pop(edge.b, None)

    def remove_node(self, node: str) -> None:
        with self.lock:
            if node in self.g:
                for other in self.g.adj[node]:
                    self._packed.pop(other, None)
                self.g.remove_node(node)
            self._packed.pop(node, None)
            self.tried.pop(node, None)
            self.sources.pop(node, None)
            for t in self.tried.values():
                t.discard(node)

    def edges_of(self, node: str) -> Iterator[tuple[str, Hyperedge]]:
        """``(neighbour, hyperedge)`` of ``node`` (nothing for an unknown node)."""
        adj = self.g._adj.get(node)
        if not adj:
            return iter(())
        return ((other, d["h"]) for other, d in adj.items())

    def packed(self, node: str) -> Packed | None:
        """The node's hyperedges as flat arrays (cached until its edges change)."""
        pk = self._packed.get(node)
        if pk is None:
            adj = self.g._adj.get(node)
            if not adj:
                return None
            pk = self._packed[node] = Packed.of(node, [(o, d["h"]) for o, d in adj.items()])
        return pk

    def pack_all(self) -> None:
        """Pack every node now (part of loading: queries then only read)."""
        with self.lock:
            for node in self.g.nodes:
                self.packed(node)

    def edge(self, a: str, b: str) -> Hyperedge | None:
        d = self.g.get_edge_data(a, b)
        return None if d is None else d["h"]

    def degree(self, node: str) -> int:
        return int(self.g.degree(node)) if node in self.g else 0

    def stats(self) -> dict[str, Any]:
        nodes = max(1, len(self))
        nbytes = sum(d["h"].nbytes for _, _, d in self.g.edges(data=True))
        return {
            "nodes": len(self),
            "edges": self.n_edges,
            "mean_degree": 2.0 * self.n_edges / nodes,
            "isolated": sum(1 for n in self.g.nodes if self.g.degree(n) == 0),
            "components": nx.number_connected_components(self.g) if len(self) else 0,
            "hyperedge_bytes": nbytes,
            "hyperedge_bytes_per_image": nbytes / nodes,
            "k": self.config.k,
            "verifier": self.config.verifier,
            "features": self.features_kind,
        }

    # ---------------------------------------------------------------- build

    def inputs(self, store: Store, retriever: Retriever | None = None, *, verifying: bool = True) -> GraphInputs:
        """Resolve, through the registries, what this graph is built from on ``store``:
        ``retriever`` or the configured one (:attr:`GraphConfig.retriever`), the
        features (those the retriever indexes the store with, unless the configuration
        names others), the pair verifier (``verifier_checker``; looked up only when
        ``verifying``, so that saved hyperedges load without one) and its options."""
        retr = retriever if retriever is not None else providers.retriever(self.config.retriever)
        indexed = providers.indexed_extractor(retr, store)
        indexed_spec = providers.spec_of(indexed) if indexed is not None else None
        if indexed is not None and indexed_spec is None:
            log.warning("topology_retriever_features_unnamed", kind=indexed.kind, hint="no registered extractor reproduces them: set the graph's `features` option")
        spec = self.config.feature_spec(indexed_spec)
        extractor = plugins.make_extractor(spec)
        if not self.features_kind:
            self.features_kind = extractor.kind
        verifier = providers.pair_verifier(self.config.verifier_checker) if verifying and self.config.verifier == "homography" else None
        return GraphInputs(
            retriever=retr,
            features=spec,
            extractor=extractor,
            retrieval_features=spec if indexed is None else indexed_spec,
            verifier=verifier,
            options=self.config.verifier_options(),
        )

    def _neighbours(self, sample: Sample, store: Store, src: GraphInputs, k: int) -> list[Sample]:
        query = Query(id=sample.id, uri=sample.uri, embedding=sample.embedding)
        found = src.retriever.retrieve(query, store, k, exclude=(sample.id,), features=src.retrieval_features)
        return [n.sample for n in found if n.sample.id != sample.id and n.sample.uri is not None][:k]

    def _pair(self, sample: Sample, feats: LocalFeatures, other: Sample, store: Store, src: GraphInputs) -> Hyperedge | None:
        """Verify one pair: its hyperedge, or ``None`` when it does not verify
        (``ImageError`` when an image cannot be read)."""
        if self.config.verifier == "tr":  # topological RANSAC on the features themselves
            from consist_topological.tr import topological_ransac

            of = features_for(other, store, src.extractor)
            r = topological_ransac(feats, of)
            if r.score < self.config.tr_min_score or not len(r.matches):
                return None
            m = np.asarray(r.matches, dtype=np.int64)
            return Hyperedge(sample.id, other.id, m[:, 0], m[:, 1], feats.keypoints[m[:, 0]], of.keypoints[m[:, 1]])
        assert src.verifier is not None  # resolved for a "homography" graph
        # the stored image as a whole (a Sample would be restricted to its labelled region)
        query = Query(id=sample.id, uri=sample.uri)
        ev = src.verifier.verify_pair(query, other, store, features=src.features, options=src.options)
        if not ev.verified or not len(ev.query_points):
            return None
        if ev.query_indices is None or ev.neighbour_indices is None:
            raise ConsistError(f"verifier {src.verifier.name!r} returned no keypoint indices for {sample.id} - {other.id}: a matching graph keeps them (PairEvidence.query_indices)")
        return Hyperedge(sample.id, other.id, ev.query_indices, ev.neighbour_indices, ev.query_points, ev.neighbour_points)

    def _verify_sample(self, sample: Sample, store: Store, src: GraphInputs) -> tuple[list[str], list[Hyperedge], int]:
        """Verify ``sample`` against its top-k; pairs verified from the other side
        already are reused. ``(tried, hyperedges, pairs verified now)``."""
        k = min(self.config.k, max(1, len(store) - 1))
        feats = features_for(sample, store, src.extractor)  # unreadable: the sample fails, not its pairs
        tried: list[str] = []
        edges: list[Hyperedge] = []
        n_verified = 0
        for other in self._neighbours(sample, store, src, k):
            tried.append(other.id)
            if sample.id in self.tried.get(other.id, ()):  # done from the other side
                e = self.edge(sample.id, other.id)
                if e is not None:
                    edges.append(e)
                continue
            try:
                edge = self._pair(sample, feats, other, store, src)
            except ImageError as exc:
                log.warning("topology_neighbour_unreadable", sample=sample.id, neighbour=other.id, error=str(exc))
                continue
            n_verified += 1
            if edge is not None:
                edges.append(edge)
        return tried, edges, n_verified

    def _attach(self, sample_id: str, uri: str, tried: Iterable[str], edges: Iterable[Hyperedge]) -> None:
        with self.lock:
            self.g.add_node(sample_id)
            self.tried[sample_id] = set(tried)
            self.sources[sample_id] = uri
            for e in edges:
                self.add_edge(e)

    def add_samples(self, samples: Iterable[Sample], store: Store, *, retriever: Retriever | None = None, progress: Progress | None = None, save: bool = True) -> GraphSyncReport:
        """Verify each sample against its top-k and add its hyperedges (and store
        them as the sample's artefact when ``save``)."""
        src = self.inputs(store, retriever)
        kind = edges_kind(self.features_kind, self.config.verifier)
        added = pairs = 0
        failed: list[tuple[str, str]] = []
        for s in samples:
            if progress:
                progress(1)
            if s.uri is None or s.id == GRAPH_SAMPLE_ID:
                continue
            try:
                tried, edges, n = self._verify_sample(s, store, src)
            except ImageError as exc:
                failed.append((s.id, str(exc)))
                log.warning("topology_image_unreadable", sample=s.id, error=str(exc))
                continue
            pairs += n
            if s.id in self.g:
                self.remove_node(s.id)
            self._attach(s.id, s.uri, tried, edges)
            added += 1
            if save:
                try:
                    store.put_artefact(s.id, kind, _encode(s.uri, tried, edges, s.id, self.config.k))
                except StoreError as exc:  # read-only: the graph still answers
                    log.debug("topology_edges_not_saved", sample=s.id, error=str(exc))
        return GraphSyncReport(added=added, verified_pairs=pairs, failed=tuple(failed))

    def _load_saved(self, sample: Sample, store: Store) -> bool:
        blob = store.get_artefact(sample.id, edges_kind(self.features_kind, self.config.verifier))
        if blob is None:
            return False
        try:
            meta, edges = _decode(blob)
        except ValueError as exc:
            log.warning("topology_edges_unreadable", sample=sample.id, error=str(exc))
            return False
        if meta.get("uri") != sample.uri:
            return False  # other pixels now: recompute
        saved_k = meta.get("k")
        if saved_k is not None and saved_k < self.config.k and len(meta.get("tried", [])) >= saved_k:
            return False  # built with a smaller k that limited it: verify more neighbours
        self._attach(sample.id, sample.uri or "", meta.get("tried", []), edges)
        return True

    def build(self, store: Store, *, retriever: Retriever | None = None, progress: Progress | None = None, save: bool = True) -> GraphSyncReport:
        """Load every sample's saved hyperedges and compute the missing ones."""
        with self.lock:
            seq = newest_seq(store)
            retr = self.inputs(store, retriever, verifying=False).retriever
            todo = []
            with gc_paused():
                for s in store.samples():
                    if s.uri is None or s.id == GRAPH_SAMPLE_ID:
                        continue
                    if not self._load_saved(s, store):
                        todo.append(s)
                    elif progress:
                        progress(1)
            # loaded edges point at nodes that may have been deleted since
            live = {s.id for s in store.samples()}
            for node in [n for n in self.g.nodes if n not in live]:
                self.remove_node(node)
            report = self.add_samples(todo, store, retriever=retr, progress=progress, save=save) if todo else GraphSyncReport()
            self.last_seq = seq
            self.pack_all()
            if save:
                self.save(store)
            log.info("topology_graph_built", nodes=len(self), edges=self.n_edges, computed=report.added, pairs=report.verified_pairs)
            return report

    def sync(self, store: Store, *, retriever: Retriever | None = None, progress: Progress | None = None, save: bool = True) -> GraphSyncReport:
        """Follow the store's history since the last build/sync: add the hyperedges
        of new samples (or samples with new pixels), drop deleted ones. Relabels
        change nothing here (labels are read from the store when voting)."""
        return super().sync(store, retriever=retriever, progress=progress, save=save)

    def _sync_all(self, store: Store, retriever: Retriever | None = None, progress: Progress | None = None, save: bool = True) -> GraphSyncReport:
        return self.build(store, retriever=retriever, progress=progress, save=save)

    def _sync_changes(self, store: Store, changes: StoreChanges, retriever: Retriever | None = None, progress: Progress | None = None, save: bool = True) -> GraphSyncReport:
        gone = [sid for sid in changes.deleted if sid in self.g] + [s.id for s in changes.changed if s.uri is None and s.id in self.g]
        for sid in gone:
            self.remove_node(sid)
        todo = [s for s in changes.changed if s.uri is not None and s.id != GRAPH_SAMPLE_ID and self.sources.get(s.id) != s.uri]
        report = self.add_samples(todo, store, retriever=retriever, progress=progress, save=save) if todo else GraphSyncReport()
        if save and (todo or gone):
            self.save(store)  # with the new last_seq
        if todo or gone:
            log.info("topology_graph_synced", added=report.added, removed=len(gone), pairs=report.verified_pairs)
        return attrs.evolve(report, removed=len(gone))

    # ----------------------------------------------------------- persistence

    def save(self, store: Store) -> None:
        """Write the graph's metadata (the history position it reflects, how it was
        built); the hyperedges are saved per sample as they are computed."""
        meta = {
            "version": FORMAT_VERSION,
            "last_seq": self.last_seq,
            "k": self.config.k,
            "min_inliers": self.config.min_inliers,
            "spatial": dict(self.config.spatial),
            "verifier": self.config.verifier,
            "saved": time.time(),
        }
        try:
            store.put_artefact(GRAPH_SAMPLE_ID, meta_kind(self.features_kind, self.config.verifier), json.dumps(meta).encode())
        except StoreError as exc:
            log.debug("topology_meta_not_saved", error=str(exc))

    @classmethod
    def load(cls, store: Store, config: GraphConfig | None = None, *, retriever: Retriever | None = None, progress: Progress | None = None, save: bool = True) -> MatchingHypergraph:
        """The store's graph: saved hyperedges read back, the rest computed, synced."""
        graph = cls(config)
        graph.build(store, retriever=retriever, progress=progress, save=save and not getattr(store, "readonly", False))
        return graph


# ------------------------------------------------------------------ process cache

#: store -> graph configuration -> graph: one graph per store and configuration in a process.
_GRAPHS: PerStoreCache[tuple[Any, ...], MatchingHypergraph] = PerStoreCache("topology graph")


def graph_for(store: Store, config: GraphConfig | None = None, *, retriever: Retriever | None = None, progress: Progress | None = None) -> MatchingHypergraph:
    """The (process-wide cached) matching graph of ``store``, synced with it.

    The first call per store loads the saved hyperedges and computes the missing
    ones (N·k verifications for a store never graphed: build it ahead with
    ``consist topology build``); later calls only follow the store's history.
    """
    if store is None:
        raise ConsistError("the matching graph needs a store")
    config = config or GraphConfig()
    key = (
        config.k,
        config.min_inliers,
        config.verifier,
        config.tr_min_score,
        json.dumps(dict(config.spatial), sort_keys=True, default=str),
        config.features,
        config.verifier_checker,
        config.retriever,
    )
    graph = _GRAPHS.get(store, key)
    writable = not getattr(store, "readonly", False)
    if graph is None:
        graph = MatchingHypergraph.load(store, config, retriever=retriever, progress=progress, save=writable)
        _GRAPHS.put(store, key, graph)
    else:
        graph.sync(store, retriever=retriever, progress=progress, save=writable)
    return graph
