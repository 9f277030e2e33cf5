"""Reading images safely: one decoder for the whole project, with clear errors.

Every failure is an :class:`ImageError` whose one-line message names the file and
the problem (missing, unreadable, not an image, truncated, too large), so that a
batch can record it and go on. EXIF orientation is honoured, so that a phone photo
is seen the way its owner sees it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from consist.errors import ImageError

__all__ = ["DEFAULT_MAX_PIXELS", "load_image", "image_id", "encode_png", "ARTEFACT_SCHEME"]

#: Images with more pixels than this are refused (decompression bombs): 100 MP
#: covers any camera; a 40k x 40k PNG of a few kB does not get decoded.
DEFAULT_MAX_PIXELS = 100_000_000
#: URIs of images kept inside a store (queries that came as pixels, not files).
ARTEFACT_SCHEME = "artefact://"


def _from_pil(img: Any, name: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps

    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"{name}: image is {w}x{h} = {w * h / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP limit (raise max_pixels if it is genuine)")
    try:
        img = ImageOps.exif_transpose(img)
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from exc
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    elif img.mode == "L":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return arr


def load_image(source: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, store: Any = None) -> np.ndarray:
    """Decode ``source`` to an ``HxWx3`` uint8 RGB array.

    ``source`` may be a path, an ``artefact://`` URI (an image kept in ``store``),
    bytes, a PIL image, an array, or a record: a ``Query`` (its ``image`` if it has
    pixels, else its ``uri``) or a ``Sample`` (its ``uri``).
    """
    from PIL import Image

    from consist.records import Query, Sample

    if isinstance(source, Query):
        if source.image is not None:
            return load_image(source.image)
        if source.uri is None:
            raise ImageError(f"query {source.id!r}: has neither pixels nor a uri")
        source = source.uri
    elif isinstance(source, Sample):
        if source.uri is None:
            raise ImageError(f"sample {source.id!r}: has no uri")
        source = source.uri

    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ImageError(f"<array>: expected HxW or HxWx3 pixels, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr[..., :3])
    if isinstance(source, Image.Image):
        return _from_pil(source, "<image>", max_pixels)
    if isinstance(source, (bytes, bytearray)):
        name, data = "<bytes>", bytes(source)
    else:
        name = os.fspath(source)
        if name.startswith(ARTEFACT_SCHEME):
            if store is None:
                raise ImageError(f"{name}: image kept in a store, but no store was given")
            sid, _, kind = name[len(ARTEFACT_SCHEME):].rpartition("/")
            data = store.get_artefact(sid, kind)
            if data is None:
                raise ImageError(f"{name}: no such image in {store.uri}")
        else:
            path = Path(name)
            if not path.exists():
                raise ImageError(f"{name}: no such file")
            if path.is_dir():
                raise ImageError(f"{name}: is a folder, not an image")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit, with our own message
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises UnidentifiedImageError, and others on garbage
        raise ImageError(f"{name}: not an image Pillow can read ({type(exc).__name__})") from exc
    return _from_pil(img, name, max_pixels)


def image_id(image: np.ndarray) -> str:
    """A content id for pixels: the same picture always gets the same id."""
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return "img-" + h.hexdigest()


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
