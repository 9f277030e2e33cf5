"""The audit's units of work, run by an executor (here, in worker processes, or on
Dask workers): feature extraction, and leave-one-out verification of a chunk of
samples. Module-level functions of plain picklable arguments, so that any executor
can ship them.

Each worker process opens the store once (by URI) and keeps its engine and
retrieval index for the tasks that follow (:data:`_STATE`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from consist.audit.candidates import build_prediction
from consist.audit.config import AuditConfig

__all__ = ["extract_chunk", "verify_chunk", "edges_from_votes", "spatial_available", "make_extractor"]

_STATE: dict[tuple[Any, ...], Any] = {}


def spatial_available() -> bool:
    """Whether the spatial plugin (local features, ASMK, geometric checker) is installed."""
    try:
        import consist_spatial.features  # noqa: F401
    except ImportError:
        return False
    return True


def make_extractor(cfg: AuditConfig) -> Any:
    from consist_spatial.features import SiftExtractor

    return SiftExtractor(max_side=cfg.max_side, max_keypoints=cfg.max_keypoints)


def _config(data: Mapping[str, Any]) -> AuditConfig:
    return AuditConfig(**dict(data))


# ------------------------------------------------------------------ extraction


def extract_chunk(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Decode, extract local features and embed each ``(id, uri)`` of the task.

    Returns one dict per item: ``id``, ``features`` (bytes, or None without the
    spatial plugin), ``embedding`` (float32 bytes), ``error`` (one line naming the
    file) — an unreadable image is reported, never raised.
    """
    from consist import plugins
    from consist.errors import ImageError
    from consist.images import load_image

    cfg = _config(task["config"])
    ext = make_extractor(cfg) if task.get("spatial", True) and spatial_available() else None
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
    return out


# ---------------------------------------------------------------- verification


def checker_options(cfg: AuditConfig) -> dict[str, dict[str, Any]]:
    """Options the audit gives the checkers: the spatial checker verifies the top
    ``k``, and the topological ``community`` checker builds its matching graph over
    the same ``k`` neighbours with the same features (its own default, the paper's
    200, would verify 20x more pairs than the audit itself: N * k must stay N * k)."""
    from consist import plugins

    spatial = {"max_side": cfg.max_side, "max_keypoints": cfg.max_keypoints, "min_inliers": cfg.min_inliers}
    options: dict[str, dict[str, Any]] = {"spatial": {"k": cfg.k, "cache_queries": True, **spatial}}
    if "community" in plugins.checkers():
        options["community"] = {"k": cfg.k, "spatial": spatial}
    return options


class _Worker:
    """What a worker process keeps between tasks: store, engine, retrieval."""

    def __init__(self, store_uri: str, cfg: AuditConfig, checkers: Sequence[str] | None, labels_file: str) -> None:
        from consist.controller import ControllerConfig
        from consist.engine import Engine, EngineConfig
        from consist.stores.base import open_store

        self.cfg = cfg
        self.store = open_store(store_uri, create=False)
        self.labels: dict[str, str] = json.loads(Path(labels_file).read_text(encoding="utf-8"))
        options = checker_options(cfg)
        # every checker runs: the audit wants all the evidence, not an early stop
        engine_cfg = EngineConfig(controller=ControllerConfig(stop_confidence=1.01), k=cfg.k, adapt=False, checker_options=options)
        self.engine = Engine(list(checkers) if checkers else None, store=self.store, config=engine_cfg)
        self.index: Any = None
        self.ext: Any = None
        if spatial_available():
            from consist_spatial.asmk_index import AsmkIndex

            self.ext = make_extractor(cfg)
            self.index = AsmkIndex.load(self.store, self.ext)

    def neighbours(self, sample: Any) -> list[Any]:
        from consist.records import Neighbour

        k = self.cfg.k
        # the store may hold other samples (an earlier audit, a shared --store): only
        # the dataset's own images are neighbours, so ask for a few more
        depth = 2 * k + 8
        if self.index is not None:
            from consist_spatial.features import features_for

            feats = features_for(sample, self.store, self.ext)
            hits = self.index.search(feats.descriptors, depth, exclude=(sample.id,)) if len(feats) else []
        elif sample.embedding is not None:
            hits = [(s.id, sim) for s, sim in self.store.search(sample.embedding, depth, exclude=(sample.id,))]
        else:
            hits = []
        hits = [(sid, sc) for sid, sc in hits if sid in self.labels][:k]
        found = self.store.get_many([sid for sid, _ in hits]) if hits else []
        out = []
        for (_sid, score), s in zip(hits, found):
            if s is None or s.id == sample.id:
                continue
            s = attrs.evolve(s, label=self.labels[s.id])  # the dataset's label, not the store's
            out.append(Neighbour(sample=s, similarity=max(0.0, float(score)), rank=len(out), source="asmk" if self.index is not None else "vector"))
        return out


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
        prediction = build_prediction(query, label, neighbours, given_prior=w.cfg.given_prior, other_prior=w.cfg.other_prior)
        decision = w.engine.verify(prediction, neighbours, adapt=False)
        labels = {n.sample.id: n.sample.label for n in neighbours}
        rec["neighbours"] = [{"id": n.sample.id, "label": n.sample.label, "similarity": round(n.similarity, 6), "rank": n.rank} for n in neighbours]
        rec["decision"] = to_dict(decision)
        rec["edges"] = edges_from_votes(sid, decision.votes, labels)
        rec["elapsed_s"] = round(time.perf_counter() - t0, 4)
        out.append(rec)
    return out


def edges_from_votes(query_id: str, votes: Sequence[Any], labels: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """Pairs a checker tried, from its votes' evidence (the spatial checker's
    format: ``neighbour``/``inliers`` for its best verified neighbour,
    ``localisations`` for the other verified ones, ``rejected`` for the failures).
    One edge per neighbour: verified wins, then more inliers."""
    best: dict[str, dict[str, Any]] = {}

    def put(b: str, inliers: Any, verified: bool, checker: str, **extra: Any) -> None:
        if not isinstance(b, str) or b == query_id:
            return
        e = {"a": query_id, "b": b, "b_label": labels.get(b), "inliers": int(inliers or 0), "verified": bool(verified), "checker": checker, **extra}
        old = best.get(b)
        if old is None or (e["verified"], e["inliers"]) > (old["verified"], old["inliers"]):
            best[b] = e

    for v in votes:
        ev = v.evidence or {}
        if v.neighbour_id is not None and "inliers" in ev:
            put(v.neighbour_id, ev.get("inliers"), bool(ev.get("verified", v.support > 0.5)), v.checker, ratio=ev.get("inlier_ratio"), coverage=ev.get("coverage"), polygon=ev.get("polygon"))
        for loc in ev.get("localisations") or ():
            if isinstance(loc, dict) and "inliers" in loc:
                put(loc.get("neighbour"), loc.get("inliers"), v.support > 0.5, v.checker, polygon=loc.get("polygon"))
        for rej in ev.get("rejected") or ():
            if isinstance(rej, dict):
                put(rej.get("neighbour"), rej.get("inliers"), False, v.checker)
    return sorted(best.values(), key=lambda e: (not e["verified"], -e["inliers"], e["b"]))
