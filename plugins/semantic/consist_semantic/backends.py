"""LMM back-ends: the request/answer records, the protocol, and the registry.

A back-end answers a :class:`ChatRequest` (a prompt, images, decoding limits) with
a :class:`ChatAnswer` (the text and, when the model exposes them, the top
log-probabilities of the first answer token). Back-ends are registered by name
through the plugin's own hook ``consist_semantic_register_backends`` (see
``docs/semantic.md``); built in: ``openai`` (any OpenAI-compatible chat-completions
server: vLLM, llama.cpp server, Ollama, hosted APIs) and ``transformers`` (a local
vision-language model, ``consist-semantic[local]``).

Configuration comes from arguments or the environment; the API key is never
logged or shown (``repr`` and errors redact it):

==========================  ===================================================
``CONSIST_LMM_BACKEND``     back-end name (default ``openai`` when a base URL is set,
                            ``transformers`` when a model path is set)
``CONSIST_LMM_BASE_URL``    e.g. ``http://127.0.0.1:8000/v1``
``CONSIST_LMM_MODEL``       model name the server knows (or a local model path)
``CONSIST_LMM_API_KEY``     key (``OPENAI_API_KEY`` is read when this is unset)
``CONSIST_LMM_MODEL_PATH``  local model folder for ``transformers``
``CONSIST_LMM_TIMEOUT``     seconds per request (60)
==========================  ===================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from consist.errors import ConsistError
from consist_semantic.images import EncodedImage

__all__ = [
    "ChatRequest",
    "ChatAnswer",
    "LMMBackend",
    "LMMError",
    "LMMUnavailable",
    "backend_factories",
    "backend_from_env",
    "configured_in_env",
    "ENV_PREFIX",
]

ENV_PREFIX = "CONSIST_LMM_"


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
        return {"text": self.text, "top": None if self.top_logprobs is None else [list(t) for t in self.top_logprobs], "chosen": None if self.chosen is None else list(self.chosen), "model": self.model}

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


def _env(name: str, environ: Mapping[str, str]) -> str | None:
    v = environ.get(ENV_PREFIX + name)
    return v if v not in (None, "") else None


def configured_in_env(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment names a back-end (base URL, model path or backend)."""
    env = os.environ if environ is None else environ
    return any(_env(k, env) for k in ("BASE_URL", "MODEL_PATH", "BACKEND"))


def backend_factories(pm: Any = None) -> dict[str, Callable[..., LMMBackend]]:
    """Name -> factory(**options) of every registered back-end."""
    from consist import plugins

    pm = pm or plugins.get_plugin_manager()
    found: dict[str, Callable[..., LMMBackend]] = {}
    hook = getattr(pm.hook, "consist_semantic_register_backends", None)
    if hook is None:  # the semantic plugin is not loaded (CONSIST_PLUGINS): built-ins only
        from consist_semantic.plugin import consist_semantic_register_backends

        consist_semantic_register_backends(register=lambda name, factory: found.setdefault(name, factory))
        return found

    def register(name: str, factory: Callable[..., LMMBackend]) -> None:
        if name in found:
            raise LMMError(f"two LMM back-ends are registered as {name!r}")
        found[name] = factory

    for impl in reversed(hook.get_hookimpls()):
        impl.function(register=register)
    return found


def backend_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> LMMBackend:
    """Build the back-end the environment (and ``overrides``) describe.

    Raises :class:`LMMUnavailable` with a one-line hint when nothing is configured.
    """
    env = os.environ if environ is None else environ
    base_url = overrides.pop("base_url", None) or _env("BASE_URL", env)
    model_path = overrides.pop("model_path", None) or _env("MODEL_PATH", env)
    name = overrides.pop("backend", None) or _env("BACKEND", env) or ("transformers" if model_path and not base_url else "openai" if base_url else None)
    if name is None:
        raise LMMUnavailable(f"no LMM configured: set {ENV_PREFIX}BASE_URL (and {ENV_PREFIX}MODEL) for an OpenAI-compatible server, or {ENV_PREFIX}MODEL_PATH for a local model (see docs/semantic.md)")
    factories = backend_factories()
    if name not in factories:
        raise LMMUnavailable(f"unknown LMM back-end {name!r} (registered: {', '.join(sorted(factories)) or 'none'})")
    options: dict[str, Any] = {}
    if name == "openai" or base_url:
        options["base_url"] = base_url
    model = overrides.pop("model", None) or _env("MODEL", env)
    if model:
        options["model"] = model
    if model_path:
        options["model_path"] = model_path
    key = overrides.pop("api_key", None) or _env("API_KEY", env) or env.get("OPENAI_API_KEY") or None
    if key and name == "openai":
        options["api_key"] = key
    timeout = overrides.pop("timeout", None) or _env("TIMEOUT", env)
    if timeout is not None:
        options["timeout"] = float(timeout)
    options.update(overrides)
    try:
        return factories[name](**options)
    except LMMError:
        raise
    except (TypeError, ValueError) as exc:
        from consist_semantic.redact import redact

        raise LMMUnavailable(redact(f"LMM back-end {name!r}: bad configuration: {exc}", [key])) from None
