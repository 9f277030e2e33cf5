"""Grounded questions: answer about an image with what the store verifiably knows.

``consist ask IMAGE "question"``: the image's neighbours are retrieved and verified
by the cheaper checkers (spatial, topological, kNN: every enabled checker but the
LMM's own), the neighbours that verified evidence rests on are gathered with what
people said about them (labels, their aliases, notes, attributes, provenance), and
the LMM gets the image, that context and the question. The answer comes back with
the neighbours it relied on, so a person can check them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from consist.records import Decision, Neighbour, RunStatus

if TYPE_CHECKING:
    from consist import Store

__all__ = ["ContextItem", "GroundedAnswer", "ask", "context_prompt", "gather_context"]

#: Neighbours retrieved per question.
DEFAULT_K = 8
#: Tokens the answer may take.
ANSWER_TOKENS = 300
#: Seconds each checker may take to verify the neighbours of a question: a checker
#: that builds a store-wide graph (the community vote) could otherwise take minutes
#: on a large store (347 photos: its 300 s limit). Past it, the checker is
#: abandoned and the context says which checker did not finish.
DEFAULT_TIME_LIMIT = 10.0


@attrs.frozen
class ContextItem:
    """One neighbour the answer may rely on."""

    sample_id: str
    label: str | None
    provenance: str
    similarity: float
    verified_by: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    attributes: dict[str, Any] = attrs.field(factory=dict)

    def line(self) -> str:
        how = f"verified by {', '.join(self.verified_by)}" if self.verified_by else "retrieved, not verified"
        parts = [f"- {self.sample_id}: label {self.label!r} ({self.provenance} label; {how}; similarity {self.similarity:.2f})"]
        if self.aliases:
            parts.append(f"also called {', '.join(repr(a) for a in self.aliases)}")
        if self.notes:
            parts.append("notes: " + "; ".join(self.notes))
        if self.attributes:
            parts.append("attributes: " + ", ".join(f"{k}={v}" for k, v in self.attributes.items()))
        return "; ".join(parts)


@attrs.frozen
class GroundedAnswer:
    question: str
    answer: str | None
    label: str
    confidence: float
    context: tuple[ContextItem, ...]
    prompt: str
    model: str | None = None
    incomplete: tuple[str, ...] = ()  # "checker: why" of the checkers that failed or ran out of time

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "model": self.model,
            "relied_on": [attrs.asdict(c) for c in self.context],
            "prompt": self.prompt,
            "incomplete": list(self.incomplete),
        }


def gather_context(decision: Decision, neighbours: Sequence[Neighbour], store: Store, *, limit: int = DEFAULT_K) -> tuple[ContextItem, ...]:
    """The neighbours supporting votes rest on (verified), best first; when no checker
    verified any (only retrieval ran), the neighbours carrying the decided label."""
    verified: dict[str, list[str]] = {}
    for v in decision.votes:
        if v.support <= 0.5:
            continue
        ids: list[object] = [v.neighbour_id] if v.neighbour_id else []
        ids += [loc.get("neighbour") for loc in v.evidence.get("localisations", []) if isinstance(loc, dict)] if isinstance(v.evidence.get("localisations"), list) else []
        for sid in ids:
            if isinstance(sid, str):
                verified.setdefault(sid, [])
                if v.checker not in verified[sid]:
                    verified[sid].append(v.checker)
    for loc in decision.localisations:
        verified.setdefault(loc.sample_id, [])
        if loc.checker not in verified[loc.sample_id]:
            verified[loc.sample_id].append(loc.checker)
    chosen = [n for n in neighbours if n.sample.id in verified] or [n for n in neighbours if n.sample.label == decision.label]
    aliases = store.aliases() if hasattr(store, "aliases") else {}
    by_label: dict[str, list[str]] = {}
    for name, label in aliases.items():
        by_label.setdefault(label, []).append(name)
    items = []
    for n in chosen[:limit]:
        s = n.sample
        notes = tuple(str(x.get("text", x)) if isinstance(x, dict) else str(x) for x in s.meta.get("notes", []))
        items.append(
            ContextItem(s.id, s.label, s.provenance.value, round(n.similarity, 4), tuple(verified.get(s.id, ())), tuple(by_label.get(s.label or "", ())), notes, dict(s.meta.get("attributes", {})))
        )
    return tuple(items)


def context_prompt(question: str, decision: Decision, context: Sequence[ContextItem]) -> str:
    lines = "\n".join(c.line() for c in context) or "- (no matching image in the collection)"
    return (
        "Answer the question about this photo.\n"
        f"The user's collection holds these matching photos:\n{lines}\n"
        f"From them, the photo most likely shows {decision.label!r} (confidence {decision.confidence:.2f}).\n"
        "Use this context when it is relevant, prefer the user's own names, and say so when it does not answer the question.\n"
        f"Question: {question}"
    )


def ask(
    store: Store,
    image: Any,
    question: str,
    *,
    backend: Any = None,
    k: int = DEFAULT_K,
    embedder: str = "tiny",
    checkers: Sequence[str] | None = None,
    max_tokens: int = ANSWER_TOKENS,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
) -> GroundedAnswer:
    """Retrieve and verify the image's neighbours, then ask the LMM with that context.

    ``backend=None`` only gathers the context (``answer`` is ``None``): what would be
    sent, without a model.
    """
    from consist import ControllerConfig, EngineConfig, plugins
    from consist.recognizer import wrap
    from consist_semantic.chat import ChatRequest
    from consist_semantic.images import encode_image

    registered = plugins.checkers()
    names = list(checkers) if checkers is not None else [c.name for c in registered.values() if getattr(c, "enabled_by_default", True) and not getattr(c, "frontal_controlled", False)]
    timeouts: dict[str, float] = {}
    if time_limit is not None:
        if not (math.isfinite(time_limit) and time_limit > 0):
            raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
        for n in names:
            own = getattr(registered.get(n), "timeout", None)
            timeouts[n] = time_limit if own is None else min(float(own), time_limit)
    # every checker runs (no early stop): the point is the verified context, not a fast decision
    config = EngineConfig(k=k, adapt=False, controller=ControllerConfig(stop_confidence=math.inf), timeouts=timeouts)
    rec = wrap(None, store, embedder=embedder, checkers=names, k=k, config=config)
    prediction = rec.prediction(image)
    neighbours = rec.engine.neighbours(prediction, k)
    decision = rec.engine.verify(prediction, neighbours, adapt=False)
    context = gather_context(decision, neighbours, store, limit=k)
    prompt = context_prompt(question, decision, context)
    # reported in the answer (the CLI prints one "note:" line), not as a log warning
    incomplete = tuple(f"{r.checker}: {r.reason}" for r in decision.runs if r.status in (RunStatus.FAILED, RunStatus.TIMEOUT))
    if backend is None:
        return GroundedAnswer(question, None, decision.label, decision.confidence, context, prompt, incomplete=incomplete)
    pixels = prediction.query.image
    assert pixels is not None, "wrap(...).prediction(image) keeps the loaded pixels"
    request = ChatRequest(prompt=prompt, images=(encode_image(pixels),), max_tokens=max_tokens, temperature=0.0, top_logprobs=0)
    answer = backend.chat(request)
    return GroundedAnswer(question, answer.text.strip(), decision.label, decision.confidence, context, prompt, backend.model, incomplete)
