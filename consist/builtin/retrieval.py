"""Built-in retrieval: vector search in the store, and the weight-free "tiny" embedder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consist.embedders import TinyImageEmbedder
from consist.errors import ConsistError
from consist.hookspecs import hookimpl
from consist.records import Neighbour, Query


class VectorRetriever:
    """Neighbours = the store's nearest embeddings (cosine) to the query's embedding."""

    name = "vector"

    def retrieve(self, query: Query, store: Any, k: int) -> list[Neighbour]:
        if query.embedding is None:
            raise ConsistError(f"query {query.id!r} has no embedding: give one, or wrap() with an embedder")
        hits = store.search(query.embedding, k, exclude=(query.id,))
        return [Neighbour(sample=s, similarity=sim, rank=i, source=self.name) for i, (s, sim) in enumerate(hits)]


@hookimpl
def consist_register_retrievers(register: Callable[[Any], None]) -> None:
    register(VectorRetriever())


@hookimpl
def consist_register_embedders(register: Callable[[Any], None]) -> None:
    register(TinyImageEmbedder())
