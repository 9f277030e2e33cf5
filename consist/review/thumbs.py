"""Images of the store's samples, resized for the page (JPEG), EXIF-oriented like
every image consist reads, so that coordinates drawn on them (regions, matches,
outlines) are in the same pixels as the audit's evidence.

Only samples of the store are served, looked up by id: no request names a path.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import attrs

from consist.contracts.store import Store
from consist.errors import ConsistError
from consist.images import DEFAULT_MAX_PIXELS

__all__ = ["SIZES", "Rendered", "ThumbCache"]

#: Long sides the page asks for: list thumbnails, neighbour views, the zoomable photo.
SIZES = (160, 400, 1600)
#: Rendered images kept in memory (about 30 KB each at 400 px).
CACHE_ENTRIES = 2048


@attrs.frozen
class Rendered:
    jpeg: bytes
    width: int  # of the full, oriented image: coordinates of the evidence
    height: int
    scale: float  # rendered pixels per full-image pixel


def render(source: Any, side: int, name: str) -> Rendered:
    """``source`` (a path or bytes) as a JPEG whose long side is at most ``side``."""
    from PIL import Image, ImageOps

    try:
        with Image.open(source if not isinstance(source, bytes) else io.BytesIO(source)) as src:
            w0, h0 = src.size
            if w0 * h0 > DEFAULT_MAX_PIXELS:
                raise ConsistError(f"{name}: image is {w0}x{h0}, over the {DEFAULT_MAX_PIXELS / 1e6:.0f} MP limit")
            src.draft("RGB", (side, side))
            img = ImageOps.exif_transpose(src)
            img = img.convert("RGB")
            try:
                orientation = src.getexif().get(0x0112, 1)
            except Exception:
                orientation = 1
    except ConsistError:
        raise
    except Exception as exc:
        raise ConsistError(f"{name}: not an image that can be shown ({type(exc).__name__})") from exc
    full_w, full_h = (h0, w0) if orientation in (5, 6, 7, 8) else (w0, h0)
    s = min(1.0, side / max(full_w, full_h))
    out = img.resize((max(1, round(full_w * s)), max(1, round(full_h * s))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=82)
    return Rendered(buf.getvalue(), full_w, full_h, out.width / full_w)


class ThumbCache:
    """Rendered images of a store's samples (and of images uploaded for search), by
    id and size, least recently used out first."""

    def __init__(self, store: Store, entries: int = CACHE_ENTRIES) -> None:
        self.store = store
        self.entries = entries
        self._cache: OrderedDict[tuple[str, int], Rendered] = OrderedDict()
        self._uploads: OrderedDict[str, bytes] = OrderedDict()
        self._sizes: dict[str, tuple[int, int] | None] = {}
        self._lock = threading.Lock()

    def add_upload(self, upload_id: str, data: bytes, keep: int = 32) -> None:
        with self._lock:
            self._uploads[upload_id] = data
            while len(self._uploads) > keep:
                self._uploads.popitem(last=False)

    def upload(self, upload_id: str) -> bytes | None:
        with self._lock:
            return self._uploads.get(upload_id)

    def size_of(self, sample_id: str) -> tuple[int, int] | None:
        """(width, height) of the full, oriented image (its header only), or None."""
        with self._lock:
            if sample_id in self._sizes:
                return self._sizes[sample_id]
        size: tuple[int, int] | None = None
        sample = self.store.get(sample_id)
        if sample is not None and sample.uri and not sample.uri.startswith("artefact://"):
            try:
                from PIL import Image

                with Image.open(sample.uri) as im:
                    w, h = im.size
                    try:
                        orientation = im.getexif().get(0x0112, 1)
                    except Exception:
                        orientation = 1
                size = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
            except Exception:
                size = None
        with self._lock:
            self._sizes[sample_id] = size
        return size

    def get(self, sample_id: str, side: int) -> Rendered:
        side = min(SIZES, key=lambda s: (s < side, abs(s - side)))  # the next size up
        key = (sample_id, side)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        source: Any
        if sample_id.startswith("upload:"):
            source = self.upload(sample_id)
            if source is None:
                raise ConsistError(f"{sample_id}: no such uploaded image (uploads are kept for this session only)")
        else:
            sample = self.store.get(sample_id)
            if sample is None or not sample.uri:
                raise ConsistError(f"{sample_id}: no such sample with an image in the store")
            if sample.uri.startswith("artefact://"):
                from consist.images import encode_png, load_image

                source = encode_png(load_image(sample, store=self.store))
            else:
                source = Path(sample.uri)
                if not source.is_file():
                    raise ConsistError(f"{sample_id}: its image {sample.uri} is missing")
        rendered = render(source, side, sample_id)
        with self._lock:
            self._cache[key] = rendered
            while len(self._cache) > self.entries:
                self._cache.popitem(last=False)
        return rendered
