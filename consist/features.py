"""The store's cache of local features: one artefact per sample and extractor ``kind``.

Feature extraction dominates the cost of pixel-level verification (DESIGN.md 3.1: SIFT
~0.07-0.3 s per 1024 px image, matching ~10-30 ms, RANSAC ~2 ms), so features are
extracted once per sample and kept in the store; everything that reads local features
(the audit's workers, retrievers, checkers, the report) goes through
:func:`features_for`, whatever plugin registered the extractor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from consist.contracts.features import FeatureExtractor, LocalFeatures
from consist.errors import StoreError
from consist.images import image_id, load_gray, load_image
from consist.records import Query, Sample

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = ["cache_features", "features_for", "read_cached_features"]

log = structlog.get_logger("consist.features")

_MAGIC = b"CSF1"


def _source_of(item: Sample | Query) -> str:
    """What the pixels came from: a cached entry for another source is stale."""
    if isinstance(item, Query) and item.image is not None:
        return image_id(item.image)
    return str(item.uri or "")


def _load_pixels(item: Sample | Query, store: Store | None) -> np.ndarray:
    """A query's pixels, or the image at its/the sample's URI (``ImageError`` if none)."""
    return load_image(item, store=store)


def _digest(source: str) -> bytes:
    return hashlib.blake2b(source.encode(), digest_size=8).hexdigest().encode()


def _cache_blob(features: LocalFeatures, source: str) -> bytes:
    return _MAGIC + _digest(source) + features.to_bytes()


def read_cached_features(blob: bytes, source: str) -> LocalFeatures | None:
    """Features from a cache artefact, or ``None`` when it was computed from another
    image (``source``: the sample's URI) or in another layout (recompute then)."""
    if blob[:4] != _MAGIC or blob[4:20] != _digest(source):
        return None
    try:
        return LocalFeatures.from_bytes(blob[20:])
    except ValueError:
        return None


def cache_features(item: Sample, store: Store, kind: str, features: LocalFeatures) -> None:
    """Store features computed elsewhere (an audit worker) under ``(item.id, kind)``."""
    store.put_artefact(item.id, kind, _cache_blob(features, _source_of(item)))


def features_for(
    item: Sample | Query,
    store: Store | None,
    extractor: FeatureExtractor,
    *,
    cache_queries: bool = False,
    load: Callable[[Sample | Query, Any], np.ndarray] = _load_pixels,
) -> LocalFeatures:
    """Features of a sample or a query, from the store's artefact cache when there.

    Samples are cached under ``(sample.id, extractor.kind)``. Queries are cached
    (under the query id) only with ``cache_queries=True``: a query id is often a
    one-off, and caching it would grow the store with every question asked.
    A cache entry remembers the image it was computed from (the sample's URI, or a
    hash of a query's pixels) and is recomputed when that changed. Pixels are read
    with :func:`consist.images.load_image` (so ``artefact://`` URIs work); an
    extractor with ``extract_gray(gray, original_size)`` gets grey pixels decoded at
    a reduced JPEG scale instead. A read-only store is used for reading only.
    """
    kind = extractor.kind
    use_cache = store is not None and (isinstance(item, Sample) or cache_queries)
    source = _source_of(item) if use_cache else ""
    if use_cache:
        assert store is not None
        blob = store.get_artefact(item.id, kind)
        if blob is not None:
            cached = read_cached_features(blob, source)
            if cached is not None:
                return cached
    extract_gray = getattr(extractor, "extract_gray", None)
    if load is _load_pixels and callable(extract_gray):
        # grey-only extractors skip the RGB decode (and decode big JPEGs reduced)
        gray, size = load_gray(item, max_side=getattr(extractor, "max_side", None), store=store)
        features: LocalFeatures = extract_gray(gray, size)
    else:
        features = extractor.extract(load(item, store))
    if use_cache:
        assert store is not None
        try:
            store.put_artefact(item.id, kind, _cache_blob(features, source))
        except StoreError as exc:  # read-only or locked store: still answer
            log.debug("feature_cache_write_failed", sample=item.id, kind=kind, error=str(exc))
    return features
