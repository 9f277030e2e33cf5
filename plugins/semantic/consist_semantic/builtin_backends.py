"""The two built-in LMM back-ends, as named factories.

``openai``: any OpenAI-compatible chat-completions server
(:class:`~consist_semantic.openai_backend.OpenAIChatBackend`); ``transformers``: a
local vision-language model
(:class:`~consist_semantic.local_backend.TransformersBackend`,
``consist-semantic[local]``). Both take the options
:func:`consist_semantic.backends.backend_from_env` builds and drop the ones meant
for the other. The plugin's entry module registers them through
``consist_semantic_register_backends``; :mod:`consist_semantic.backends` falls back
to them when the plugin is not loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consist_semantic.chat import LMMBackend

__all__ = ["BUILTIN_BACKENDS", "openai_backend", "register_builtin_backends", "transformers_backend"]


def openai_backend(**options: Any) -> LMMBackend:
    """An :class:`OpenAIChatBackend` (``base_url``, ``model``, ``api_key``, ...)."""
    from consist_semantic.openai_backend import OpenAIChatBackend

    options.pop("model_path", None)
    return OpenAIChatBackend(**options)


def transformers_backend(**options: Any) -> LMMBackend:
    """A :class:`TransformersBackend` on the folder ``model_path`` (or ``model``)."""
    from consist_semantic.local_backend import TransformersBackend

    options.pop("base_url", None)
    options.pop("api_key", None)
    path = options.pop("model_path", None) or options.pop("model", None)
    return TransformersBackend(path, **options)


#: Name -> factory of the back-ends this plugin ships.
BUILTIN_BACKENDS: dict[str, Callable[..., LMMBackend]] = {"openai": openai_backend, "transformers": transformers_backend}


def register_builtin_backends(register: Callable[[str, Callable[..., LMMBackend]], None]) -> None:
    """``register(name, factory)`` for each built-in back-end."""
    for name, factory in BUILTIN_BACKENDS.items():
        register(name, factory)
