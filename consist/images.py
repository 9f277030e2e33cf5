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
from typing import TYPE_CHECKING, Any

import numpy as np

from consist.errors import ImageError

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = ["ARTEFACT_SCHEME", "DEFAULT_MAX_PIXELS", "encode_png", "image_id", "load_gray", "load_image"]

#: Images with more pixels than this are refused (decompression bombs): 100 MP
#: covers any camera; a 40k x 40k PNG of a few kB does not get decoded.
DEFAULT_MAX_PIXELS = 100_000_000
#: Image files larger than this are refused unread (512 MiB: a 100 MP TIFF of 16-bit
#: RGB is 600 MB, a photo a few MB).
DEFAULT_MAX_BYTES = 512 * 2**20
#: URIs of images kept inside a store (queries that came as pixels, not files).
ARTEFACT_SCHEME = "artefact://"


def _from_pil(img: Any, name: str, max_pixels: int) -> np.ndarray:
    from PIL import ImageOps

    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"{name}: image is {w}x{h} = {w * h / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP limit (raise max_pixels if it is genuine)")
    try:
        img.load()
        # in place: exif_transpose otherwise copies the whole image even when upright
        ImageOps.exif_transpose(img, in_place=True)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from exc
    img = _eight_bit(img, name)
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    img.close()  # the decoded copy goes now, not when the caller's frame ends
    return arr


def _eight_bit(img: Any, name: str) -> Any:
    """A 16-bit, 32-bit or float single-channel image scaled to 8 bits (Pillow's own
    conversion clips: a 16-bit PNG or TIFF turned all white, a float TIFF in [0, 1]
    all black). Integers keep their range (``I;16``: /257; values that fit in 8
    bits are kept); floats in [0, 1] are * 255, other floats are stretched from
    their minimum to their maximum; non-finite values become 0."""
    from PIL import Image

    mode = img.mode
    if not (mode.startswith("I") or mode == "F"):
        return img
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ImageError(f"{name}: unsupported pixel format {mode} (convert it to 8-bit RGB)")
    if mode == "F" or np.issubdtype(arr.dtype, np.floating):
        a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            out = a * 255.0
        elif hi > lo:
            out = (a - lo) * (255.0 / (hi - lo))
        else:
            out = np.zeros_like(a)
    else:
        a = arr.astype(np.int64)
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo >= 0 and hi <= 255:
            out = a.astype(np.float64)
        elif lo >= 0 and hi <= 65535:
            out = a / 257.0
        else:
            out = (a - lo) * (255.0 / max(1, hi - lo))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="L")


def _open(source: Any, max_pixels: int, store: Store | None) -> tuple[Any, str] | np.ndarray:
    """A lazily decoded PIL image and its name for error messages, or the pixels
    themselves when ``source`` already is an array."""
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
        return source, "<image>"
    if isinstance(source, (bytes, bytearray)):
        name, data = "<bytes>", bytes(source)
    else:
        name = os.fspath(source)
        if name.startswith(ARTEFACT_SCHEME):
            if store is None:
                raise ImageError(f"{name}: image kept in a store, but no store was given")
            sid, _, kind = name[len(ARTEFACT_SCHEME) :].rpartition("/")
            stored = store.get_artefact(sid, kind)
            if stored is None:
                raise ImageError(f"{name}: no such image in {store.uri}")
            data = stored
        else:
            path = Path(name)
            if not path.exists():
                raise ImageError(f"{name}: no such file")
            if path.is_dir():
                raise ImageError(f"{name}: is a folder, not an image")
            data = _read_file(path, name, max_pixels)
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit, with our own message
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises UnidentifiedImageError, and others on garbage
        raise ImageError(f"{name}: not an image Pillow can read ({type(exc).__name__})") from exc
    return img, name


def _read_file(path: Path, name: str, max_pixels: int) -> bytes:
    """The bytes of a regular file of at most :data:`DEFAULT_MAX_BYTES` whose header
    says at most ``max_pixels`` pixels: the header is read first, the rest only then
    (a device such as ``/dev/zero`` or a fifo would be read forever: refused)."""
    from PIL import Image

    try:
        st = path.stat()
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode):
        raise ImageError(f"{name}: not a regular file (a device, a fifo or a socket is never read)")
    if st.st_size == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if st.st_size > DEFAULT_MAX_BYTES:
        raise ImageError(f"{name}: file is {st.st_size / 2**20:.0f} MiB, over the {DEFAULT_MAX_BYTES / 2**20:.0f} MiB limit for an image")
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit, with our own message
    try:
        with path.open("rb") as fh:
            try:
                with Image.open(fh) as img:  # the header only
                    w, h = img.size
            except Exception as exc:  # PIL raises UnidentifiedImageError, and others on garbage
                raise ImageError(f"{name}: not an image Pillow can read ({type(exc).__name__})") from exc
            if w * h > max_pixels:
                raise ImageError(f"{name}: image is {w}x{h} = {w * h / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP limit (raise max_pixels if it is genuine)")
            fh.seek(0)
            return fh.read(DEFAULT_MAX_BYTES + 1)[:DEFAULT_MAX_BYTES]
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from exc


def load_image(source: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, store: Store | None = None) -> np.ndarray:
    """Decode ``source`` to an ``HxWx3`` uint8 RGB array.

    ``source`` may be a path, an ``artefact://`` URI (an image kept in ``store``),
    bytes, a PIL image, an array, or a record: a ``Query`` (its ``image`` if it has
    pixels, else its ``uri``) or a ``Sample`` (its ``uri``).
    """
    opened = _open(source, max_pixels, store)
    if isinstance(opened, np.ndarray):
        return opened
    return _from_pil(opened[0], opened[1], max_pixels)


#: EXIF orientations that swap width and height (rotations by 90 degrees).
_TRANSPOSING = {5, 6, 7, 8}


def load_gray(source: Any, *, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, store: Store | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``source`` to one uint8 grey channel, fast, for feature extraction.

    Returns ``(pixels, (width, height))`` where the size is that of the full,
    EXIF-oriented image. A JPEG is decoded straight to grey (no chroma upsampling
    or colour conversion: ~4x faster than :func:`load_image` on a 2 MP photo) and,
    when ``max_side`` is given, at the smallest DCT scale (1/2, 1/4, 1/8) whose long
    side is still >= ``max_side`` (a 12 MP phone photo wanted at 1024 px decodes at
    1/2 or 1/4 of the cost). The pixels may thus be smaller than the size returned;
    callers map coordinates with the ratio of the two.
    """
    opened = _open(source, max_pixels, store)
    if isinstance(opened, np.ndarray):
        import cv2

        return cv2.cvtColor(opened, cv2.COLOR_RGB2GRAY), (opened.shape[1], opened.shape[0])
    img, name = opened
    from PIL import ImageOps

    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"{name}: image is {w}x{h} = {w * h / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP limit (raise max_pixels if it is genuine)")
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not a broken image: ignore it
        orientation = 1
    full = (h, w) if orientation in _TRANSPOSING else (w, h)
    try:
        if img.format == "JPEG":
            want = (w, h)
            if max_side and max(w, h) > max_side:
                f = max_side / float(max(w, h))
                want = (max(1, int(w * f)), max(1, int(h * f)))
            img.draft("L", want)
        img = ImageOps.exif_transpose(img)
        img.load()
        img = _eight_bit(img, name)
        if img.mode != "L":  # the same route as load_image's pixels, then grey
            img = (img if img.mode == "RGB" else img.convert("RGB")).convert("L")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from exc
    return np.asarray(img, dtype=np.uint8), full


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
