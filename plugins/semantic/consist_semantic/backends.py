"""LMM back-ends: which exist, and the one the environment configures.

A back-end answers a :class:`ChatRequest` with a :class:`ChatAnswer` (the records,
the :class:`LMMBackend` protocol and the errors live in :mod:`consist_semantic.chat`
and are re-exported here). Back-ends are registered by name through the plugin's
own hook ``consist_semantic_register_backends`` (see ``docs/semantic.md``); built in
(:mod:`consist_semantic.builtin_backends`): ``openai`` (any OpenAI-compatible
chat-completions server: vLLM, llama.cpp server, Ollama, hosted APIs) and
``transformers`` (a local vision-language model, ``consist-semantic[local]``).

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

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from consist_semantic.builtin_backends import register_builtin_backends
from consist_semantic.chat import ChatAnswer, ChatRequest, LMMBackend, LMMError, LMMUnavailable

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "ENV_PREFIX",
    "ChatAnswer",
    "ChatRequest",
    "LMMBackend",
    "LMMError",
    "LMMUnavailable",
    "backend_factories",
    "backend_from_env",
    "configured_in_env",
]

ENV_PREFIX = "CONSIST_LMM_"


def _env(name: str, environ: Mapping[str, str]) -> str | None:
    v = environ.get(ENV_PREFIX + name)
    return v if v not in (None, "") else None


def configured_in_env(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment names a back-end (base URL, model path or backend)."""
    env = os.environ if environ is None else environ
    return any(_env(k, env) for k in ("BASE_URL", "MODEL_PATH", "BACKEND"))


def backend_factories(pm: pluggy.PluginManager | None = None) -> dict[str, Callable[..., LMMBackend]]:
    """Name -> factory(**options) of every registered back-end."""
    from consist import plugins

    pm = pm or plugins.get_plugin_manager()
    found: dict[str, Callable[..., LMMBackend]] = {}
    hook = getattr(pm.hook, "consist_semantic_register_backends", None)
    if hook is None:  # the semantic plugin is not loaded (CONSIST_PLUGINS): built-ins only

        def keep_first(name: str, factory: Callable[..., LMMBackend]) -> None:
            found.setdefault(name, factory)

        register_builtin_backends(keep_first)
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
        try:
            seconds = float(timeout)
        except (TypeError, ValueError):
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):  # abc, nan, inf, 0, -1: refused by name
            raise LMMUnavailable(f"{ENV_PREFIX}TIMEOUT must be a positive, finite number of seconds, got {str(timeout)[:40]!r}")
        options["timeout"] = seconds
    options.update(overrides)
    try:
        return factories[name](**options)
    except LMMError:
        raise
    except (TypeError, ValueError) as exc:
        from consist_semantic.redact import redact

        raise LMMUnavailable(redact(f"LMM back-end {name!r}: bad configuration: {exc}", [key])) from None
