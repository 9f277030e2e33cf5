"""Where and how an ASMK index is kept in the store.

All of it is artefacts of the pseudo-sample :data:`ASMK_SAMPLE_ID` (``__asmk__``,
see :func:`consist.stores.derived.owner_id`), one pair per feature extractor:

* ``asmk/codebook/<extractor>`` (e.g. ``asmk/codebook/sift-rootsift-1024-2048``):
  the centroids and how they were made (the extractor's parameters, images and
  descriptors trained on, or the file they came from);
* ``asmk/ivf/<extractor>``: a snapshot of the inverted file, with the sample id and
  image URI behind every indexed image and the store history sequence number it
  reflects.

Both are ``.npz`` archives without pickle: a JSON ``meta`` entry (with
:data:`FORMAT_VERSION`) beside plain arrays, so a stored index never runs code.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from consist.errors import StoreError
from consist.stores.derived import owner_id
from consist_spatial.features import FeatureExtractor

__all__ = ["ASMK_SAMPLE_ID", "FORMAT_VERSION", "codebook_kind", "extractor_tag", "ivf_kind", "read_npz", "write_npz"]

#: The pseudo sample id the index's artefacts are kept under.
ASMK_SAMPLE_ID = owner_id("asmk")
#: Layout version of the codebook and inverted-file artefacts.
FORMAT_VERSION = 1


def extractor_tag(extractor: FeatureExtractor) -> str:
    """The extractor part of the artefact kinds: its feature kind without ``features/``."""
    kind = extractor.kind
    return kind[len("features/") :] if kind.startswith("features/") else kind.replace("/", "-")


def codebook_kind(extractor: FeatureExtractor) -> str:
    """Artefact kind of the codebook of ``extractor``'s features."""
    return f"asmk/codebook/{extractor_tag(extractor)}"


def ivf_kind(extractor: FeatureExtractor) -> str:
    """Artefact kind of the inverted-file snapshot of ``extractor``'s features."""
    return f"asmk/ivf/{extractor_tag(extractor)}"


def read_npz(data: bytes, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of an artefact; :class:`StoreError` naming ``what`` when it is
    unreadable or of another format version (the fix is the same: rebuild)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except Exception as exc:  # zip/npy/json errors: one clear error
        raise StoreError(f"{what}: unreadable ASMK artefact ({type(exc).__name__}: {exc}); rebuild it with consist index --retrain") from exc
    if meta.get("version") != FORMAT_VERSION:
        raise StoreError(f"{what}: ASMK artefact format {meta.get('version')} (this version reads {FORMAT_VERSION}); rebuild it with consist index --retrain")
    return meta, arrays


def write_npz(meta: dict[str, Any], **arrays: np.ndarray) -> bytes:
    """The artefact bytes of ``meta`` (JSON-able; the caller sets ``version``) and ``arrays``."""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()
