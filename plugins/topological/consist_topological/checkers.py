"""The topological plugin's checkers.

* ``community`` (on by default): the community label vote. Is the query connected,
  through verified matches, to the images that carry a label? The query is linked
  to the matching graph (a stored sample through its hyperedges, a new image
  through the verification of its best neighbours by the registered pair verifier,
  the spatial checker by default), propagation (HP,
  3 hops through active regions) collects its community, and each label is voted
  for by its share of the community, weighted by hyperedge strength (inliers
  passed, halved per extra hop). A mislabelled stored image whose verified
  neighbours all carry another label gets a strong vote for that label and one
  against its own; an isolated query abstains. The checker publishes
  ``context.signals["community_uncertainty"]`` (entropy of the communities of the
  retrieved neighbours, CS) for the controller and later checkers.
* ``topological_ransac`` (opt-in): TR verification of the query against its
  neighbours, voting like the spatial checker but with TR's region size. Off by
  default because it looks at the same pixels as ``spatial`` and both votes would
  count the same evidence twice; turn it on instead of, or to compare with, spatial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from consist import plugins
from consist.contracts.checker import Abstain, BaseChecker, CheckContext
from consist.errors import ImageError
from consist.features import features_for
from consist.options import in_unit
from consist.records import Neighbour, Prediction, Vote
from consist_topological.hypergraph import DEFAULT_K, GraphConfig, MatchingHypergraph, graph_for
from consist_topological.propagation import CS_DEPTH, CS_TOP, MAX_HOPS, MIN_PASS_INLIERS
from consist_topological.providers import DEFAULT_VERIFIER, pair_verifier, query_features
from consist_topological.rerank import HpConfig, QueryLink, hp_rerank, links_from_graph
from consist_topological.tr import TrParams, topological_ransac

if TYPE_CHECKING:
    from consist.contracts import Store

__all__ = ["SIGNAL_LABELS", "SIGNAL_UNCERTAINTY", "CommunityConfig", "CommunityVoteChecker", "TopologicalRansacChecker", "TrCheckerConfig"]

log = structlog.get_logger("consist.topological")
_unit = in_unit("topological")

#: Signal names published in ``CheckContext.signals`` (see docs/topological.md).
SIGNAL_UNCERTAINTY = "community_uncertainty"
SIGNAL_LABELS = "community_labels"
SIGNAL_SIZE = "community_size"


def _options(cls: type, current: Any, options: Mapping[str, Any] | None, what: str) -> Any:
    if not options:
        return current
    known = {a.name for a in attrs.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return attrs.evolve(current, **dict(options))


@attrs.frozen
class CommunityConfig:
    """Options of the ``community`` checker.

    Attributes:
        k: neighbours per image of the matching graph (:data:`DEFAULT_K`, 200).
        spatial: the pair verifier's options for building the graph and linking
            a new query (for the ``spatial`` checker, ``SpatialConfig`` fields).
        verifier: what makes a pair a hyperedge, ``"homography"`` or ``"tr"``
            (see :class:`~consist_topological.hypergraph.GraphConfig`).
        features, verifier_checker, retriever: the local features, the registered
            pair verifier and the registered retriever the graph is built with
            (``None``, ``"spatial"``, ``None``; see
            :class:`~consist_topological.hypergraph.GraphConfig`).
        query_k: best retrieved neighbours a query that is not in the store is
            verified against to link it to the graph (10: the spatial checker's k,
            whose cached features are then warm).
        max_hops, min_pass: propagation (3 hops, 8 inliers inside the active region).
        hop_decay: weight of an image reached at hop h is its inliers passed times
            ``hop_decay ** (h - 1)`` (0.5: a farther image is weaker evidence of
            the query's identity).
        mass_scale: community weight (inliers) that makes the vote 63% as strong as
            it can be (50: two or three solid verified neighbours).
        min_share: a label's share of the community for a vote for it (0.2).
        max_support: support of a label owning the whole, heavy community (0.95).
        against_support: support of the vote against the predicted label when the
            community carries none of it (0.2, at full strength).
        cs_top, cs_depth: community selection window (20 of the top-100).
    """

    k: int = attrs.field(default=DEFAULT_K, converter=int)
    spatial: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda m: dict(m or {}), hash=False)
    verifier: str = attrs.field(default="homography", validator=attrs.validators.in_(("homography", "tr")))
    query_k: int = attrs.field(default=10, converter=int)
    max_hops: int = attrs.field(default=MAX_HOPS, converter=int)
    min_pass: int = attrs.field(default=MIN_PASS_INLIERS, converter=int)
    hop_decay: float = attrs.field(default=0.5, converter=float, validator=_unit)
    mass_scale: float = attrs.field(default=50.0, converter=float)
    min_share: float = attrs.field(default=0.2, converter=float, validator=_unit)
    max_support: float = attrs.field(default=0.95, converter=float, validator=_unit)
    against_support: float = attrs.field(default=0.2, converter=float, validator=_unit)
    cs_top: int = attrs.field(default=CS_TOP, converter=int)
    cs_depth: int = attrs.field(default=CS_DEPTH, converter=int)
    features: str | None = None
    verifier_checker: str = DEFAULT_VERIFIER
    retriever: str | None = None

    @property
    def graph_config(self) -> GraphConfig:
        return GraphConfig(k=self.k, spatial=self.spatial, verifier=self.verifier, features=self.features, verifier_checker=self.verifier_checker, retriever=self.retriever)


class CommunityVoteChecker(BaseChecker):
    """Votes for the labels of the query's community in the matching graph."""

    name = "community"
    #: it verifies every image against its neighbours to build the store's matching
    #: graph: an audit, which verifies those pairs itself, leaves it out unless named
    builds_store_graph = True
    #: a stored query: graph lookups and propagation (~2 ms); a new query: the pair
    #: verification of its ``query_k`` best neighbours (neighbour features cached;
    #: ~0.4 s when the query's features are extracted once, ~1.9 s on ukbench photos
    #: with the spatial checker's ``verify_pair``, which extracts them per pair).
    #: Ranked after ``spatial`` (0.5), whose evidence is direct, and before LMM
    #: reflection, which the uncertainty it publishes is meant to gate.
    cost = 0.6
    timeout = 300.0  # the first call on a store never graphed builds the graph
    description = "community label vote: labels of the images the query is connected to by verified matches (hypergraph propagation); publishes community_uncertainty"

    def __init__(self, config: CommunityConfig | None = None, **options: Any) -> None:
        self.config = _options(CommunityConfig, config or CommunityConfig(), options, "community")

    def validate_options(self, options: Mapping[str, Any]) -> None:
        cfg = _options(CommunityConfig, self.config, options, "community")
        cfg.graph_config.validate()  # unknown verifier options fail now

    def graph(self, store: Store, cfg: CommunityConfig) -> MatchingHypergraph:
        return graph_for(store, cfg.graph_config)

    def prepare(self, store: Store, options: Mapping[str, Any] | None = None, progress: Any = None) -> MatchingHypergraph:  # type: ignore[override]  # also hands the graph to direct callers; the engine ignores it
        """Build (or load and sync) the store's matching graph ahead of the queries,
        once per process: what an audit or a batch does before fanning out, so that
        no worker builds it on its first query. Saved in the store."""
        return self.graph(store, _options(CommunityConfig, self.config, options, "community"))

    def _links(self, prediction: Prediction, neighbours: Sequence[Neighbour], store: Store, graph: MatchingHypergraph, cfg: CommunityConfig) -> list[QueryLink]:
        q = prediction.query
        stored = store.get(q.id)
        if q.id in graph and stored is not None and q.image is None and q.uri in (None, stored.uri) and q.region is None:
            return links_from_graph(graph, q.id)
        # a new query: verified now against its best neighbours by the pair verifier,
        # on the features the options name (else SIFT defaults)
        gcfg = cfg.graph_config
        spec = gcfg.feature_spec()
        verifier = pair_verifier(gcfg.verifier_checker)
        links = []
        for n in sorted(neighbours, key=lambda n: n.rank)[: cfg.query_k]:
            if n.sample.id == q.id or n.sample.uri is None:
                continue
            try:
                ev = verifier.verify_pair(q, n.sample, store, region=q.region, features=spec, options=gcfg.verifier_options())
            except ImageError:
                continue  # the neighbour's image, or the query's (told apart below)
            if ev.verified and len(ev.query_points):
                links.append(QueryLink(n.sample.id, ev.query_points, ev.neighbour_points))
        if not links:
            try:  # an unreadable query abstains as such, not as "isolated"
                query_features(q, store, plugins.make_extractor(spec))
            except ImageError as exc:
                raise Abstain(f"query image unreadable: {exc}") from exc
        return links

    def check(self, prediction: Prediction, neighbours: Sequence[Neighbour], context: CheckContext) -> Sequence[Vote]:
        cfg = _options(CommunityConfig, self.config, context.config, "community")
        store = context.store
        if store is None:
            raise Abstain("no store: the matching graph lives in the store")
        q = prediction.query
        graph = self.graph(store, cfg)
        links = self._links(prediction, neighbours, store, graph, cfg)
        ranking = [n.sample.id for n in sorted(neighbours, key=lambda n: n.rank) if n.sample.id != q.id]
        hp = hp_rerank(graph, q.id, ranking, links, config=HpConfig(max_hops=cfg.max_hops, min_pass=cfg.min_pass, cs_top=cfg.cs_top, cs_depth=cfg.cs_depth))
        context.signals[SIGNAL_UNCERTAINTY] = round(hp.uncertainty, 4)
        members = [m for m in hp.propagation.order if m != q.id]
        found = dict(zip(members, store.get_many(members))) if members else {}
        mass: dict[str, float] = {}
        count: dict[str, int] = {}
        for m in members:
            s = found.get(m)
            if s is None or s.label is None:
                continue
            w = hp.propagation.passed[m] * cfg.hop_decay ** max(0, hp.propagation.hops[m] - 1)
            mass[s.label] = mass.get(s.label, 0.0) + w
            count[s.label] = count.get(s.label, 0) + 1
        total = sum(mass.values())
        context.signals[SIGNAL_SIZE] = sum(count.values())
        if not total:
            context.signals[SIGNAL_LABELS] = {}
            raise Abstain(f"isolated: no labelled image is connected to the query by verified matches ({len(links)} direct links)")
        shares = {lb: w / total for lb, w in mass.items()}
        context.signals[SIGNAL_LABELS] = {lb: round(v, 4) for lb, v in sorted(shares.items(), key=lambda kv: -kv[1])}
        strength = 1.0 - math.exp(-total / cfg.mass_scale)
        common = {
            "community_size": sum(count.values()),
            "community_weight": round(total, 2),
            "community_uncertainty": round(hp.uncertainty, 4),
            "direct_links": len(links),
            "shares": context.signals[SIGNAL_LABELS],
        }
        votes = []
        for lb, share in shares.items():
            if share < cfg.min_share:
                continue
            best = max((m for m in members if (fm := found.get(m)) is not None and fm.label == lb), key=lambda m: hp.propagation.passed[m])
            votes.append(
                Vote(
                    checker=self.name,
                    label=lb,
                    support=0.5 + (cfg.max_support - 0.5) * share * strength,
                    confidence=0.5 + 0.5 * strength,
                    evidence={**common, "share": round(share, 4), "members": count[lb], "neighbour": best, "hops": hp.propagation.hops[best], "region": hp.propagation.regions[best]},
                    neighbour_id=best,
                )
            )
        top = prediction.top.label
        top_share = shares.get(top, 0.0)
        if top_share < cfg.min_share:
            votes.append(
                Vote(
                    checker=self.name,
                    label=top,
                    support=0.5 - (0.5 - cfg.against_support) * strength * (1.0 - top_share),
                    confidence=0.5 + 0.5 * strength,
                    evidence={**common, "share": round(top_share, 4)},
                )
            )
        return votes


@attrs.frozen
class TrCheckerConfig:
    """Options of the ``topological_ransac`` checker.

    Attributes:
        k: best labelled neighbours verified (10, as the spatial checker).
        min_score: distinct points of the largest region for a pair to verify (15,
            the spatial checker's inlier minimum: regions of unrelated images stay
            below ~10 after the grid test).
        min_support, max_support, support_scale, reject_support, reject_confidence:
            the spatial checker's vote shape (0.6, 0.99, 20, 0.3, 0.6).
        spatial: feature options (``SpatialConfig`` fields: ``extractor``,
            ``max_side``, ``max_keypoints``...) for the cached features.
        tr: :class:`~consist_topological.tr.TrParams` fields.
        features: the local features by registered extractor name (``None``: those
            of ``spatial``, else SIFT; see
            :meth:`~consist_topological.hypergraph.GraphConfig.feature_spec`).
    """

    k: int = attrs.field(default=10, converter=int)
    min_score: int = attrs.field(default=15, converter=int)
    min_support: float = attrs.field(default=0.6, converter=float, validator=_unit)
    max_support: float = attrs.field(default=0.99, converter=float, validator=_unit)
    support_scale: float = attrs.field(default=20.0, converter=float)
    reject_support: float = attrs.field(default=0.3, converter=float, validator=_unit)
    reject_confidence: float = attrs.field(default=0.6, converter=float, validator=_unit)
    spatial: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda m: dict(m or {}), hash=False)
    tr: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda m: dict(m or {}), hash=False)
    features: str | None = None

    @property
    def params(self) -> TrParams:
        return TrParams(**dict(self.tr))

    @property
    def graph_config(self) -> GraphConfig:
        """The features part, read as a graph's (TR needs no pair verifier)."""
        return GraphConfig(spatial=self.spatial, verifier="tr", features=self.features)


