"""Making any recognizer self-correcting: :func:`wrap`, and a built-in kNN recognizer.

A recognizer is any callable ``recognizer(image) -> output`` where output is one of:

* a list of ``(label, score)`` pairs or of :class:`Candidate`, best first;
* a dict ``{label: score}``;
* either of those together with an embedding: ``(candidates, embedding)``.

Scores should be probabilities in [0, 1] (softmax outputs); pass
``scores="logits"`` to have raw scores soft-maxed, or ``scores="similarity"`` to
map cosine similarities from [-1, 1] to [0, 1].
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from consist import plugins as _plugins
from consist.adapt import correct
from consist.engine import Engine, EngineConfig
from consist.errors import ConsistError
from consist.images import image_id, load_image
from consist.records import Candidate, Decision, HistoryEntry, Prediction, Query, Region
from consist.stores.uri import open_store

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = ["KNNRecognizer", "SelfCorrectingRecognizer", "to_candidates", "wrap"]


def to_candidates(output: Any, *, source: str = "recognizer", scores: str = "probability") -> tuple[list[Candidate], np.ndarray | None]:
    """Normalise a recognizer's output into candidates (best first) and an embedding."""
    embedding = None
    if isinstance(output, tuple) and len(output) == 2 and not isinstance(output[0], str):
        output, embedding = output
        embedding = None if embedding is None else np.asarray(embedding, dtype=np.float32).reshape(-1)
    if isinstance(output, Mapping):
        pairs = list(output.items())
    else:
        pairs = []
        for item in output:
            if isinstance(item, Candidate):
                pairs.append((item.label, item.score))
            elif isinstance(item, str):
                pairs.append((item, 1.0))
            else:
                label, score = item
                pairs.append((str(label), float(score)))
    if not pairs:
        raise ConsistError(f"{source} returned no candidates")
    raw = np.asarray([p[1] for p in pairs], dtype=np.float64)
    if scores == "logits":
        e = np.exp(raw - raw.max())
        probs = e / e.sum()
    elif scores == "similarity":
        probs = np.clip((raw + 1.0) / 2.0, 0.0, 1.0)
    elif scores == "probability":
        if np.any(raw < 0) or np.any(raw > 1) or np.any(~np.isfinite(raw)):
            raise ConsistError(f"{source} returned scores outside [0, 1] ({raw.min():.3g}..{raw.max():.3g}); pass scores='logits' or 'similarity'")
        probs = raw
    else:
        raise ValueError(f"scores must be 'probability', 'logits' or 'similarity', got {scores!r}")
    order = np.argsort(-probs, kind="stable")
    cands = [Candidate(str(pairs[i][0]), float(probs[i]), source) for i in order]
    return cands, embedding


class KNNRecognizer:
    """Recognition by retrieval: candidates are the labels of the query's nearest
    stored neighbours, scored by their share of the similarity mass.

    ``k`` neighbours (10) are read; the scores are smoothed so that no label gets 1.0
    from a handful of neighbours (``alpha``, 1.0).
    """

    def __init__(self, store: str | Store, embedder: Any = "tiny", *, k: int = 10, alpha: float = 1.0, name: str = "knn-recognizer") -> None:
        self.store = open_store(store)
        self.embedder = _resolve_embedder(embedder)
        self.k = k
        self.alpha = alpha
        self.name = name

    def __call__(self, image: Any) -> tuple[list[tuple[str, float]], np.ndarray]:
        emb = self.embedder.embed(image)
        hits = self.store.search(emb, self.k)
        mass: dict[str, float] = defaultdict(float)
        for sample, sim in hits:
            if sample.label is not None:
                mass[sample.label] += max(sim, 0.0)
        total = sum(mass.values())
        if not mass:
            raise ConsistError(f"{self.store.uri}: no labelled samples with embeddings to recognise from")
        n = len(mass)
        ranked = sorted(mass.items(), key=lambda kv: -kv[1])
        return [(label, (m + self.alpha / (n + 1)) / (total + self.alpha)) for label, m in ranked], emb


def _resolve_embedder(embedder: Any) -> Any:
    if embedder is None or not isinstance(embedder, str):
        return embedder
    found = _plugins.embedders()
    if embedder not in found:
        raise ConsistError(f"unknown embedder {embedder!r} (registered: {', '.join(sorted(found)) or 'none'})")
    return found[embedder]


