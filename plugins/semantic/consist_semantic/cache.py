"""A persistent cache of model answers, in the store's artefact table.

Key: the image digest (of the pixels sent), the request (prompt, decoding limits)
and the back-end's model. Asking the same question about the same picture with the
same model again costs a dictionary look-up (in memory) or one SQLite read (a new
process), never a model call: re-running an audit is free. Answers are derived data:
``store.delete_artefacts`` with a kind starting ``lmm-answer/`` drops them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from consist_semantic.chat import ChatAnswer, ChatRequest, LMMBackend

if TYPE_CHECKING:
    from consist import Store

__all__ = ["CACHE_VERSION", "MEMORY_ENTRIES", "AnswerCache"]

#: Bumped when the meaning of a cached answer changes.
CACHE_VERSION = 1
#: Answers kept in memory (an LRU in front of the store).
MEMORY_ENTRIES = 4096


class AnswerCache:
    """Answers by (image, request, model); in memory, and in ``store`` when given."""

    def __init__(self, store: Store | None = None, *, memory_entries: int = MEMORY_ENTRIES, persistent: bool = True) -> None:
        self.store = store
        self.persistent = persistent  # False: memory only, never the store
        self.memory_entries = memory_entries
        self._memory: OrderedDict[tuple[str, str], ChatAnswer] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(request: ChatRequest, backend: LMMBackend) -> tuple[str, str]:
        """(sample id, artefact kind) under which the answer is stored."""
        image = "+".join(i.digest for i in request.images) or "none"
        model = hashlib.blake2b(f"{getattr(backend, 'name', '')}|{backend.model}".encode(), digest_size=8).hexdigest()
        return f"lmm:{image}", f"lmm-answer/v{CACHE_VERSION}/{model}/{request.cache_key()}"

    def get(self, request: ChatRequest, backend: LMMBackend, store: Store | None = None) -> ChatAnswer | None:
        k = self.key(request, backend)
        with self._lock:
            hit = self._memory.get(k)
            if hit is not None:
                self._memory.move_to_end(k)
                self.hits += 1
                return hit
        store = (store if store is not None else self.store) if self.persistent else None
        if store is not None:
            blob = store.get_artefact(*k)
            if blob is not None:
                try:
                    answer = ChatAnswer.from_json(json.loads(blob))
                except (ValueError, TypeError, IndexError):
                    answer = None  # a damaged entry is a miss, and is overwritten
                if answer is not None:
                    self._remember(k, answer)
                    with self._lock:
                        self.hits += 1
                    return answer
        with self._lock:
            self.misses += 1
        return None

    def put(self, request: ChatRequest, backend: LMMBackend, answer: ChatAnswer, store: Store | None = None) -> None:
        k = self.key(request, backend)
        self._remember(k, answer)
        store = (store if store is not None else self.store) if self.persistent else None
        if store is not None and not getattr(store, "readonly", False):
            store.put_artefact(*k, json.dumps(answer.to_json()).encode())

    def _remember(self, k: tuple[str, str], answer: ChatAnswer) -> None:
        with self._lock:
            self._memory[k] = answer
            self._memory.move_to_end(k)
            while len(self._memory) > self.memory_entries:
                self._memory.popitem(last=False)

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


def ask_cached(backend: LMMBackend, request: ChatRequest, cache: AnswerCache | None, store: Store | None = None) -> ChatAnswer:
    """``backend.chat(request)`` through ``cache`` (when given)."""
    if cache is not None:
        hit = cache.get(request, backend, store)
        if hit is not None:
            return hit
    answer = backend.chat(request)
    if cache is not None:
        cache.put(request, backend, answer, store)
    return answer
