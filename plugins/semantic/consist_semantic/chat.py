"""What a model is asked and answers: the request and answer records, the back-end
protocol and its errors.

A back-end answers a :class:`ChatRequest` (a prompt, images, decoding limits) with
a :class:`ChatAnswer` (the text and, when the model exposes them, the top
log-probabilities of the first answer token). Which back-ends exist and how one is
chosen from the environment: :mod:`consist_semantic.backends`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from consist.errors import ConsistError
from consist_semantic.images import EncodedImage

__all__ = ["ChatAnswer", "ChatRequest", "LMMBackend", "LMMError", "LMMUnavailable"]


class LMMError(ConsistError):
    """A model call failed (after its retries); the message never holds the key."""


class LMMUnavailable(LMMError):
    """No back-end is configured, or the configured one cannot be built."""


@attrs.frozen
class ChatRequest:
    """One question to a model.

    ``max_tokens=1``, ``temperature=0`` and ``top_logprobs=20`` are what a yes/no
    reflection needs (DESIGN.md 3.4); free-text uses (``consist ask``) raise
    ``max_tokens`` and set ``top_logprobs=0``. ``json_mode`` asks for a JSON object
    (servers that cannot are fine: the caller validates the text anyway).
    """

    prompt: str
    images: tuple[EncodedImage, ...] = ()
    system: str | None = None
    max_tokens: int = 1
    temperature: float = 0.0
    top_logprobs: int = 20
    json_mode: bool = False

    def cache_key(self) -> str:
        """Everything that changes the answer except the model (added by the cache)."""
        import hashlib
        import json

        body = json.dumps([self.prompt, self.system, self.max_tokens, self.temperature, self.top_logprobs, self.json_mode, [i.digest for i in self.images]])
        return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


@attrs.frozen
class ChatAnswer:
    """A model's answer: text; the first token's top alternatives as ``(token,
    logprob)`` and the chosen token (both ``None`` when the server gave none)."""

    text: str
    top_logprobs: tuple[tuple[str, float], ...] | None = None
    chosen: tuple[str, float] | None = None
    model: str = ""
    cached: bool = attrs.field(default=False, eq=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "top": None if self.top_logprobs is None else [list(t) for t in self.top_logprobs],
            "chosen": None if self.chosen is None else list(self.chosen),
            "model": self.model,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ChatAnswer:
        top = d.get("top")
        chosen = d.get("chosen")
        return cls(
            text=str(d.get("text", "")),
            top_logprobs=None if top is None else tuple((str(t), float(lp)) for t, lp in top),
            chosen=None if chosen is None else (str(chosen[0]), float(chosen[1])),
            model=str(d.get("model", "")),
            cached=True,
        )


@runtime_checkable
class LMMBackend(Protocol):
    """What consist needs from a model: ``name``, ``model`` (identifies the weights:
    part of the cache key) and ``chat(request) -> ChatAnswer`` (thread-safe; raises
    :class:`LMMError`)."""

    name: str
    model: str

    def chat(self, request: ChatRequest) -> ChatAnswer: ...
