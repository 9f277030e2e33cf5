"""Pixel retrieval for the review app's Search page: the recognizer side of consist.

The same engine as ``consist query``, reached through the registries only (the core
imports no plugin): the audit's retriever (ASMK over its local features when
consist-spatial is installed, else the store's embeddings) ranks the store, and the
registered ``spatial`` re-ranker verifies the top ``depth`` with RANSAC and localises
the query (or the drawn region) in each, as :class:`~consist.contracts.PairEvidence`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import structlog

from consist.contracts.evidence import MAX_DRAWN_MATCHES, PairEvidence
from consist.contracts.store import Store
from consist.errors import ConsistError
from consist.records import Query, Region

__all__ = ["DEFAULT_DEPTH", "DEFAULT_TOP", "RERANKER", "search"]

log = structlog.get_logger("consist.review")

#: Results shown.
DEFAULT_TOP = 12
#: Retrieved neighbours geometrically verified (``consist query --depth``'s default).
DEFAULT_DEPTH = 20
#: The embedder of the audit's vector retrieval (consist audit embeds with it).
EMBEDDER = "tiny"
#: The registered re-ranker that verifies and localises.
RERANKER = "spatial"


def _audit_config(summary: dict[str, Any]) -> Any:
    from consist.audit.config import AuditConfig
    from consist.records import from_dict

    try:
        return from_dict(AuditConfig, dict(summary.get("config") or {}))
    except Exception:  # an older or hand-made summary: the defaults
        return AuditConfig()


def search(
    store: Store, image: np.ndarray, *, summary: dict[str, Any], region: Region | None = None, top: int = DEFAULT_TOP, depth: int = DEFAULT_DEPTH, exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Rank the store's samples for ``image`` (``H x W x 3`` uint8), restricted to
    ``region`` when given; each result with its verified pair evidence (matches, the
    query localised in the result) when the re-ranker verified it."""
    import attrs

    from consist import plugins
    from consist.audit.work import feature_spec, retriever_name
    from consist.images import image_id

    cfg = _audit_config(summary)
    spec = feature_spec(cfg)
    name = retriever_name(cfg)
    retriever = plugins.retrievers().get(name)
    if retriever is None:
        raise ConsistError(f"no retriever {name!r} is registered")
    query = Query(id="search:" + image_id(image), image=image, region=region)
    if name == "vector":
        emb = plugins.embedders().get(EMBEDDER)
        if emb is not None:
            query = attrs.evolve(query, embedding=emb.embed(image))
    k = max(top, depth)
    neighbours = retriever.retrieve(query, store, k, exclude=exclude, features=spec) if len(store) else []
    reranker = plugins.rerankers().get(RERANKER)
    details: dict[str, Any] = {"retriever": name, "reranker": reranker.name if reranker else None, "features": cfg.features}
    if reranker is not None and neighbours:
        ranked = list(reranker.rerank(query, neighbours, store, k=depth, features=spec).neighbours)
    else:
        ranked = list(neighbours)
    results: list[dict[str, Any]] = []
    for n in ranked[:top]:
        pair = (n.evidence or {}).get("pair") if hasattr(n, "evidence") else None
        ev = None
        if isinstance(pair, dict):
            ev = PairEvidence.from_dict(pair).to_dict(max_points=MAX_DRAWN_MATCHES)
        elif isinstance(pair, PairEvidence):
            ev = pair.to_dict(max_points=MAX_DRAWN_MATCHES)
        results.append({"id": n.sample.id, "label": n.sample.label, "rank": len(results), "similarity": round(float(n.similarity), 5), "pair": ev})
    return {"query": {"width": int(image.shape[1]), "height": int(image.shape[0]), "region": None if region is None else _region_json(region)}, "results": results, "details": details}


def _region_json(region: Region) -> dict[str, Any]:
    return {"box": list(region.bounds), "polygon": None if region.polygon is None else [list(p) for p in region.polygon]}
