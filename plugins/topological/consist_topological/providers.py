"""What the topological plugin takes from other plugins, found through consist's
registries and contracts only: a pair verifier (:class:`~consist.contracts.PairVerifier`),
a retriever, re-rankers and local features.

The matching graph needs verified pairs with their inlier keypoints, neighbours to
verify and the features those keypoints index. Taking them from the registries
instead of importing consist-spatial means any plugin that registers a verifier, a
retriever or an extractor (consist-spatial or a third party's) can serve the graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import structlog

from consist import plugins
from consist.contracts.evidence import PairVerifier
from consist.contracts.features import FeatureExtractor, FeatureSpec, LocalFeatures
from consist.errors import ConsistError
from consist.features import features_for
from consist.records import Query, Region, Sample

if TYPE_CHECKING:
    from consist.contracts.retrieval import Reranker, Retriever
    from consist.contracts.store import Store

__all__ = [
    "DEFAULT_VERIFIER",
    "FACTORY_OPTIONS",
    "RETRIEVERS",
    "VERIFIER_OPTION",
    "find_pair_verifier",
    "indexed_extractor",
    "inside",
    "pair_verifier",
    "query_features",
    "reranker",
    "retriever",
    "spec_of",
]

log = structlog.get_logger("consist.topological")

#: The option naming the checker whose ``verify_pair`` builds the graph.
VERIFIER_OPTION = "verifier_checker"
#: Its default: consist-spatial's geometric verification.
DEFAULT_VERIFIER = "spatial"
#: Retrievers the graph takes neighbours from, the first registered one wins: ASMK
#: over local features (instance-level, what the paper builds its graph from), else
#: consist's built-in vector search.
RETRIEVERS = ("asmk", "vector")
#: Extractor-factory options the contract documents (``ExtractorFactory``): the ones a
#: :class:`FeatureSpec` carries, and which verifier options of these names also set.
FACTORY_OPTIONS = ("max_side", "max_keypoints", "device")


def find_pair_verifier(name: str = DEFAULT_VERIFIER) -> PairVerifier | None:
    """The registered checker ``name`` if it verifies pairs, else the first other
    registered :class:`PairVerifier` by name, else ``None``.

    Raises ``ConsistError`` when ``name`` is registered but verifies no pairs: a
    named checker is a choice, not a hint.
    """
    found = plugins.checkers()
    named = found.get(name)
    if named is not None:
        if not isinstance(named, PairVerifier):
            raise ConsistError(f"checker {name!r} (option {VERIFIER_OPTION}) does not verify image pairs: it has no verify_pair (consist.contracts.PairVerifier)")
        return named
    others = [c for _n, c in sorted(found.items()) if isinstance(c, PairVerifier)]
    if others:
        log.info("topology_verifier_fallback", wanted=name, using=others[0].name)
        return others[0]
    return None


def pair_verifier(name: str = DEFAULT_VERIFIER) -> PairVerifier:
    """:func:`find_pair_verifier`, with an error naming the option when none is registered."""
    found = find_pair_verifier(name)
    if found is None:
        raise ConsistError(
            f"no registered checker verifies image pairs (consist.contracts.PairVerifier), and the matching graph needs one: "
            f"install consist-spatial or a plugin that registers one, and name it with the {VERIFIER_OPTION!r} option (now {name!r})"
        )
    return found


def retriever(name: str | None = None) -> Retriever:
    """The registered retriever ``name``; by default the first registered of
    :data:`RETRIEVERS`."""
    found = plugins.retrievers()
    wanted = (name,) if name else RETRIEVERS
    for n in wanted:
        if n in found:
            return found[n]
    raise ConsistError(f"no registered retriever {' or '.join(map(repr, wanted))} (registered: {', '.join(sorted(found)) or 'none'})")


def reranker(name: str) -> Reranker | None:
    """The registered re-ranker ``name``, or ``None``."""
    return plugins.rerankers().get(name)


def indexed_extractor(retr: Retriever, store: Store) -> FeatureExtractor | None:
    """The local features ``retr`` indexes ``store`` with, when it tells.

    Not part of the ``Retriever`` contract: a retriever over local features may expose
    its per-store index as ``index_for(store)`` with an ``extractor`` (consist-spatial's
    ``asmk`` does). Reading the index builds it when the store has none, as the first
    retrieval would.
    """
    index_for = getattr(retr, "index_for", None)
    if not callable(index_for):
        return None
    extractor = getattr(index_for(store), "extractor", None)
    return extractor if isinstance(extractor, FeatureExtractor) else None


def spec_of(extractor: FeatureExtractor) -> FeatureSpec | None:
    """The :class:`FeatureSpec` of a registered extractor that produces exactly
    ``extractor``'s features (same ``kind``, hence the same cache), or ``None``.

    Tries each registered factory with the contract's options (:data:`FACTORY_OPTIONS`)
    read from ``extractor``'s attributes.
    """
    options = {k: getattr(extractor, k) for k in FACTORY_OPTIONS if hasattr(extractor, k)}
    for name, factory in sorted(plugins.extractors().items()):
        try:
            if factory(**options).kind == extractor.kind:
                return FeatureSpec(extractor=name, options=options)
        except Exception:  # probing: a factory that cannot take these options is not the one
            continue
    return None


def inside(region: Region, xy: np.ndarray) -> np.ndarray:
    """Which of the ``N x 2`` points lie in ``region``, its boundary included (even-odd
    rule for a polygon): the query's features inside the asked-about region."""
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    if region.polygon is None:
        x0, y0, x1, y1 = region.bounds
        return np.asarray((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
    poly = np.asarray(region.vertices, dtype=np.float64)
    odd = np.zeros(len(pts), dtype=bool)
    edge = np.zeros(len(pts), dtype=bool)
    for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (ay > y) != (by > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = ax + (y - ay) * (bx - ax) / (by - ay)
        odd ^= crosses & (x < x_cross)
        on_line = (bx - ax) * (y - ay) - (by - ay) * (x - ax) == 0
        edge |= on_line & (x >= min(ax, bx)) & (x <= max(ax, bx)) & (y >= min(ay, by)) & (y <= max(ay, by))
    return odd | edge


def query_features(query: Query, store: Store | None, extractor: FeatureExtractor) -> LocalFeatures:
    """The query's features, restricted to its region when it has one. A query that is a
    stored sample (same id and image: leave-one-out) reads the sample's cached features;
    another query's are computed and not cached (a query id is often a one-off)."""
    item: Query | Sample = query
    if query.image is None and query.uri is not None and store is not None:
        stored = store.get(query.id)
        if stored is not None and stored.uri == query.uri:
            item = stored
    feats = features_for(item, store, extractor)
    if query.region is not None and len(feats):
        feats = feats.subset(inside(query.region, feats.keypoints))
    return feats
