"""The retrieval contracts: embedders turn an image into a vector, retrievers find a
query's neighbours in a store, re-rankers reorder a retrieved list with costlier
evidence (geometric verification, hypergraph propagation).

All three are objects registered by name through ``consist_register_embedders``,
``consist_register_retrievers`` and ``consist_register_rerankers``; the engine, the
audit and ``consist query`` look them up by that name, so a third party can replace
any of consist's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import numpy as np

if TYPE_CHECKING:
    from consist.contracts.features import FeatureSpec
    from consist.contracts.store import Store
    from consist.records import Neighbour, Query

__all__ = ["Embedder", "Progress", "Reranker", "Reranking", "Retriever"]

#: Progress callback of long preparations: ``progress(done, total)``.
Progress = Callable[[int, int], None]


@runtime_checkable
class Embedder(Protocol):
    """Image -> one L2-normalised float32 vector of length ``dim`` (global descriptor),
    used to index samples and to retrieve neighbours by vector search."""

    name: str
    dim: int

    def embed(self, image: object) -> np.ndarray:
        """``image``: a path, ``H x W x 3`` uint8 pixels or a PIL image -> ``(dim,)`` float32."""
        ...


@runtime_checkable
class Retriever(Protocol):
    """Finds a query's neighbours in a store.

    ``prepare`` builds or refreshes whatever the retriever keeps per store (an
    inverted file, a codebook) once, before many queries, e.g. before an audit's
    workers start; it must be idempotent and cheap when nothing changed.
    ``retrieve`` returns at most ``k`` neighbours, best first, ``rank`` 0.., never the
    query itself (a sample whose id is ``query.id``) nor one whose id is in ``exclude``
    (an audit's other held-out samples, duplicates).
    ``features`` names the local features of the run, for retrievers that use them.
    """

    name: str

    def prepare(self, store: Store, *, features: FeatureSpec | None = None, progress: Progress | None = None) -> None: ...

    def retrieve(self, query: Query, store: Store, k: int, *, exclude: Iterable[str] = (), features: FeatureSpec | None = None) -> list[Neighbour]: ...


def _neighbour_tuple(v: Iterable[Neighbour]) -> tuple[Neighbour, ...]:
    return tuple(v)


@attrs.frozen
class Reranking:
    """What a re-ranker returns.

    Attributes:
        neighbours: best first, ``rank`` renumbered 0.., ``similarity`` the
            re-ranker's score, ``source`` who placed it (the re-ranker's name, or e.g.
            ``"propagation"`` for an image reached beyond the input list), and
            ``evidence`` what it found for that neighbour: ``"pair"`` (a
            :class:`~consist.contracts.PairEvidence` dict) when it verified the pair,
            other JSON-able keys of its own (``"hop"``, ``"active_region"``).
        details: JSON-able facts about the whole query (``community_uncertainty``,
            ``seeds``), shown by ``consist query``.
    """

    neighbours: tuple[Neighbour, ...] = attrs.field(converter=_neighbour_tuple)
    details: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class Reranker(Protocol):
    """Reorders retrieved neighbours with costlier evidence (geometric verification,
    propagation through the store's matching graph).

    ``k`` is how many of the input it may verify; the rest keep their order after
    them. It may add neighbours the input lacked (propagation reaches them) and drop
    those whose image it could not read.
    """

    name: str

    def rerank(self, query: Query, neighbours: Sequence[Neighbour], store: Store, *, k: int, features: FeatureSpec | None = None) -> Reranking: ...
