"""Retrieval evaluation with the revisitop protocol: the retriever's ranking (ASMK when
registered; the ``asmk`` row), + spatial re-ranking, + hypergraph propagation (HP),
+ community selection (CS). Retriever, verifier, re-ranker and features come through
the registries (see :meth:`~consist_topological.hypergraph.MatchingHypergraph.inputs`).

Two kinds of ground truth:

* **revisitop** (``gnd_roxford5k.pkl`` format: ``imlist``, ``qimlist``, per query
  ``bbx``, ``easy``, ``hard``, ``junk``): database images are the ``imlist``
  files, queries the ``qimlist`` files cropped to their box; mAP under Easy,
  Medium and Hard with junk removed (Radenović et al., CVPR 2018), through
  :mod:`consist.metrics.retrieval`.
* **labelled folders** (or a CSV): leave-one-out; every image queries all the
  others, positives are the other images of its label, no junk.

For a stored query (leave-one-out) the links to the graph are its own hyperedges,
which are its spatial verifications against its top-k: spatial re-ranking and HP
see the same verifications, so the difference between them is propagation alone.
A revisitop query is verified at query time against the top ``depth`` results.
"""

from __future__ import annotations

import pickle
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from consist.contracts.evidence import PairEvidence
from consist.contracts.features import LocalFeatures
from consist.contracts.retrieval import Progress
from consist.errors import ConsistError, ImageError, StoreError
from consist.features import features_for
from consist.metrics.retrieval import DEFAULT_KS, PROTOCOLS, evaluate_query, revisitop_protocols
from consist.records import Neighbour, Provenance, Query, Region, Sample
from consist_topological import providers
from consist_topological.hypergraph import GraphConfig, MatchingHypergraph
from consist_topological.rerank import HpConfig, QueryLink, hp_rerank, links_from_graph
from consist_topological.rerankers import links_from_pairs
from consist_topological.tr import topological_ransac

if TYPE_CHECKING:
    from consist.contracts import Store

__all__ = ["METHODS", "RetrievalEvaluation", "evaluate_gnd", "evaluate_labelled", "load_gnd"]

log = structlog.get_logger("consist.topological")

#: Rankings compared, in this order.
METHODS = ("asmk", "spatial", "hp", "cs")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


