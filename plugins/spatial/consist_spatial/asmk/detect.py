"""Which feature extractor a store's ASMK index was built with.

A query must be described by the same extractor (same kind, same parameters) as the
images it is compared with. The codebook artefact therefore records what rebuilds its
extractor (:func:`extractor_spec`), and :func:`detect_extractor` reads it back, so
that ``consist query`` and the ``asmk`` retriever need not be told.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import attrs

from consist.errors import ConsistError
from consist_spatial.asmk.artefacts import ASMK_SAMPLE_ID, codebook_kind, read_npz
from consist_spatial.extractors.registry import make_extractor
from consist_spatial.features import FeatureExtractor, SiftExtractor

if TYPE_CHECKING:
    from consist.contracts import Store

__all__ = ["detect_extractor", "extractor_from_spec", "extractor_spec", "sift_from_feature_kinds"]

#: The parameters of a learned extractor that change its features (kept in the spec).
_LEARNED_PARAMS = ("max_keypoints", "max_side", "detection_threshold")
#: The feature kinds of :class:`SiftExtractor` (RootSIFT or not, resolution, budget).
_SIFT_KIND = re.compile(r"features/sift(-rootsift)?-(full|\d+)-(\d+)")


def extractor_spec(extractor: FeatureExtractor) -> dict[str, Any]:
    """What rebuilds ``extractor`` (kept in the codebook artefact)."""
    if isinstance(extractor, SiftExtractor):
        return {"type": "sift", **attrs.asdict(extractor)}
    name = getattr(extractor, "name", None)
    if name and attrs.has(type(extractor)):
        fields = attrs.asdict(cast(attrs.AttrsInstance, extractor))
        return {"type": "learned", "name": name, **{k: fields[k] for k in _LEARNED_PARAMS if k in fields}}
    return {"type": type(extractor).__name__, "kind": extractor.kind}


def extractor_from_spec(spec: dict[str, Any]) -> FeatureExtractor | None:
    """The extractor :func:`extractor_spec` described; ``None`` for a third party's
    extractor, which only its plugin can rebuild."""
    if spec.get("type") == "sift":
        fields = {a.name for a in attrs.fields(SiftExtractor)}
        return SiftExtractor(**{k: v for k, v in spec.items() if k in fields})
    if spec.get("type") == "learned":
        return make_extractor(spec["name"], **{k: spec[k] for k in _LEARNED_PARAMS if k in spec})
    return None


def detect_extractor(store: Store) -> FeatureExtractor | None:
    """The extractor of the store's ASMK codebook, else of its cached SIFT features
    (one kind only); ``None`` when neither tells.

    With several codebooks (indexes built with different extractor settings), the
    default :class:`SiftExtractor`'s wins if present; otherwise it is an error, and
    the caller must say which extractor to use.
    """
    kinds_of = getattr(store, "artefact_kinds", None)
    if kinds_of is None:
        return None
    all_kinds = kinds_of()
    kinds = sorted(k for k in all_kinds if k.startswith("asmk/codebook/"))
    if not kinds:
        return sift_from_feature_kinds(all_kinds)
    default = SiftExtractor()
    if len(kinds) > 1 and codebook_kind(default) in kinds:
        return default
    if len(kinds) > 1:
        raise ConsistError(f"{store.uri}: several ASMK indexes ({', '.join(kinds)}); say which extractor to use")
    data = store.get_artefact(ASMK_SAMPLE_ID, kinds[0])
    if data is None:
        return None
    meta, _ = read_npz(data, f"{store.uri} {kinds[0]}")
    ext = extractor_from_spec(meta.get("extractor", {}))
    if ext is None:
        raise ConsistError(f"{store.uri}: the ASMK index {kinds[0]} was built with extractor {meta.get('extractor')}; pass that extractor explicitly")
    return ext


def sift_from_feature_kinds(kinds: Iterable[str]) -> SiftExtractor | None:
    """The SIFT extractor behind the one ``features/sift...`` cache of a store (a store
    indexed with ``--no-asmk``), so that a query reuses its cached features."""
    found = []
    for kind in kinds:
        m = _SIFT_KIND.fullmatch(kind)
        if m:
            ext = SiftExtractor(max_side=None if m.group(2) == "full" else int(m.group(2)), max_keypoints=int(m.group(3)), root=bool(m.group(1)))
            if ext.kind == kind:
                found.append(ext)
    return found[0] if len(found) == 1 else None