class TopologicalRansacChecker(BaseChecker):
    """Verification of the query against its neighbours by topological RANSAC."""

    name = "topological_ransac"
    cost = 0.8  # ~50-150 ms per neighbour on two cores, k = 10
    timeout = 120.0
    enabled_by_default = False
    description = "topological RANSAC verification (fovea 3x3 grid test, saccades, homeomorphic regions); opt-in, overlaps spatial"

    def __init__(self, config: TrCheckerConfig | None = None, **options: Any) -> None:
        self.config = _options(TrCheckerConfig, config or TrCheckerConfig(), options, "topological_ransac")

    def validate_options(self, options: Mapping[str, Any]) -> None:
        cfg = _options(TrCheckerConfig, self.config, options, "topological_ransac")
        cfg.params  # noqa: B018 - unknown TR parameters fail now
        cfg.graph_config.validate()

    def support_for(self, score: int, cfg: TrCheckerConfig) -> float:
        excess = max(0, score - cfg.min_score)
        return cfg.min_support + (cfg.max_support - cfg.min_support) * (1.0 - math.exp(-excess / cfg.support_scale))

    def check(self, prediction: Prediction, neighbours: Sequence[Neighbour], context: CheckContext) -> Sequence[Vote]:
        cfg = _options(TrCheckerConfig, self.config, context.config, "topological_ransac")
        extractor = plugins.make_extractor(cfg.graph_config.feature_spec())
        q = prediction.query
        store = context.store
        chosen = [n for n in sorted(neighbours, key=lambda n: n.rank) if n.sample.label is not None and n.sample.id != q.id][: cfg.k]
        if not chosen:
            raise Abstain("no labelled neighbour to verify against")
        try:
            qf = query_features(q, store, extractor)
        except ImageError as exc:
            raise Abstain(f"query image unreadable: {exc}") from exc
        params = cfg.params
        best: dict[str, tuple[int, Neighbour, Any]] = {}
        failed: dict[str, int] = {}
        for n in chosen:
            try:
                nf = features_for(n.sample, store, extractor)
            except ImageError:
                continue
            r = topological_ransac(qf, nf, params)
            label = n.sample.label
            assert label is not None  # chosen holds labelled neighbours only
            if r.score >= cfg.min_score:
                if label not in best or r.score > best[label][0]:
                    best[label] = (r.score, n, r)
            else:
                failed[label] = failed.get(label, 0) + 1
        votes = []
        for label, (score, n, r) in best.items():
            votes.append(
                Vote(
                    checker=self.name,
                    label=label,
                    support=self.support_for(score, cfg),
                    confidence=0.4 + 0.6 * (1.0 - math.exp(-r.regions / 2.0)) if r.regions else 0.4,
                    evidence={**r.evidence(), "neighbour": n.sample.id, "polygon": r.evidence()["inlier_hull"]},
                    neighbour_id=n.sample.id,
                )
            )
        candidates = {c.label for c in prediction.candidates}
        for label, tried in failed.items():
            if label not in best and label in candidates:
                votes.append(Vote(checker=self.name, label=label, support=cfg.reject_support, confidence=cfg.reject_confidence * (1.0 - 0.5**tried), evidence={"verified": False, "tried": tried}))
        if not votes:
            raise Abstain("no neighbour verified by TR, and none had a candidate label")
        return votes
