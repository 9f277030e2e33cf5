"""The audit's units of work, run by an executor (here, in worker processes, or on
Dask workers): feature extraction, and leave-one-out verification of a chunk of
samples. Module-level functions of plain picklable arguments, so that any executor
can ship them.

Each worker process opens the store once (by URI) and keeps its engine and
retrieval index for the tasks that follow (:data:`_STATE`).

On a cluster (an executor with ``results_via_store``: Dask) the workers write what
they computed — features and embeddings, each sample's verification record — straight
to the shared store, and hand the parent only sample ids: the parent coordinates and
never receives those payloads through the scheduler. Every such write is idempotent
(keyed by sample id, and for verification records by the run), so a task that reruns
after its worker died writes the same rows again and doubles nothing.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from consist.audit.candidates import build_prediction
from consist.audit.config import AuditConfig
from consist.contracts.evidence import pairs_in_votes
from consist.contracts.features import FeatureExtractor, FeatureSpec
from consist.records import Neighbour, Vote

__all__ = [
    "STORED_KEY",
    "checker_options",
    "edges_from_votes",
    "extract_chunk",
    "feature_spec",
    "local_features_available",
    "make_feature_extractor",
    "read_stored_record",
    "record_kind",
    "resolve_stored",
    "store_extracted",
    "verify_chunk",
]

#: Key of a journal line whose record lies in the store (value: the artefact kind).
STORED_KEY = "in_store"
#: Prefix of the artefact kind that holds a run's verification records.
RECORD_KIND_PREFIX = "audit/record/"

_STATE: dict[tuple[Any, ...], Any] = {}


def feature_spec(cfg: AuditConfig) -> FeatureSpec:
    """The local features the audit extracts and every checker reads (``--features``)."""
    return FeatureSpec.parse(cfg.features, max_side=cfg.max_side, max_keypoints=cfg.max_keypoints, **({"device": cfg.device} if cfg.device != "cpu" else {}))


def local_features_available(cfg: AuditConfig) -> bool:
    """Whether a plugin registered the extractor ``cfg.features`` names (e.g. consist-spatial's ``sift``)."""
    from consist import plugins

    return feature_spec(cfg).extractor in plugins.extractors()


def make_feature_extractor(cfg: AuditConfig) -> FeatureExtractor | None:
    """The configured extractor, or ``None`` when none is registered under that name."""
    from consist import plugins

    return plugins.make_extractor(feature_spec(cfg)) if local_features_available(cfg) else None


def _config(data: Mapping[str, Any]) -> AuditConfig:
    return AuditConfig(**dict(data))


# ------------------------------------------------------------------ extraction


def extract_chunk(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Decode, extract local features and embed each ``(id, uri)`` of the task.

    Returns one dict per item: ``id``, ``features`` (bytes, or None without a
    registered extractor), ``embedding`` (float32 bytes), ``error`` (one line naming
    the file) — an unreadable image is reported, never raised.
    """
    from consist import plugins
    from consist.errors import ImageError
    from consist.images import load_image

    cfg = _config(task["config"])
    ext = make_feature_extractor(cfg) if task.get("features", True) else None
    emb = plugins.embedders().get(task.get("embedder") or "tiny")
    out = []
    for sid, uri in task["items"]:
        try:
            pixels = load_image(uri)
            feats = None if ext is None else ext.extract(pixels).to_bytes()
            vec = None if emb is None else np.asarray(emb.embed(pixels), dtype=np.float32).tobytes()
            out.append({"id": sid, "features": feats, "embedding": vec, "error": None})
        except ImageError as exc:
            out.append({"id": sid, "features": None, "embedding": None, "error": str(exc)})
        except Exception as exc:  # a decoder or extractor failing on odd pixels
            out.append({"id": sid, "features": None, "embedding": None, "error": f"{uri}: cannot process ({type(exc).__name__}: {exc})"})
    if task.get("store"):
        # a cluster: the worker writes to the shared store itself; only ids and errors go back
        store = _open_store(str(task["store"]))
        meta = {str(item["id"]): item for item in task["samples"]}
        store_extracted(store, [(meta[r["id"]], r) for r in out if not r["error"]], kind=None if ext is None else ext.kind, reason=str(task.get("reason") or "consist audit"))
        return [{"id": r["id"], "error": r["error"], "stored": not r["error"]} for r in out]
    return out


def store_extracted(store: Any, results: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], *, kind: str | None, reason: str) -> int:
    """Write extracted samples (embedding) and their local features to ``store`` in one
    transaction; the same code whether the parent or a cluster worker writes.

    ``results``: ``(item, result)`` pairs — ``item`` has ``id``, ``uri``, ``label``,
    ``meta`` and ``changed`` (its file changed since the last run: a stored sample of
    the same path keeps its label and provenance, with the new embedding); ``result``
    is :func:`extract_chunk`'s dict. Idempotent: writing the same results again
    (a task rerun after its worker died) makes no history entry (the store records
    only changes) and replaces the features with the same bytes. Returns how many
    samples were written.
    """
    from consist.contracts.features import LocalFeatures
    from consist.features import cache_features
    from consist.records import Provenance, Sample

    if not results:
        return 0
    pending: list[tuple[Any, bytes | None]] = []
    for item, r in results:
        vec = None if r["embedding"] is None else np.frombuffer(r["embedding"], dtype=np.float32)
        prior = store.get(item["id"]) if item.get("changed") else None
        if prior is not None and prior.uri == item["uri"]:  # new pixels: the stored label and its provenance stay
            pending.append((attrs.evolve(prior, embedding=vec), r["features"]))
            continue
        sample = Sample(id=item["id"], uri=item["uri"], label=item["label"], provenance=Provenance.IMPORT, embedding=vec, meta=dict(item.get("meta") or {}))
        pending.append((sample, r["features"]))
    with store.transaction():
        store.put([s for s, _ in pending], reason=reason, on_conflict="skip")
        if kind is not None:
            for sample, blob in pending:
                if blob is not None:
                    cache_features(sample, store, kind, LocalFeatures.from_bytes(blob))
    return len(pending)


_STORES: dict[str, Any] = {}


def _open_store(uri: str) -> Any:
    """The worker process's connection to ``uri``, opened once and kept."""
    st = _STORES.get(uri)
    if st is None:
        from consist.stores.uri import open_store

        st = _STORES[uri] = open_store(uri, create=False)
    return st


# ---------------------------------------------------------------- verification


def checker_options(cfg: AuditConfig) -> dict[str, dict[str, Any]]:
    """Options the audit gives every checker: verify at most the audit's ``k``
    neighbours with at least ``min_inliers`` (a checker that builds a store-wide graph
    builds it over the same ``k``: N * k must stay N * k). Checkers that do not know an
    option ignore it (options for checkers are validated by the checker itself)."""
    from consist import plugins

    shared = {"k": cfg.k, "min_inliers": cfg.min_inliers}
    out: dict[str, dict[str, Any]] = {}
    for name, checker in plugins.checkers().items():
        validate = getattr(checker, "validate_options", None)
        accepted = {}
        for key, value in shared.items():
            try:
                if validate is not None:
                    validate({key: value})
                accepted[key] = value
            except (TypeError, ValueError):
                continue
        if accepted:
            out[name] = accepted
    return out


class _Worker:
    """What a worker process keeps between tasks: store, engine, retriever."""

    def __init__(self, store_uri: str, cfg: AuditConfig, checkers: Sequence[str] | None, labels_file: str) -> None:
        from consist import plugins
        from consist.controller import ControllerConfig
        from consist.engine import Engine, EngineConfig
        from consist.stores.uri import open_store

        self.cfg = cfg
        self.features = feature_spec(cfg) if local_features_available(cfg) else None
        self.store = open_store(store_uri, create=False)
        self.labels: dict[str, str] = json.loads(Path(labels_file).read_text(encoding="utf-8"))
        # every checker runs: the audit wants all the evidence, not an early stop
        engine_cfg = EngineConfig(controller=ControllerConfig(stop_confidence=1.01), k=cfg.k, adapt=False, checker_options=checker_options(cfg), features=self.features)
        self.engine = Engine(list(checkers) if checkers else None, store=self.store, config=engine_cfg)
        self.retriever = plugins.retrievers()[retriever_name(cfg)]

    def neighbours(self, sample: Any) -> list[Neighbour]:
        from consist.records import Query

        k = self.cfg.k
        # the store may hold other samples (an earlier audit, a shared --store): only
        # the dataset's own images are neighbours, so ask for a few more
        depth = 2 * k + 8
        query = Query(id=sample.id, uri=sample.uri, embedding=sample.embedding)
        found = self.retriever.retrieve(query, self.store, depth, exclude=(sample.id,), features=self.features)
        out: list[Neighbour] = []
        for n in found:
            if n.sample.id not in self.labels or n.sample.id == sample.id:
                continue
            s = attrs.evolve(n.sample, label=self.labels[n.sample.id])  # the dataset's label, not the store's
            out.append(attrs.evolve(n, sample=s, similarity=max(0.0, float(n.similarity)), rank=len(out)))
            if len(out) == k:
                break
        return out


def retriever_name(cfg: AuditConfig) -> str:
    """``cfg.retriever``, or for ``"auto"`` the first registered of ``asmk`` (instance
    retrieval over the local features) and ``vector`` (the embedding index)."""
    from consist import plugins

    found = plugins.retrievers()
    if cfg.retriever != "auto":
        if cfg.retriever not in found:
            from consist.errors import ConsistError

            raise ConsistError(f"unknown retriever {cfg.retriever!r} (registered: {', '.join(sorted(found))})")
        return cfg.retriever
    return "asmk" if "asmk" in found and local_features_available(cfg) else "vector"


def _worker(task: Mapping[str, Any]) -> _Worker:
    key = (task["store"], tuple(sorted(task["config"].items())), tuple(task.get("checkers") or ()), task["labels_file"])
    w = _STATE.get(key)
    if w is None:
        for old in _STATE.values():
            old.store.close()
        _STATE.clear()
        w = _STATE[key] = _Worker(task["store"], _config(task["config"]), task.get("checkers"), task["labels_file"])
    return w


def verify_chunk(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Leave-one-out verification of each sample of the task (a JSON-able record
    each: neighbours, the engine's full decision, the pairs tried as edges)."""
    from consist.records import Query, to_dict

    w = _worker(task)
    out = []
    samples = w.store.get_many([sid for sid, *_ in task["items"]])
    for (sid, uri, label, meta), sample in zip(task["items"], samples):
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"id": sid, "uri": uri, "label": label, "meta": meta, "error": None}
        if sample is None:
            rec["error"] = f"{uri}: not in the store (its features could not be computed)"
            out.append(rec)
            continue
        sample = attrs.evolve(sample, label=label)
        try:
            neighbours = w.neighbours(sample)
        except Exception as exc:  # unreadable cached features and the like: this sample only
            rec["error"] = f"{uri}: retrieval failed ({type(exc).__name__}: {exc})"
            out.append(rec)
            continue
        query = Query(id=sid, uri=sample.uri)
        prediction = build_prediction(query, label, neighbours)
        decision = w.engine.verify(prediction, neighbours, adapt=False)
        labels = {n.sample.id: n.sample.label for n in neighbours}
        rec["neighbours"] = [{"id": n.sample.id, "label": n.sample.label, "similarity": round(n.similarity, 6), "rank": n.rank} for n in neighbours]
        rec["decision"] = to_dict(decision)
        rec["edges"] = edges_from_votes(sid, decision.votes, labels)
        rec["elapsed_s"] = round(time.perf_counter() - t0, 4)
        out.append(rec)
    kind = task.get("record_kind")
    if kind:
        # a cluster: each record goes to the shared store, keyed by sample id and run
        # (a rerun replaces it with the same bytes); the parent journals the ids only
        with w.store.transaction():
            for rec in out:
                w.store.put_artefact(rec["id"], str(kind), _pack_record(rec))
        return [{"id": rec["id"], STORED_KEY: kind} for rec in out]
    return out


def record_kind(run_key: str) -> str:
    """The artefact kind of one run's verification records (``audit/record/<run>``)."""
    return RECORD_KIND_PREFIX + run_key


def _pack_record(rec: Mapping[str, Any]) -> bytes:
    # the journal's own encoding (a record read back equals the local journal's), compressed
    return zlib.compress(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode(), 6)


def read_stored_record(store: Any, sample_id: str, kind: str) -> dict[str, Any] | None:
    """The verification record a worker stored for ``sample_id`` in this run, or ``None``."""
    blob = store.get_artefact(sample_id, kind)
    if blob is None:
        return None
    rec: dict[str, Any] = json.loads(zlib.decompress(blob))
    return rec


def resolve_stored(records: Iterable[Mapping[str, Any]], store_uri: str) -> Iterator[dict[str, Any]]:
    """The journal's records with each stored one (a line ``{"id", "in_store": kind}``
    written for a cluster run) replaced by the record a worker put in the store; the
    store is opened only when a stored record comes. A record missing from the store
    becomes an error record naming it (``--resume`` re-verifies those: see
    :func:`consist.audit.run`)."""
    store = None
    try:
        for rec in records:
            kind = rec.get(STORED_KEY)
            if not kind:
                yield dict(rec)
                continue
            if store is None:
                from consist.stores.uri import open_store

                store = open_store(store_uri, create=False)
            found = read_stored_record(store, str(rec["id"]), str(kind))
            yield found if found is not None else {"id": rec["id"], "error": f"{rec['id']}: its verification record is missing from the store {store_uri}"}
    finally:
        if store is not None:
            store.close()


def edges_from_votes(query_id: str, votes: Sequence[Vote], labels: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """The pairs the checkers tried, from the pair evidence of their votes
    (``evidence["pairs"]``, :class:`consist.contracts.PairEvidence`). One edge per
    neighbour: verified wins, then more inliers."""
    best: dict[str, dict[str, Any]] = {}
    for checker, pair in pairs_in_votes(votes):
        b = pair.neighbour
        if b == query_id:
            continue
        polygon = None if pair.neighbour_polygon is None else [[round(x, 1), round(y, 1)] for x, y in pair.neighbour_polygon]
        e = {
            "a": query_id,
            "b": b,
            "b_label": labels.get(b),
            "inliers": pair.inliers,
            "verified": pair.verified,
            "checker": checker,
            "score": round(pair.score, 4),
            "polygon": polygon,
            "ratio": pair.inlier_ratio,
            "coverage": pair.coverage,
        }
        old = best.get(b)
        if old is None or (e["verified"], e["inliers"]) > (old["verified"], old["inliers"]):
            best[b] = e
    return sorted(best.values(), key=lambda e: (not e["verified"], -e["inliers"], e["b"]))
