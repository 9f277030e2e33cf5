"""A built-in embedder that needs no model weights: "tiny images".

Torralba, Fergus & Freeman (PAMI 2008) showed that a heavily downsampled, normalised
thumbnail is a usable global descriptor for near-duplicate and same-scene retrieval.
It is here so that consist works out of the box and in tests; real deployments bring
their own embedder (a CNN/ViT through a plugin) or their recognizer's embeddings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from consist.images import load_image

__all__ = ["TinyImageEmbedder"]


class TinyImageEmbedder:
    """Grey ``size x size`` thumbnail (area-averaged), zero-mean, L2-normalised,
    concatenated with a coarse colour histogram (``bins`` per channel, L2-normalised,
    weighted by ``colour_weight``): cheap, deterministic, and colour-aware."""

    name = "tiny"

    def __init__(self, size: int = 16, bins: int = 4, colour_weight: float = 0.5) -> None:
        self.size = size
        self.bins = bins
        self.colour_weight = colour_weight
        self.dim = size * size + bins**3

    def embed(self, image: Any) -> np.ndarray:
        from PIL import Image

        arr = load_image(image)
        grey = Image.fromarray(arr).convert("L").resize((self.size, self.size), Image.Resampling.BOX)
        g = np.asarray(grey, dtype=np.float32).reshape(-1)
        g -= g.mean()
        n = np.linalg.norm(g)
        g = g / n if n > 0 else g
        hist = _colour_histogram(arr, self.bins)
        hist = np.sqrt(hist / max(hist.sum(), 1.0))  # Hellinger: rootSIFT-style
        hn = np.linalg.norm(hist)
        hist = hist / hn if hn > 0 else hist
        v = np.concatenate([g, self.colour_weight * hist]).astype(np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12)


#: Rows of pixels binned at a time: the histogram of an 81-megapixel photo then needs
#: a few MB of temporaries, not the 2 GB of int32 copies of the whole image.
HISTOGRAM_ROWS = 256


def _colour_histogram(arr: np.ndarray, bins: int) -> np.ndarray:
    """Counts of ``bins``^3 colour cells (``(v * bins) // 256`` per channel), in blocks of
    :data:`HISTOGRAM_ROWS` rows (the same counts as over the whole image at once)."""
    hist = np.zeros(bins**3, dtype=np.int64)
    for r in range(0, arr.shape[0], HISTOGRAM_ROWS):
        q = (arr[r : r + HISTOGRAM_ROWS].reshape(-1, 3).astype(np.int32) * bins) // 256
        codes = q[:, 0] * bins * bins + q[:, 1] * bins + q[:, 2]
        hist += np.bincount(codes, minlength=bins**3)
    return hist.astype(np.float32)
