"""Instance retrieval without learned weights: ASMK over the cached local features,
and spatial re-ranking of its short-list.

ASMK, the Aggregated Selective Match Kernel (Tolias, Avrithis & Jégou, ICCV 2013 /
IJCV 2016), is the standard weight-free retrieval for local features: descriptors
are quantised to a visual codebook (k-means), the residuals of one image that fall
into the same visual word are summed and binarised (ASMK*), and two images are
compared word by word with a *selective* kernel ``sim**alpha`` (alpha 3, threshold
0) that keeps only confident word matches. We use the ``asmk`` package
(Tolias, Jenicek & Chum, ECCV 2020: the implementation people know from
``HOW``/``FIRe``) for quantising to the codebook, the kernel and the inverted file,
with its published settings (binary residuals; alpha 3; threshold 0; no idf; multiple
assignment 1 on the database side) except the query side's multiple assignment, 3
instead of 5 (see :class:`AsmkParams`); the codebook's k-means is faiss's, as in that
package, with its seed pinned (:data:`KMEANS_SEED`).

One module per job:

* :mod:`~consist_spatial.asmk.params`: :class:`AsmkParams`, the default codebook size;
* :mod:`~consist_spatial.asmk.artefacts`: where and how the index is kept in the store;
* :mod:`~consist_spatial.asmk.detect`: which extractor a stored index was built with;
* :mod:`~consist_spatial.asmk.codebook`: training (seeded) or loading the centroids;
* :mod:`~consist_spatial.asmk.aggregate`: one image's descriptors -> per-word vectors;
* :mod:`~consist_spatial.asmk.query`: a query's features (restricted to its region);
* :mod:`~consist_spatial.asmk.index`: :class:`AsmkIndex`, kept in step with the
  store's history (a :class:`consist.stores.derived.DerivedIndex`);
* :mod:`~consist_spatial.asmk.cache`: the one copy per store in this process;
* :mod:`~consist_spatial.asmk.retriever`: the ``asmk`` retriever, :func:`open_asmk_index`,
  :func:`update_asmk_index`;
* :mod:`~consist_spatial.asmk.rerank`: spatial re-ranking of the short-list.
"""

from __future__ import annotations

from consist.stores.derived import SyncReport
from consist_spatial.asmk.aggregate import aggregate_residuals
from consist_spatial.asmk.artefacts import ASMK_SAMPLE_ID, codebook_kind, ivf_kind
from consist_spatial.asmk.codebook import KMEANS_SEED, load_codebook_file
from consist_spatial.asmk.detect import detect_extractor
from consist_spatial.asmk.index import AsmkIndex
from consist_spatial.asmk.params import DEFAULT_MAX_CODEBOOK_SIZE, AsmkParams, default_codebook_size
from consist_spatial.asmk.query import query_features
from consist_spatial.asmk.rerank import DEFAULT_RERANK_DEPTH, Reranked, spatial_config_for, spatial_rerank
from consist_spatial.asmk.retriever import AsmkRetriever, open_asmk_index, update_asmk_index

__all__ = [
    "ASMK_SAMPLE_ID",
    "DEFAULT_MAX_CODEBOOK_SIZE",
    "DEFAULT_RERANK_DEPTH",
    "KMEANS_SEED",
    "AsmkIndex",
    "AsmkParams",
    "AsmkRetriever",
    "Reranked",
    "SyncReport",
    "aggregate_residuals",
    "codebook_kind",
    "default_codebook_size",
    "detect_extractor",
    "ivf_kind",
    "load_codebook_file",
    "open_asmk_index",
    "query_features",
    "spatial_config_for",
    "spatial_rerank",
    "update_asmk_index",
]
