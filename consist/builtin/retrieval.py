"""Built-in retrieval: vector search in the store, and the weight-free "tiny" embedder."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from consist.contracts.hookspecs import hookimpl
from consist.embedders import TinyImageEmbedder
from consist.errors import ConsistError
from consist.records import Neighbour, Query

if TYPE_CHECKING:
    from consist.contracts.features import FeatureSpec
    from consist.contracts.retrieval import Progress
    from consist.contracts.store import Store


class VectorRetriever:
    """Neighbours = the store's nearest embeddings (cosine) to the query's embedding."""

    name = "vector"

    def prepare(self, store: Store, *, features: FeatureSpec | None = None, progress: Progress | None = None) -> None:
        """Nothing to build: the store keeps its own vector index."""

    def retrieve(self, query: Query, store: Store, k: int, *, exclude: Iterable[str] = (), features: FeatureSpec | None = None) -> list[Neighbour]:
        embedding = query.embedding
        if embedding is None:
            stored = store.get(query.id)
            embedding = None if stored is None or stored.uri != query.uri else stored.embedding
        if embedding is None:
            raise ConsistError(f"query {query.id!r} has no embedding: give one, or wrap() with an embedder")
        hits = store.search(embedding, k, exclude=(query.id, *exclude))
        return [Neighbour(sample=s, similarity=sim, rank=i, source=self.name) for i, (s, sim) in enumerate(hits)]


@hookimpl
def consist_register_retrievers(register: Callable[[Any], None]) -> None:
    register(VectorRetriever())


@hookimpl
def consist_register_embedders(register: Callable[[Any], None]) -> None:
    register(TinyImageEmbedder())