class SelfCorrectingRecognizer:
    """A recognizer whose predictions are verified, corrected and fed back.

    Build it with :func:`wrap`. ``predict(image)`` returns a :class:`Decision`;
    ``correct(...)`` records a person's correction with the highest trust.
    """

    def __init__(self, recognizer: Callable[[Any], Any], engine: Engine, *, embedder: Any = None, k: int = 10, name: str | None = None, scores: str = "probability") -> None:
        self.recognizer = recognizer
        self.engine = engine
        self.embedder = embedder
        self.k = k
        self.name = name or getattr(recognizer, "name", None) or getattr(recognizer, "__name__", None) or type(recognizer).__name__
        self.scores = scores

    @property
    def store(self) -> Store | None:
        return self.engine.store

    def prediction(self, image: Any, *, id: str | None = None, region: Region | None = None, meta: Mapping[str, Any] | None = None) -> Prediction:
        """Run the wrapped recognizer only (no verification)."""
        uri = None
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if isinstance(image, str):
            uri = image
        pixels = load_image(image, store=self.store)
        output = self.recognizer(uri if uri is not None and getattr(self.recognizer, "wants_path", False) else pixels)
        cands, emb = to_candidates(output, source=self.name, scores=self.scores)
        if emb is None and self.embedder is not None:
            emb = self.embedder.embed(pixels)
        qid = id or image_id(pixels)
        query = Query(id=qid, uri=uri, image=pixels, region=region, embedding=emb, meta=dict(meta or {}))
        return Prediction(query=query, candidates=tuple(cands), recognizer=self.name)

    def predict(self, image: Any, *, id: str | None = None, region: Region | None = None, adapt: bool | None = None, meta: Mapping[str, Any] | None = None) -> Decision:
        """Recognise, verify against the store's neighbours, correct, adapt."""
        prediction = self.prediction(image, id=id, region=region, meta=meta)
        needs_embedding = getattr(self.engine.retriever, "name", None) == "vector"
        neighbours = [] if needs_embedding and prediction.query.embedding is None else self.engine.neighbours(prediction, self.k)
        return self.engine.verify(prediction, neighbours, adapt=adapt)

    def predict_many(self, images: Sequence[Any], *, progress: bool = False, adapt: bool | None = None) -> list[Decision]:
        if progress:
            from tqdm.auto import tqdm

            images = tqdm(images, unit="image", desc="predicting")
        return [self.predict(img, adapt=adapt) for img in images]

    def correct(self, sample_id: str, label: str | None = None, *, region: Region | None = None, uri: str | None = None, reason: str = "user feedback") -> list[HistoryEntry]:
        """Record a person's correction (label and/or region) with ``user`` provenance."""
        if self.store is None:
            raise ConsistError("this recognizer has no store to record corrections in")
        return correct(self.store, sample_id, label, region=region, uri=uri, reason=reason)


def wrap(
    recognizer: Callable[[Any], Any] | None,
    store: str | Store = "memory://",
    *,
    embedder: Any = "tiny",
    checkers: Sequence[Any] | None = None,
    config: EngineConfig | None = None,
    k: int = 10,
    scores: str = "probability",
    name: str | None = None,
    retriever: str | Any = "vector",
) -> SelfCorrectingRecognizer:
    """Turn ``recognizer`` into a self-correcting recognizer over ``store``.

    Args:
        recognizer: callable image -> candidates (see module docs); ``None`` uses the
            built-in :class:`KNNRecognizer` over the store.
        store: a store or a store URI.
        embedder: used to embed queries when the recognizer returns no embedding
            (name of a registered embedder, an object with ``embed``, or ``None``).
        checkers: checker names/objects (``None``: all enabled by default).
        config: :class:`EngineConfig` (stopping rule, aggregation, adaptation).
        k: neighbours retrieved per query.
        retriever: name of a registered retriever (``"vector"``: the store's
            embeddings; ``"asmk"`` with consist-spatial: local features) or an object.
    """
    store_obj = open_store(store)
    emb = _resolve_embedder(embedder)
    if recognizer is None:
        recognizer = KNNRecognizer(store_obj, emb, k=k)
    engine = Engine(checkers, store=store_obj, config=config or EngineConfig(k=k), retriever=retriever)
    return SelfCorrectingRecognizer(recognizer, engine, embedder=emb, k=k, name=name, scores=scores)