class _NoGlobals(pickle.Unpickler):
    """revisitop's pickles hold dicts, lists, strings and floats only: refuse
    anything that would import code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a revisitop gnd file holds plain lists and dicts")


def load_gnd(path: str | Path) -> dict[str, Any]:
    """Read and check a revisitop ground-truth pickle (``ConsistError`` naming the
    file and the problem otherwise)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = _NoGlobals(fh).load()
    except FileNotFoundError as exc:
        raise ConsistError(f"{p}: no such file") from exc
    except Exception as exc:
        raise ConsistError(f"{p}: not a revisitop gnd pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or not {"gnd", "imlist", "qimlist"} <= set(data):
        raise ConsistError(f"{p}: a revisitop gnd pickle needs the keys gnd, imlist, qimlist")
    if len(data["gnd"]) != len(data["qimlist"]):
        raise ConsistError(f"{p}: {len(data['gnd'])} gnd entries for {len(data['qimlist'])} queries")
    n = len(data["imlist"])
    for i, g in enumerate(data["gnd"]):
        for key in ("easy", "hard"):
            if key not in g:
                raise ConsistError(f"{p}: query {i} has no {key!r} list")
            if any(not 0 <= int(v) < n for v in g[key]):
                raise ConsistError(f"{p}: query {i}: {key!r} index outside the {n} database images")
    return data


@attrs.frozen
class RetrievalEvaluation:
    """mAP per method (and per protocol for revisitop), with timings."""

    dataset: str
    kind: str  # "revisitop" or "leave-one-out"
    queries: int
    database: int
    results: dict[str, dict[str, Any]]
    timings: dict[str, float]
    graph: dict[str, Any]
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _find_image(folder: Path, name: str) -> Path | None:
    for suf in ("", *IMAGE_SUFFIXES):
        p = folder / f"{name}{suf}"
        if p.is_file():
            return p
    return None


def _ensure_samples(store: Store, samples: Sequence[Sample], reason: str) -> int:
    """Put the samples the store lacks (or has with another uri)."""
    have = store.get_many([s.id for s in samples]) if hasattr(store, "get_many") else [store.get(s.id) for s in samples]
    todo = [s for s, old in zip(samples, have) if old is None or old.uri != s.uri or old.label != s.label]
    if todo:
        with store.transaction():
            store.put(todo, reason=reason, force=True)
    return len(todo)


def _increments(progress: Callable[[str, int], Any] | None, phase: str) -> Progress | None:
    """A contract ``progress(done, total)`` as the evaluation's ``progress(phase, n)``."""
    if progress is None:
        return None
    seen = [0]

    def report(done: int, _total: int) -> None:
        if done > seen[0]:
            progress(phase, done - seen[0])
            seen[0] = done

    return report


class _Pipeline:
    """Retrieval + matching graph of one store, and the rankings built on them, through
    the registries: the graph's retriever (``asmk`` when registered), its pair verifier
    and features (see :meth:`MatchingHypergraph.inputs`), the re-ranker named like the
    verifier (``spatial``) for a new query's short-list."""

    def __init__(self, store: Store, *, k: int, depth: int, spatial: dict[str, Any] | None, hp: HpConfig, progress: Callable[[str, int], Any] | None, verifier: str = "homography") -> None:
        self.store = store
        self.depth = depth
        self.hp = hp
        self.timings: dict[str, float] = {}
        self.graph = MatchingHypergraph(GraphConfig(k=k, spatial=spatial or {}, verifier=verifier))
        t0 = time.perf_counter()
        # the features the store's retrieval index already uses (those ``consist index`` extracted), else SIFT defaults
        self.inputs = self.graph.inputs(store, verifying=verifier == "homography")
        self.retriever = self.inputs.retriever
        if self.inputs.retrieval_features is not None:  # None: features no extractor names; the retriever keeps its own
            try:
                self.retriever.prepare(store, features=self.inputs.retrieval_features, progress=_increments(progress, "asmk"))
            except StoreError as exc:  # read-only: retrieval still answers
                log.debug("eval_retriever_not_prepared", error=str(exc))
        self.timings["asmk_build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.graph.build(store, retriever=self.retriever, progress=(lambda n: progress("graph", n)) if progress else None, save=not getattr(store, "readonly", False))
        self.timings["graph_build_s"] = time.perf_counter() - t0
        self.prop_times: list[float] = []

    def retrieved(self, query: Query, k: int) -> list[Neighbour]:
        """The retriever's ``k`` best for the query, itself excluded."""
        return self.inputs.retriever.retrieve(query, self.store, k, exclude=(query.id,), features=self.inputs.retrieval_features)

    def rankings(self, query: Query, stored: bool, methods: Sequence[str]) -> dict[str, list[str]]:
        found = self.retrieved(query, max(1, len(self.store)))
        base = [n.sample.id for n in found]
        out = {"asmk": base}
        if stored and query.id in self.graph:
            links = links_from_graph(self.graph, query.id)
            inl = {lk.sample_id: lk.inliers for lk in links}
            verified = sorted((s for s in base if s in inl), key=lambda s: -inl[s])
            out["spatial"] = verified + [s for s in base if s not in inl]
            qbox = None
        elif self.graph.config.verifier == "tr":
            feats = providers.query_features(query, self.store if stored else None, self.inputs.extractor)
            links = self._tr_links(feats, base[: self.depth])
            inl = {lk.sample_id: lk.inliers for lk in links}
            out["spatial"] = sorted((s for s in base if s in inl), key=lambda s: -inl[s]) + [s for s in base if s not in inl]
            qbox = None
        else:
            head, links = self._spatial(query, found[: self.depth])
            out["spatial"] = head + [s for s in base if s not in set(head)]
            qbox = None  # the verifier restricts the query to its region
        for m, cs in (("hp", False), ("cs", True)):
            if m in methods:
                t0 = time.perf_counter()
                r = hp_rerank(self.graph, query.id, base, links, config=attrs.evolve(self.hp, community_selection=cs), query_box=qbox)
                self.prop_times.append(time.perf_counter() - t0)
                out[m] = list(r.ranking)
        return {m: out[m] for m in methods if m in out}

    def _spatial(self, query: Query, neighbours: Sequence[Neighbour]) -> tuple[list[str], list[QueryLink]]:
        """Spatial re-ranking of a new query's short-list (verified first, by pair
        score, then the rest in retrieval order) and its links to the graph.

        By the registered re-ranker named like the pair verifier (``spatial``: one
        feature extraction for the query) when the verifier has no options, since a
        re-ranker takes none; else pair by pair with the verifier and its options.
        """
        src = self.inputs
        assert src.verifier is not None  # resolved for a "homography" graph
        rr = providers.reranker(src.verifier.name)
        if rr is not None and not src.options:
            ranked = rr.rerank(query, neighbours, self.store, k=self.depth, features=src.features).neighbours
            pairs = [PairEvidence.from_dict(n.evidence["pair"]) for n in ranked if isinstance(n.evidence.get("pair"), dict)]
            return [n.sample.id for n in ranked], links_from_pairs(pairs)
        checked: list[tuple[Neighbour, PairEvidence]] = []
        for n in neighbours:
            try:
                checked.append((n, src.verifier.verify_pair(query, n.sample, self.store, region=query.region, features=src.features, options=src.options)))
            except ImageError as exc:
                log.warning("rerank_image_unreadable", sample=n.sample.id, error=str(exc))
        verified = sorted((c for c in checked if c[1].verified), key=lambda c: (-c[1].score, c[0].rank))
        head = [n.sample.id for n, _ in verified]
        head += [n.sample.id for n in neighbours if n.sample.id not in set(head)]
        return head, links_from_pairs([ev for _, ev in checked])

    def _tr_links(self, feats: LocalFeatures, ids: Sequence[str]) -> list[QueryLink]:
        """Query links by topological RANSAC (the graph's verifier) on the short-list."""
        links = []
        for sample in self.store.get_many(list(ids)):
            if sample is None:
                continue
            nf = features_for(sample, self.store, self.inputs.extractor)
            r = topological_ransac(feats, nf)
            if r.score >= self.graph.config.tr_min_score:
                m = r.matches
                links.append(QueryLink(sample.id, feats.keypoints[m[:, 0]], nf.keypoints[m[:, 1]]))
        return links


def evaluate_labelled(
    store: Store,
    items: Sequence[Any],
    *,
    methods: Sequence[str] = METHODS,
    k: int = 200,
    depth: int = 100,
    spatial: dict[str, Any] | None = None,
    hp: HpConfig | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    progress: Callable[[str, int], Any] | None = None,
    name: str = "",
    verifier: str = "homography",
) -> RetrievalEvaluation:
    """Leave-one-out retrieval over labelled ``items`` (objects with ``id``, ``uri``, ``label``)."""
    samples = [Sample(it.id, uri=it.uri, label=it.label, provenance=Provenance.IMPORT) for it in items]
    _ensure_samples(store, samples, f"consist eval retrieval {name}")
    pipe = _Pipeline(store, k=k, depth=depth, spatial=spatial, hp=hp or HpConfig(), progress=progress, verifier=verifier)
    index = {s.id: i for i, s in enumerate(samples)}
    aps: dict[str, list[float]] = {m: [] for m in methods}
    pk: dict[str, dict[int, list[float]]] = {m: {kk: [] for kk in ks} for m in methods}
    t0 = time.perf_counter()
    for s in samples:
        if progress:
            progress("queries", 1)
        positives = [index[o.id] for o in samples if o.label == s.label and o.id != s.id]
        if not positives:
            continue
        ranks = pipe.rankings(Query(s.id, uri=s.uri), True, methods)
        for m, ranking in ranks.items():
            r = evaluate_query([index[x] for x in ranking if x in index], positives, ks=ks)
            aps[m].append(r.ap)
            for kk in ks:
                pk[m][kk].append(r.precision_at_k[kk])
    elapsed = time.perf_counter() - t0
    results = {
        m: {"map": statistics.fmean(v) if v else float("nan"), "mp_at_k": {kk: statistics.fmean(pk[m][kk]) if pk[m][kk] else float("nan") for kk in ks}, "queries": len(v)} for m, v in aps.items()
    }
    timings = {**pipe.timings, "query_s_mean": elapsed / max(1, len(samples)), "propagation_ms_mean": 1e3 * statistics.fmean(pipe.prop_times) if pipe.prop_times else float("nan")}
    return RetrievalEvaluation(
        name,
        "leave-one-out",
        len(samples),
        len(samples),
        results,
        timings,
        pipe.graph.stats(),
        {"k": k, "depth": depth, "methods": list(methods), "verifier": verifier, "spatial": dict(spatial or {})},
    )


def evaluate_gnd(
    store: Store,
    gnd: dict[str, Any],
    images: str | Path,
    *,
    methods: Sequence[str] = METHODS,
    k: int = 200,
    depth: int = 100,
    spatial: dict[str, Any] | None = None,
    hp: HpConfig | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    progress: Callable[[str, int], Any] | None = None,
    name: str = "",
    verifier: str = "homography",
) -> RetrievalEvaluation:
    """revisitop evaluation: database = ``gnd['imlist']`` images under ``images``,
    queries = ``gnd['qimlist']`` cropped to their ``bbx``; Easy/Medium/Hard mAP."""
    folder = Path(images)
    missing = [n for n in list(gnd["imlist"]) + list(gnd["qimlist"]) if _find_image(folder, n) is None]
    if missing:
        raise ConsistError(f"{folder}: {len(missing)} images of the ground truth are missing (first: {missing[0]}.jpg)")
    samples = [Sample(n, uri=str(_find_image(folder, n)), provenance=Provenance.IMPORT) for n in gnd["imlist"]]
    _ensure_samples(store, samples, f"consist eval retrieval {name}")
    pipe = _Pipeline(store, k=k, depth=depth, spatial=spatial, hp=hp or HpConfig(), progress=progress, verifier=verifier)
    index = {s.id: i for i, s in enumerate(samples)}
    rankings: dict[str, list[list[int]]] = {m: [] for m in methods}
    t0 = time.perf_counter()
    for qi, qname in enumerate(gnd["qimlist"]):
        if progress:
            progress("queries", 1)
        bbx = gnd["gnd"][qi].get("bbx")
        region = Region.from_box(*[float(v) for v in bbx]) if bbx is not None else None
        query = Query(f"query/{qname}", uri=str(_find_image(folder, qname)), region=region)
        for m, ranking in pipe.rankings(query, False, methods).items():
            rankings[m].append([index[x] for x in ranking if x in index])
    elapsed = time.perf_counter() - t0
    results: dict[str, dict[str, Any]] = {}
    for m in methods:
        per = revisitop_protocols(rankings[m], gnd["gnd"], ks=ks, query_axis=0) if rankings[m] else {}
        results[m] = {p: {"map": per[p].map, "mp_at_k": per[p].mp_at_k} for p in PROTOCOLS if p in per}
    timings = {**pipe.timings, "query_s_mean": elapsed / max(1, len(gnd["qimlist"])), "propagation_ms_mean": 1e3 * statistics.fmean(pipe.prop_times) if pipe.prop_times else float("nan")}
    return RetrievalEvaluation(
        name,
        "revisitop",
        len(gnd["qimlist"]),
        len(samples),
        results,
        timings,
        pipe.graph.stats(),
        {"k": k, "depth": depth, "methods": list(methods), "verifier": verifier, "spatial": dict(spatial or {})},
    )
