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
        q = (arr.reshape(-1, 3).astype(np.int32) * self.bins) // 256
        codes = q[:, 0] * self.bins * self.bins + q[:, 1] * self.bins + q[:, 2]
        hist = np.bincount(codes, minlength=self.bins**3).astype(np.float32)
        hist = np.sqrt(hist / max(hist.sum(), 1.0))  # Hellinger: rootSIFT-style
        hn = np.linalg.norm(hist)
        hist = hist / hn if hn > 0 else hist
        v = np.concatenate([g, self.colour_weight * hist]).astype(np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12)
