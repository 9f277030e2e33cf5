"""The parameters of an ASMK index, and the default codebook size.

Codebook size: :attr:`AsmkParams.codebook_size`, or by default
``min(max_codebook_size, n_descriptors // 50)`` (at least 16): a 65k codebook is
usual for millions of descriptors (Tolias et al.), but a small store cannot fill it;
~50 descriptors per word keeps the k-means meaningful and words selective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["DEFAULT_MAX_CODEBOOK_SIZE", "AsmkParams", "Progress", "default_codebook_size"]

#: Cap of the default codebook size (see the module docstring).
DEFAULT_MAX_CODEBOOK_SIZE = 1024

#: What every long ASMK step calls as images are read: ``progress(images done)``.
Progress = Callable[[int], None]


def default_codebook_size(n_descriptors: int, *, cap: int = DEFAULT_MAX_CODEBOOK_SIZE) -> int:
    """``min(cap, n_descriptors // 50)``, at least 16 and never more than the descriptors."""
    size = max(16, min(int(cap), int(n_descriptors) // 50))
    return max(1, min(size, int(n_descriptors)))


def _positive_int(_inst: Any, attr: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise ValueError(f"asmk parameter {attr.name} must be >= 1, got {value}")


@attrs.frozen
class AsmkParams:
    """Parameters of the ASMK index.

    Attributes:
        codebook_size: visual words; ``None`` picks :func:`default_codebook_size`.
        max_codebook_size: cap of that default (1024).
        train_descriptors: at most this many descriptors, sampled evenly over the
            images (fixed ``seed``), train the k-means (250 000; faiss itself keeps
            at most 256 per centroid).
        binary: binarised residuals, ASMK* (True: 16 bytes per word for 128-d
            descriptors; the published setting).
        multiple_assignment: visual words per query descriptor (3; database
            descriptors get 1). The ``asmk`` package's published 5 is tuned for 65k-word
            codebooks; with the small codebooks of small stores 3 did better in our
            leave-one-out runs (mAP ukbench-subset 0.998 vs 0.989 with 5 and 1;
            landmark-multiview 0.838 vs 0.795 with 5 and 0.833 with 1; 1024 words).
        alpha, similarity_threshold: the selective kernel (3.0, 0.0).
        use_idf: weight words by idf (False, as published for ASMK*; note the
            ``asmk`` package recomputes the norms over the whole file on every add
            when it is on, which makes incremental adds slow).
        retrain_growth: ``consist index`` retrains the codebook when the store has
            this many times the images it was trained on (4.0; 0 disables).
        seed: sampling of training descriptors (the k-means itself has its own fixed
            seed, :data:`~consist_spatial.asmk.codebook.KMEANS_SEED`).
    """

    codebook_size: int | None = attrs.field(default=None, converter=lambda v: None if v is None else int(v))
    max_codebook_size: int = attrs.field(default=DEFAULT_MAX_CODEBOOK_SIZE, converter=int, validator=_positive_int)
    train_descriptors: int = attrs.field(default=250_000, converter=int, validator=_positive_int)
    binary: bool = True
    multiple_assignment: int = attrs.field(default=3, converter=int, validator=_positive_int)
    alpha: float = attrs.field(default=3.0, converter=float)
    similarity_threshold: float = attrs.field(default=0.0, converter=float)
    use_idf: bool = False
    retrain_growth: float = attrs.field(default=4.0, converter=float)
    seed: int = attrs.field(default=0, converter=int)

    @codebook_size.validator
    def _check_size(self, _attr: Any, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"asmk parameter codebook_size must be >= 1, got {value}")
