"""The visual codebook of an ASMK index: trained on the store's descriptors, or
loaded from centroids made elsewhere.

Training is reproducible: the descriptors are sampled with ``AsmkParams.seed`` (0)
and the k-means starts from :data:`KMEANS_SEED`, so two runs on the same store give
the same codebook (and so the same index and rankings).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from consist.errors import ConsistError, ImageError
from consist.records import Sample
from consist_spatial.asmk.params import AsmkParams, Progress, default_codebook_size
from consist_spatial.features import FeatureExtractor, features_for

if TYPE_CHECKING:
    from consist.contracts import Store

__all__ = ["KMEANS_ITERATIONS", "KMEANS_SEED", "codebook_digest", "codebook_from_array", "kmeans", "load_codebook_file", "train_centroids"]

log = structlog.get_logger("consist.spatial")

#: Seed of the k-means (faiss picks its initial centroids and, above 256 points per
#: centroid, its training subset with it). 1234 is faiss's own default, written out so
#: that the codebook does not depend on a library default.
KMEANS_SEED = 1234
#: Lloyd iterations of the k-means (the ``asmk`` package's setting).
KMEANS_ITERATIONS = 10


def codebook_digest(centroids: np.ndarray) -> str:
    """Short content hash of the centroids: ties an inverted-file snapshot to its codebook."""
    return hashlib.blake2b(np.ascontiguousarray(centroids, dtype=np.float32).tobytes(), digest_size=8).hexdigest()


def load_codebook_file(path: str | Path, dim: int | None = None) -> np.ndarray:
    """Centroids from a ``.npy`` (``K x D``) or ``.npz`` (array ``centroids``, or its
    only array) file; ``dim`` checks the descriptor dimension."""
    p = Path(path)
    if not p.exists():
        raise ConsistError(f"{path}: no such codebook file")
    try:
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                names = loaded.files
                key = "centroids" if "centroids" in names else (names[0] if len(names) == 1 else None)
                if key is None:
                    raise ConsistError(f"{path}: .npz codebook needs an array named 'centroids' (found {', '.join(names)})")
                arr = loaded[key]
        else:
            arr = loaded
    except ConsistError:
        raise
    except Exception as exc:
        raise ConsistError(f"{path}: not a .npy/.npz codebook ({type(exc).__name__}: {exc})") from exc
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[0] < 1 or not np.issubdtype(arr.dtype, np.number):
        raise ConsistError(f"{path}: a codebook is a K x D array of centroids, got shape {arr.shape} {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ConsistError(f"{path}: codebook centroids are {arr.shape[1]}-d, the descriptors are {dim}-d")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ConsistError(f"{path}: codebook has non-finite values")
    return arr


def codebook_from_array(centroids: Any) -> np.ndarray:
    """Given centroids as a contiguous float32 ``K x D`` array (checked)."""
    arr = np.ascontiguousarray(np.asarray(centroids), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ConsistError(f"a codebook is a K x D array of centroids, got shape {arr.shape}")
    return arr


def kmeans(points: np.ndarray, k: int) -> np.ndarray:
    """``k`` centroids of ``points`` (faiss k-means on the CPU, :data:`KMEANS_ITERATIONS`
    iterations, seed :data:`KMEANS_SEED`): what ``asmk.codebook.Codebook.train`` does,
    with the seed set here rather than left to faiss."""
    import faiss

    points = np.ascontiguousarray(points, dtype=np.float32)
    clus = faiss.Clustering(points.shape[1], int(k))
    clus.verbose = False
    clus.niter = KMEANS_ITERATIONS
    clus.seed = KMEANS_SEED
    clus.train(points, faiss.IndexFlatL2(points.shape[1]))
    return np.asarray(faiss.vector_float_to_array(clus.centroids), dtype=np.float32).reshape(clus.k, clus.d)


def train_centroids(pool: Sequence[Sample], store: Store, extractor: FeatureExtractor, params: AsmkParams, progress: Progress | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Centroids trained on at most ``params.train_descriptors`` descriptors sampled
    evenly over ``pool``'s images, and how they were made (the codebook's meta).

    The images are visited in id order: a store filled by parallel workers holds them in
    the order the workers finished, and the codebook must not depend on that."""
    pool = sorted(pool, key=lambda s: s.id)
    rng = np.random.default_rng(params.seed)
    per_image = max(1, -(-params.train_descriptors // max(1, len(pool))))
    # one buffer filled in place, not one small array per image concatenated at the
    # end: thousands of small arrays fragment the heap, and the parent kept the whole
    # training set's worth of it (~130 MB) for the rest of the audit
    train: np.ndarray | None = None
    total = 0
    used = 0
    images = 0
    for sample in pool:
        if progress:
            progress(1)
        try:
            feats = features_for(sample, store, extractor)
        except ImageError as exc:
            log.warning("asmk_image_unreadable", sample=sample.id, error=str(exc))
            continue
        n = len(feats)
        if not n:
            continue
        images += 1
        total += n
        des = np.asarray(feats.descriptors, dtype=np.float32)
        if train is None:
            train = np.empty((per_image * len(pool), des.shape[1]), dtype=np.float32)
        take = des if n <= per_image else des[np.sort(rng.choice(n, per_image, replace=False))]
        train[used : used + len(take)] = take
        used += len(take)
        del feats, des, take
    if train is None or used == 0:
        raise ConsistError(f"{getattr(store, 'uri', store)}: no local features to train an ASMK codebook on (no readable image with keypoints)")
    train = train[:used]
    size = params.codebook_size or default_codebook_size(total, cap=params.max_codebook_size)
    size = min(size, len(train))
    t0 = time.perf_counter()
    centroids = kmeans(train, int(size))
    log.info("asmk_codebook_trained", words=size, descriptors=len(train), images=images, seconds=round(time.perf_counter() - t0, 2))
    meta = {"source": "trained", "trained_on_images": images, "trained_on_descriptors": len(train), "descriptors_seen": int(total)}
    return centroids, meta
