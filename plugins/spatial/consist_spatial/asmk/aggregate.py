"""ASMK aggregation: one image's descriptors -> one vector per visual word."""

from __future__ import annotations

import numpy as np

__all__ = ["aggregate_residuals"]


def aggregate_residuals(des: np.ndarray, word_ids: np.ndarray, centroids: np.ndarray, *, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """ASMK aggregation of one image (Tolias et al. 2013): per visual word, the sum of
    the residuals of the descriptors assigned to it, then binarised (packed sign bits)
    or L2-normalised; ``(vectors, word ids)``.

    Same result as ``asmk.kernel.ASMKKernel.aggregate_image``, which loops over the
    words in Python testing every assignment (0.08 s per 2k-descriptor image with
    multiple assignment 5, more than the whole inverted-file search); here one
    sort and one ``np.add.reduceat``: sum of residuals = sum of descriptors minus
    count x centroid. A descriptor counts once per word it is assigned to (faiss
    returns distinct centroids per descriptor).
    """
    from asmk import functional, hamming

    wid = np.asarray(word_ids, dtype=np.int64)
    if wid.ndim == 1:
        wid = wid[:, None]
    rows = np.repeat(np.arange(len(des)), wid.shape[1])
    flat = wid.reshape(-1)
    order = np.argsort(flat, kind="stable")
    flat, rows = flat[order], rows[order]
    unique_ids, starts, counts = np.unique(flat, return_index=True, return_counts=True)
    if len(unique_ids) == 0:
        empty = np.zeros((0, des.shape[1]), dtype=np.float32)
        return (hamming.binarize_and_pack_2D(empty) if binary else empty), unique_ids
    sums = np.add.reduceat(np.asarray(des, dtype=np.float32)[rows], starts, axis=0)
    ades = (sums - counts[:, None].astype(np.float32) * np.asarray(centroids, dtype=np.float32)[unique_ids]).astype(np.float32)
    ades = hamming.binarize_and_pack_2D(ades) if binary else functional.normalize_vec_l2(ades)
    return ades, unique_ids
