"""The semantic plugin's own hook: more LMM back-ends from other plugins.

Added to consist's plugin manager through ``consist_addhookspecs``; documented in
``docs/semantic.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import consist


@consist.hookspec
def consist_semantic_register_backends(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register LMM back-ends: ``register(name, factory)``.

    ``factory(**options)`` returns an object with ``name``, ``model`` and
    ``chat(request: ChatRequest) -> ChatAnswer`` (thread-safe; raise
    ``consist_semantic.LMMError`` on failure). Options come from the environment
    (``CONSIST_LMM_*``) or the caller; the back-end is chosen with
    ``CONSIST_LMM_BACKEND=name``.
    """
