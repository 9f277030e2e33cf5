"""Images for a model: downsized, JPEG-encoded, hashed once per query.

LMM servers resize large images themselves, but sending a 12 MP photo costs
upload time and server memory; ``max_side`` (768 px by default, what Qwen2-VL /
LLaVA-1.6 class models see at their default pixel budget) keeps the request small.
The digest (of the pixels actually sent) keys the answer cache, so that the same
picture re-encoded or renamed hits the cache and different pictures never collide.
"""

from __future__ import annotations

import base64
import hashlib
import io

import attrs
import numpy as np

__all__ = ["DEFAULT_MAX_SIDE", "JPEG_QUALITY", "EncodedImage", "encode_image"]

#: Longest side of the image sent to the model, in pixels.
DEFAULT_MAX_SIDE = 768
#: JPEG quality of the sent image (90: visually lossless, ~10x smaller than PNG).
JPEG_QUALITY = 90


@attrs.frozen
class EncodedImage:
    """An image ready for a request: JPEG bytes, their pixels' digest, size sent."""

    data: bytes = attrs.field(repr=False)
    digest: str
    size: tuple[int, int]
    mime: str = "image/jpeg"

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def encode_image(image: np.ndarray, *, max_side: int = DEFAULT_MAX_SIDE, quality: int = JPEG_QUALITY) -> EncodedImage:
    """Downsize (area filter) to ``max_side`` and encode as JPEG."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    pil = Image.fromarray(np.ascontiguousarray(arr[..., :3].astype(np.uint8, copy=False)))
    w, h = pil.size
    scale = max_side / max(w, h) if max_side else 1.0
    if scale < 1.0:
        pil = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    digest = hashlib.blake2b(pil.tobytes(), digest_size=16)
    digest.update(f"{pil.size}".encode())
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return EncodedImage(buf.getvalue(), digest.hexdigest(), pil.size)
