"""Instance retrieval without learned weights: ASMK over the cached local features,
and spatial re-ranking of its short-list.

ASMK, the Aggregated Selective Match Kernel (Tolias, Avrithis & Jégou, ICCV 2013 /
IJCV 2016), is the standard weight-free retrieval for local features: descriptors
are quantised to a visual codebook (k-means), the residuals of one image that fall
into the same visual word are summed and binarised (ASMK*), and two images are
compared word by word with a *selective* kernel ``sim**alpha`` (alpha 3, threshold
0) that keeps only confident word matches. We use the ``asmk`` package
(Tolias, Jenicek & Chum, ECCV 2020: the implementation people know from
``HOW``/``FIRe``) for the codebook, the kernel and the inverted file, with its
published settings (binary residuals; alpha 3; threshold 0; no idf; multiple
assignment 1 on the database side) except the query side's multiple assignment,
3 instead of 5 (see :class:`AsmkParams`).

What lives where (all in the store, as artefacts of the pseudo-sample ``__asmk__``):

* ``asmk/codebook/<extractor>`` (e.g. ``asmk/codebook/sift-rootsift-1024-2048``):
  the centroids (``.npz``, no pickle) and how they were made (the extractor's
  parameters, images and descriptors trained on, or the file they came from);
* ``asmk/ivf/<extractor>``: a snapshot of the inverted file, with the sample id and
  image URI behind every indexed image and the store history sequence number it
  reflects.

Incremental: the index follows the store's history. Each :meth:`AsmkIndex.sync`
(done by the retriever before every query) reads the history entries newer than
the snapshot, adds the samples that appeared or got other pixels (their aggregated
descriptors are appended to the inverted file, from the cached features: no
retraining) and hides deleted ones. The codebook is retrained only explicitly
(``consist index --retrain``, :func:`update_asmk_index` with ``retrain=True``) or
when ``consist index`` finds that the store has grown ``retrain_growth`` (4) times
beyond the images the codebook was trained on; the retriever never retrains at
query time (it logs once that a retrain is due). A codebook loaded from a file is
never retrained automatically.

Codebook size: ``AsmkParams.codebook_size``, or by default
``min(max_codebook_size, n_descriptors // 50)`` (at least 16): a 65k codebook is
usual for millions of descriptors (Tolias et al.), but a small store cannot fill it;
~50 descriptors per word keeps the k-means meaningful and words selective.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import structlog

from consist.errors import ConsistError, ImageError, StoreError
from consist.records import Neighbour, Query, Region, Sample
from consist_spatial.features import FeatureExtractor, LocalFeatures, SiftExtractor, features_for

__all__ = [
    "ASMK_SAMPLE_ID",
    "DEFAULT_MAX_CODEBOOK_SIZE",
    "DEFAULT_RERANK_DEPTH",
    "AsmkParams",
    "AsmkIndex",
    "AsmkRetriever",
    "Reranked",
    "SyncReport",
    "default_codebook_size",
    "detect_extractor",
    "load_codebook_file",
    "open_asmk_index",
    "update_asmk_index",
    "query_features",
    "spatial_rerank",
    "spatial_config_for",
]

log = structlog.get_logger("consist.spatial")

#: The pseudo sample id the index's artefacts are kept under.
ASMK_SAMPLE_ID = "__asmk__"
#: Layout version of the codebook and inverted-file artefacts.
FORMAT_VERSION = 1
#: Cap of the default codebook size (see the module docstring).
DEFAULT_MAX_CODEBOOK_SIZE = 1024
#: How many of the best ASMK results :func:`spatial_rerank` verifies (revisitop's
#: spatial re-ranking baselines verify the top 100).
DEFAULT_RERANK_DEPTH = 100

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
        seed: sampling of training descriptors.
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


@attrs.frozen
class SyncReport:
    """What one :meth:`AsmkIndex.sync` or :meth:`AsmkIndex.add` changed."""

    added: int = 0
    removed: int = 0
    failed: tuple[tuple[str, str], ...] = ()  # (sample id, one-line reason)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


# ------------------------------------------------------------------ extractors


def _tag(extractor: FeatureExtractor) -> str:
    kind = extractor.kind
    return kind[len("features/"):] if kind.startswith("features/") else kind.replace("/", "-")


def _extractor_spec(extractor: FeatureExtractor) -> dict[str, Any]:
    """What rebuilds ``extractor`` (kept in the codebook artefact)."""
    if isinstance(extractor, SiftExtractor):
        return {"type": "sift", **attrs.asdict(extractor)}
    name = getattr(extractor, "name", None)
    if name and attrs.has(type(extractor)):
        fields = attrs.asdict(extractor)
        return {"type": "learned", "name": name, **{k: fields[k] for k in ("max_keypoints", "max_side", "detection_threshold") if k in fields}}
    return {"type": type(extractor).__name__, "kind": extractor.kind}


def _extractor_from_spec(spec: dict[str, Any]) -> FeatureExtractor | None:
    if spec.get("type") == "sift":
        fields = {a.name for a in attrs.fields(SiftExtractor)}
        return SiftExtractor(**{k: v for k, v in spec.items() if k in fields})
    if spec.get("type") == "learned":
        try:
            from consist_spatial.learned import make_extractor
        except ImportError:  # pragma: no cover - the learned module ships with the plugin
            return None
        return make_extractor(spec["name"], **{k: spec[k] for k in ("max_keypoints", "max_side", "detection_threshold") if k in spec})
    return None


def _config_extractor(cfg: Any) -> FeatureExtractor:
    """The feature extractor a :class:`SpatialConfig` selects."""
    fe = getattr(cfg, "feature_extractor", None)
    return fe if fe is not None else cfg.extractor


def _read_npz(data: bytes, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except Exception as exc:  # zip/npy/json errors: one clear error
        raise StoreError(f"{what}: unreadable ASMK artefact ({type(exc).__name__}: {exc}); rebuild it with consist index --retrain") from exc
    if meta.get("version") != FORMAT_VERSION:
        raise StoreError(f"{what}: ASMK artefact format {meta.get('version')} (this version reads {FORMAT_VERSION}); rebuild it with consist index --retrain")
    return meta, arrays


def _write_npz(meta: dict[str, Any], **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def codebook_kind(extractor: FeatureExtractor) -> str:
    return f"asmk/codebook/{_tag(extractor)}"


def ivf_kind(extractor: FeatureExtractor) -> str:
    return f"asmk/ivf/{_tag(extractor)}"


def detect_extractor(store: Any) -> FeatureExtractor | None:
    """The extractor of the store's ASMK codebook, else of its cached SIFT features
    (one kind only); ``None`` when neither tells.

    With several codebooks (indexes built with different extractor settings), the
    default :class:`SiftExtractor`'s wins if present; otherwise it is an error, and
    the caller must say which extractor to use.
    """
    kinds_of = getattr(store, "artefact_kinds", None)
    if kinds_of is None:
        return None
    all_kinds = kinds_of()
    kinds = sorted(k for k in all_kinds if k.startswith("asmk/codebook/"))
    if not kinds:
        return _sift_from_feature_kinds(all_kinds)
    default = SiftExtractor()
    if len(kinds) > 1 and codebook_kind(default) in kinds:
        return default
    if len(kinds) > 1:
        raise ConsistError(f"{store.uri}: several ASMK indexes ({', '.join(kinds)}); say which extractor to use")
    data = store.get_artefact(ASMK_SAMPLE_ID, kinds[0])
    if data is None:
        return None
    meta, _ = _read_npz(data, f"{store.uri} {kinds[0]}")
    ext = _extractor_from_spec(meta.get("extractor", {}))
    if ext is None:
        raise ConsistError(f"{store.uri}: the ASMK index {kinds[0]} was built with extractor {meta.get('extractor')}; pass that extractor explicitly")
    return ext


_SIFT_KIND = re.compile(r"features/sift(-rootsift)?-(full|\d+)-(\d+)")


def _sift_from_feature_kinds(kinds: Iterable[str]) -> SiftExtractor | None:
    """The SIFT extractor behind the one ``features/sift...`` cache of a store (a store
    indexed with ``--no-asmk``), so that a query reuses its cached features."""
    found = []
    for kind in kinds:
        m = _SIFT_KIND.fullmatch(kind)
        if m:
            ext = SiftExtractor(max_side=None if m.group(2) == "full" else int(m.group(2)), max_keypoints=int(m.group(3)), root=bool(m.group(1)))
            if ext.kind == kind:
                found.append(ext)
    return found[0] if len(found) == 1 else None


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


# ----------------------------------------------------------------- features


def _inside(region: Region, xy: np.ndarray) -> np.ndarray:
    import shapely
    from shapely.geometry import Polygon

    if len(xy) == 0:
        return np.zeros(0, dtype=bool)
    poly = Polygon(region.vertices)
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    return shapely.contains_xy(poly, xy[:, 0], xy[:, 1]) | shapely.intersects_xy(poly.boundary, xy[:, 0], xy[:, 1])


def query_features(query: Query, store: Any, extractor: FeatureExtractor) -> LocalFeatures:
    """The query's features restricted to its region (if any).

    A query whose id is a stored sample with the same uri (leave-one-out, a stored
    image asked about again) reads that sample's cached features.
    """
    feats = None
    if query.image is None and query.uri is not None and store is not None:
        stored = store.get(query.id)
        if stored is not None and stored.uri == query.uri:
            feats = features_for(stored, store, extractor)
    if feats is None:
        feats = features_for(query, store, extractor)
    if query.region is not None and len(feats):
        feats = feats.subset(_inside(query.region, feats.keypoints))
    return feats


# ----------------------------------------------------------------------- index


def _digest(centroids: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(centroids, dtype=np.float32).tobytes(), digest_size=8).hexdigest()


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


class AsmkIndex:
    """An ASMK codebook and inverted file over the samples of one store.

    Build one with :meth:`train` (or :func:`open_asmk_index` / :func:`update_asmk_index`),
    keep it current with :meth:`sync`, persist with :meth:`save`, query with
    :meth:`search` (descriptors) or :meth:`retrieve` (a query). Thread-safe.
    """

    def __init__(self, centroids: np.ndarray, extractor: FeatureExtractor, params: AsmkParams | None = None, *, codebook_meta: dict[str, Any] | None = None) -> None:
        from asmk import codebook as cdb_pkg
        from asmk import index as idx_pkg
        from asmk import inverted_file as ivf_pkg
        from asmk import kernel as kern_pkg

        self.extractor = extractor
        self.params = params or AsmkParams()
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.codebook = cdb_pkg.Codebook(idx_pkg.initialize_index(gpu_id=None), size=int(centroids.shape[0]))
        self.codebook.index(centroids)
        self.kernel = kern_pkg.ASMKKernel(self.codebook, binary=self.params.binary)
        self.ivf = ivf_pkg.IVF.initialize_empty(codebook_size=self.codebook.size, use_idf=self.params.use_idf)
        self.digest = _digest(centroids)
        self.codebook_meta = dict(codebook_meta or {})
        self.ids: list[str] = []  # imid -> sample id
        self.sources: list[str] = []  # imid -> uri indexed
        self.active: list[bool] = []
        self.current: dict[str, int] = {}  # sample id -> its live imid
        self.last_seq: int | None = None  # store history the index reflects
        self.unsaved = 0  # samples added or hidden since the last save or load
        self.lock = threading.RLock()
        self._warned_retrain = False

    # ------------------------------------------------------------ properties

    @property
    def size(self) -> int:
        """Number of visual words."""
        return int(self.codebook.size)

    @property
    def dim(self) -> int:
        return int(self.codebook.centroids.shape[1])

    def __len__(self) -> int:
        """Number of samples currently indexed."""
        return len(self.current)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self.current

    def stats(self) -> dict[str, Any]:
        """JSON-able description (for ``consist index --json``)."""
        return {
            "codebook": codebook_kind(self.extractor),
            "words": self.size,
            "digest": self.digest,
            "source": self.codebook_meta.get("source", "trained"),
            "trained_on_images": self.codebook_meta.get("trained_on_images"),
            "trained_on_descriptors": self.codebook_meta.get("trained_on_descriptors"),
            "images": len(self.current),
            "stale_entries": len(self.ids) - len(self.current),
            "vectors": int(self.ivf.counts.sum()),
            "binary": self.params.binary,
        }

    def needs_retrain(self) -> bool:
        """The store grew ``retrain_growth`` times past what the codebook was trained on."""
        growth = self.params.retrain_growth
        trained = self.codebook_meta.get("trained_on_images")
        if not growth or self.codebook_meta.get("source", "trained") != "trained" or not trained:
            return False
        return len(self.current) >= growth * trained

    # -------------------------------------------------------------- training

    @classmethod
    def train(
        cls,
        store: Any,
        extractor: FeatureExtractor | None = None,
        params: AsmkParams | None = None,
        *,
        codebook: np.ndarray | str | Path | None = None,
        samples: Iterable[Sample] | None = None,
        progress: Progress | None = None,
        save: bool = True,
    ) -> AsmkIndex:
        """Train a codebook on the store's images (or take ``codebook``: centroids or
        a file) and index every sample with an image. ``samples`` limits both to
        those (the next :meth:`sync` then adds the store's other samples).
        ``progress(n)`` is called as images are read (twice per image when
        training: sample, then index)."""
        extractor = extractor or SiftExtractor()
        params = params or AsmkParams()
        seq = _newest_seq(store)
        pool = [s for s in (samples if samples is not None else store.samples()) if s.uri is not None]
        if isinstance(codebook, (str, Path)):
            source = f"file:{codebook}"
            centroids = load_codebook_file(codebook)
            meta: dict[str, Any] = {"source": source}
        elif codebook is not None:
            centroids = load_codebook_file_array(codebook)
            meta = {"source": "given"}
        else:
            centroids, meta = _train_centroids(pool, store, extractor, params, progress)
        meta.update(extractor=_extractor_spec(extractor), extractor_kind=extractor.kind, created=time.time())
        index = cls(centroids, extractor, params, codebook_meta=meta)
        # given samples only: the next sync compares the whole store and adds the rest
        index.last_seq = seq if samples is None else None
        index.add(pool, store, progress=progress)
        if save:
            index.save(store)
        return index

    # ------------------------------------------------------------------ add

    def _aggregate(self, descriptors: np.ndarray, multiple_assignment: int) -> tuple[np.ndarray, np.ndarray]:
        des = np.ascontiguousarray(descriptors, dtype=np.float32)
        if des.ndim != 2 or des.shape[1] != self.dim:
            raise ConsistError(f"ASMK codebook {self.digest} is {self.dim}-d, descriptors are {des.shape[-1] if des.ndim == 2 else des.shape}-d")
        ma = max(1, min(multiple_assignment, self.size))
        _des, word_ids = self.codebook.quantize(des, multiple_assignment=ma)
        return aggregate_residuals(des, word_ids, self.codebook.centroids, binary=self.kernel.binary)

    def add(self, samples: Iterable[Sample], store: Any = None, *, progress: Progress | None = None, chunk: int = 64) -> SyncReport:
        """Index ``samples`` (features from the store's cache, extracted if missing).

        A sample already indexed with the same uri is left alone; with another uri
        its old entry is hidden and the new pixels indexed. Unreadable images are
        reported in the result and skipped.
        """
        added = removed = 0
        failed: list[tuple[str, str]] = []
        batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def flush() -> None:
            if batch:
                des = np.concatenate([b[0] for b in batch])
                words = np.concatenate([b[1] for b in batch])
                imids = np.concatenate([b[2] for b in batch])
                self.ivf.add(des, words, imids)
                batch.clear()

        with self.lock:
            for sample in samples:
                if progress:
                    progress(1)
                if sample.uri is None:
                    continue
                old = self.current.get(sample.id)
                if old is not None and self.sources[old] == sample.uri:
                    continue
                try:
                    feats = features_for(sample, store, self.extractor)
                except ImageError as exc:
                    failed.append((sample.id, str(exc)))
                    log.warning("asmk_image_unreadable", sample=sample.id, error=str(exc))
                    continue
                if old is not None:
                    self.active[old] = False
                    removed += 1
                imid = len(self.ids)
                self.ids.append(sample.id)
                self.sources.append(sample.uri)
                self.active.append(True)
                self.current[sample.id] = imid
                added += 1
                if len(feats):
                    ades, words = self._aggregate(feats.descriptors, 1)
                    if len(words):
                        batch.append((ades, words, np.full(len(words), imid, dtype=np.int64)))
                if len(batch) >= chunk:
                    flush()
            flush()
            self.unsaved += added + removed
        return SyncReport(added=added, removed=removed, failed=tuple(failed))

    def remove(self, sample_ids: Iterable[str]) -> int:
        """Hide samples from results (the inverted file keeps their entries until a rebuild)."""
        n = 0
        with self.lock:
            for sid in sample_ids:
                imid = self.current.pop(sid, None)
                if imid is not None:
                    self.active[imid] = False
                    n += 1
            self.unsaved += n
        return n

    # ----------------------------------------------------------------- sync

    def sync(self, store: Any, *, progress: Progress | None = None) -> SyncReport:
        """Bring the index up to date with the store: add new samples or samples
        with new pixels, hide deleted ones. Reads only the history entries newer
        than the index (stores without a history are compared in full)."""
        with self.lock:
            newest = _newest_seq(store)
            if newest is not None and self.last_seq is not None and newest <= self.last_seq:
                return SyncReport()
            if newest is None or self.last_seq is None:
                live = {s.id: s for s in store.samples() if s.uri is not None}
                gone = [sid for sid in self.current if sid not in live]
                todo: list[Sample] = [s for sid, s in live.items() if sid not in self.current or self.sources[self.current[sid]] != s.uri]
            else:
                changed = _changed_since(store, self.last_seq)
                got = store.get_many(changed) if changed else []
                gone = [sid for sid, s in zip(changed, got) if (s is None or s.uri is None) and sid in self.current]
                todo = [s for s in got if s is not None and s.uri is not None and (s.id not in self.current or self.sources[self.current[s.id]] != s.uri)]
            removed = self.remove(gone)
            report = self.add(todo, store, progress=progress)
            self.last_seq = newest
            if report.added or removed:
                log.info("asmk_synced", added=report.added, removed=removed + report.removed, failed=len(report.failed))
            if self.needs_retrain() and not self._warned_retrain:
                self._warned_retrain = True
                log.warning("asmk_retrain_due", images=len(self.current), trained_on=self.codebook_meta.get("trained_on_images"), hint="run consist index (it retrains) or update_asmk_index(retrain=True)")
            return SyncReport(added=report.added, removed=removed + report.removed, failed=report.failed)

    # --------------------------------------------------------------- search

    def scores(self, descriptors: np.ndarray) -> np.ndarray:
        """ASMK similarity of the descriptors to every indexed image (by imid)."""
        n = len(self.ids)
        out = np.zeros(n, dtype=np.float64)
        if len(descriptors) == 0 or self.ivf.n_images == 0:
            return out
        p = self.params
        ades, words = self._aggregate(descriptors, p.multiple_assignment)

        def similarity(*x: Any) -> Any:
            return self.kernel.similarity(*x, alpha=p.alpha, similarity_threshold=p.similarity_threshold)

        with self.lock:
            ranks, sc = self.ivf.search(ades, words, similarity_func=similarity, topk=None)
        ranks = np.asarray(ranks, dtype=np.int64)
        keep = ranks < n
        out[ranks[keep]] = sc[keep]
        return out

    def search(self, descriptors: np.ndarray, k: int | None = 10, *, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """``(sample id, score)`` of the ``k`` best live samples (score > 0), best first."""
        with self.lock:
            scores = self.scores(descriptors)
            active = np.asarray(self.active, dtype=bool)
            if len(active):
                scores[~active] = 0.0
            for sid in exclude:
                imid = self.current.get(sid)
                if imid is not None:
                    scores[imid] = 0.0
            order = np.argsort(-scores, kind="stable")
            order = order[scores[order] > 0]
            if k is not None:
                order = order[:k]
            return [(self.ids[i], float(scores[i])) for i in order]

    def retrieve(self, query: Query, store: Any, k: int, *, features: LocalFeatures | None = None) -> list[Neighbour]:
        """Neighbours of a query, best first (``similarity`` = ASMK score)."""
        feats = features if features is not None else query_features(query, store, self.extractor)
        hits = self.search(feats.descriptors, k + 8, exclude=(query.id,))
        found = store.get_many([sid for sid, _ in hits]) if hits else []
        out: list[Neighbour] = []
        for (_sid, score), sample in zip(hits, found):
            if sample is None:  # deleted since the last sync
                continue
            out.append(Neighbour(sample=sample, similarity=score, rank=len(out), source="asmk"))
            if len(out) >= k:
                break
        return out

    # ---------------------------------------------------------- persistence

    def save(self, store: Any) -> None:
        """Write the codebook (if not there yet) and a snapshot of the inverted file."""
        with self.lock:
            cb_kind = codebook_kind(self.extractor)
            stored = store.get_artefact(ASMK_SAMPLE_ID, cb_kind)
            write_codebook = stored is None
            if stored is not None:
                meta, _ = _read_npz(stored, f"{store.uri} {cb_kind}")
                write_codebook = meta.get("digest") != self.digest
            with store.transaction():
                if write_codebook:
                    meta = {**self.codebook_meta, "version": FORMAT_VERSION, "digest": self.digest, "size": self.size, "dim": self.dim}
                    store.put_artefact(ASMK_SAMPLE_ID, cb_kind, _write_npz(meta, centroids=self.codebook.centroids))
                store.put_artefact(ASMK_SAMPLE_ID, ivf_kind(self.extractor), self._ivf_bytes())
            self.unsaved = 0
        _remember(store, self)

    def _ivf_bytes(self) -> bytes:
        ivf = self.ivf
        counts = np.asarray(ivf.counts, dtype=np.int64)
        vec_parts = [ivf.ivf_vecs[w][:c] for w, c in enumerate(counts) if c]
        id_parts = [ivf.ivf_image_ids[w][:c] for w, c in enumerate(counts) if c]
        width = (self.dim + 31) // 32 if self.params.binary else self.dim
        vecs = np.concatenate(vec_parts) if vec_parts else np.zeros((0, width), np.uint32 if self.params.binary else np.float32)
        imids = np.concatenate(id_parts).astype(np.int64) if id_parts else np.zeros(0, np.int64)
        meta = {
            "version": FORMAT_VERSION,
            "codebook_digest": self.digest,
            "binary": self.params.binary,
            "use_idf": self.params.use_idf,
            "last_seq": self.last_seq,
            "n_images": int(ivf.n_images),
            "ids": self.ids,
            "sources": self.sources,
        }
        return _write_npz(
            meta,
            counts=counts,
            vecs=vecs,
            imids=imids,
            active=np.asarray(self.active, dtype=np.uint8),
            norm_factor=np.asarray(ivf.norm_factor, dtype=np.float64),
            idf=np.asarray(ivf.idf, dtype=np.float32),
        )

    def _restore_ivf(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        from asmk import inverted_file as ivf_pkg

        counts = arrays["counts"].astype(np.int64)
        if len(counts) != self.size:
            raise StoreError(f"ASMK inverted file has {len(counts)} words, the codebook {self.size}")
        splits = np.cumsum(counts)[:-1]
        vecs = np.split(arrays["vecs"], splits)
        imids = np.split(arrays["imids"], splits)
        self.ivf = ivf_pkg.IVF(
            norm_factor=arrays["norm_factor"].astype(np.float64),
            n_images=int(meta["n_images"]),
            ivf_vecs=[v if c else None for v, c in zip(vecs, counts)],
            ivf_image_ids=[i if c else None for i, c in zip(imids, counts)],
            counts=counts.astype(np.int32),
            idf=arrays["idf"].astype(np.float32),
            imid_offset=0,
            use_idf=bool(meta["use_idf"]),
        )
        self.ids = list(meta["ids"])
        self.sources = list(meta["sources"])
        self.active = [bool(a) for a in arrays["active"]]
        self.current = {sid: i for i, sid in enumerate(self.ids) if self.active[i]}
        self.last_seq = meta.get("last_seq")

    @classmethod
    def load(cls, store: Any, extractor: FeatureExtractor | None = None, params: AsmkParams | None = None, *, progress: Progress | None = None) -> AsmkIndex | None:
        """The store's index for ``extractor`` (default: :func:`detect_extractor`, else
        SIFT defaults); ``None`` when it has no codebook. A missing or mismatched
        inverted-file snapshot is rebuilt from the store (no retraining)."""
        extractor = extractor or detect_extractor(store) or SiftExtractor()
        params = params or AsmkParams()
        cb_kind = codebook_kind(extractor)
        data = store.get_artefact(ASMK_SAMPLE_ID, cb_kind)
        if data is None:
            return None
        meta, arrays = _read_npz(data, f"{store.uri} {cb_kind}")
        index = cls(arrays["centroids"], extractor, params, codebook_meta={k: v for k, v in meta.items() if k not in ("version", "digest", "size", "dim")})
        snap = store.get_artefact(ASMK_SAMPLE_ID, ivf_kind(extractor))
        if snap is not None:
            imeta, iarrays = _read_npz(snap, f"{store.uri} {ivf_kind(extractor)}")
            if imeta.get("codebook_digest") == index.digest and bool(imeta.get("binary")) == params.binary and bool(imeta.get("use_idf")) == params.use_idf:
                index._restore_ivf(imeta, iarrays)
                index.unsaved = 0
                return index
            log.info("asmk_ivf_rebuild", reason="snapshot made with another codebook or parameters")
        index.last_seq = _newest_seq(store)
        index.add([s for s in store.samples() if s.uri is not None], store, progress=progress)
        return index


def load_codebook_file_array(centroids: Any) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(centroids), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ConsistError(f"a codebook is a K x D array of centroids, got shape {arr.shape}")
    return arr


def _train_centroids(pool: Sequence[Sample], store: Any, extractor: FeatureExtractor, params: AsmkParams, progress: Progress | None) -> tuple[np.ndarray, dict[str, Any]]:
    from asmk import codebook as cdb_pkg
    from asmk import index as idx_pkg

    rng = np.random.default_rng(params.seed)
    per_image = max(1, -(-params.train_descriptors // max(1, len(pool))))
    parts: list[np.ndarray] = []
    total = 0
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
        parts.append(des if n <= per_image else des[np.sort(rng.choice(n, per_image, replace=False))])
    if not parts:
        raise ConsistError(f"{getattr(store, 'uri', store)}: no local features to train an ASMK codebook on (no readable image with keypoints)")
    train = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    size = params.codebook_size or default_codebook_size(total, cap=params.max_codebook_size)
    size = min(size, len(train))
    t0 = time.perf_counter()
    cdb = cdb_pkg.Codebook(idx_pkg.initialize_index(gpu_id=None), size=int(size))
    cdb.train(train)
    log.info("asmk_codebook_trained", words=size, descriptors=len(train), images=images, seconds=round(time.perf_counter() - t0, 2))
    meta = {"source": "trained", "trained_on_images": images, "trained_on_descriptors": int(len(train)), "descriptors_seen": int(total)}
    return np.asarray(cdb.centroids, dtype=np.float32), meta


# ---------------------------------------------------------------- history


def _newest_seq(store: Any) -> int | None:
    history = getattr(store, "history", None)
    if history is None:
        return None
    entries = history(limit=1)
    return int(entries[0].seq) if entries else 0


def _changed_since(store: Any, since: int) -> list[str]:
    """Ids of the samples with history entries newer than ``since``, oldest change first."""
    entries = store.history(since=since, limit=None, newest_first=False)
    return list(dict.fromkeys(e.sample_id for e in entries))


# ------------------------------------------------------------ entry points


def open_asmk_index(store: Any, extractor: FeatureExtractor | None = None, params: AsmkParams | None = None, *, build: bool = True, progress: Progress | None = None) -> AsmkIndex:
    """The store's ASMK index, synced with the store; trained now if it has none
    and ``build`` (else :class:`ConsistError`)."""
    index = AsmkIndex.load(store, extractor, params, progress=progress)
    if index is None:
        if not build:
            raise ConsistError(f"{store.uri}: no ASMK index; build it with: consist index DATASET --store {store.uri}")
        index = AsmkIndex.train(store, extractor, params, progress=progress, save=_writable(store))
        return index
    index.sync(store, progress=progress)
    return index


def update_asmk_index(
    store: Any,
    extractor: FeatureExtractor | None = None,
    params: AsmkParams | None = None,
    *,
    codebook: str | Path | np.ndarray | None = None,
    retrain: bool = False,
    progress: Progress | None = None,
) -> tuple[AsmkIndex, dict[str, Any]]:
    """What ``consist index`` does after indexing: load the index and add what is
    new, or (re)train when there is none, when asked (``retrain``, a ``codebook``
    file), or when the store grew ``retrain_growth`` times; then save.

    Returns the index and a JSON-able report (``action``: ``trained``, ``loaded``,
    ``retrained``, ``updated`` or ``unchanged``; ``added``; ``failed``).
    """
    params = params or AsmkParams()
    extractor = extractor or SiftExtractor()
    index = None if (retrain or codebook is not None) else AsmkIndex.load(store, extractor, params, progress=progress)
    if index is None:
        existed = store.get_artefact(ASMK_SAMPLE_ID, codebook_kind(extractor)) is not None
        index = AsmkIndex.train(store, extractor, params, codebook=codebook, progress=progress)
        action = "loaded" if codebook is not None else ("retrained" if existed else "trained")
        return index, {"action": action, "added": len(index), "failed": [], **index.stats()}
    report = index.sync(store, progress=progress)
    if index.needs_retrain():
        trained_on = index.codebook_meta.get("trained_on_images")
        index = AsmkIndex.train(store, extractor, params, progress=progress)
        return index, {"action": "retrained", "reason": f"store grew from {trained_on} to {len(index)} images", "added": len(index), "failed": [], **index.stats()}
    index.save(store)
    action = "updated" if report.changed else "unchanged"
    return index, {"action": action, "added": report.added, "failed": [{"id": sid, "error": err} for sid, err in report.failed], **index.stats()}


def _writable(store: Any) -> bool:
    return not getattr(store, "readonly", False)


# -------------------------------------------------------------- retriever

# store -> {(extractor kind, params): index}; shared by every AsmkRetriever, so that
# the engines and commands of one process load an index once per store.
# ("detected" -> the extractor detect_extractor found for the store's default retriever)
_INDEXES: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
_INDEXES_LOCK = threading.Lock()


def _remember(store: Any, index: AsmkIndex) -> None:
    """Make ``index`` the one the retrievers of this process use for ``store``."""
    with _INDEXES_LOCK:
        try:
            _INDEXES.setdefault(store, {})[(index.extractor.kind, index.params)] = index
        except TypeError:
            pass


class AsmkRetriever:
    """The ``asmk`` retriever: neighbours by ASMK similarity of local features.

    Args:
        extractor: the local features (default: those of the store's ASMK index,
            else SIFT defaults, i.e. the ``spatial`` checker's, so the features
            cached for retrieval serve verification too).
        params: :class:`AsmkParams`.
        auto_build: train an index on the first query when the store has none
            (True; a large store is better indexed ahead with ``consist index``).
        autosave: write the inverted-file snapshot back once the samples indexed
            or hidden since it was saved reach 2% of the index (at least 1), so a
            store that adapts with every query is not rewritten every time (True;
            ignored for read-only stores). Until then, and without autosave, a new
            process catches up from the store's history when it loads the index.
    """

    name = "asmk"
    description = "ASMK* over cached RootSIFT (codebook trained on the store; incremental)"

    def __init__(self, extractor: FeatureExtractor | None = None, params: AsmkParams | None = None, *, auto_build: bool = True, autosave: bool = True) -> None:
        self.extractor = extractor
        self.params = params or AsmkParams()
        self.auto_build = auto_build
        self.autosave = autosave

    def index_for(self, store: Any) -> AsmkIndex:
        """The (cached) index of ``store``, synced with it."""
        with _INDEXES_LOCK:
            try:
                per_store = _INDEXES.setdefault(store, {})
            except TypeError:  # a store that cannot be weakly referenced: no cache
                per_store = {}
        extractor = self.extractor or per_store.get("detected")  # type: ignore[call-overload]
        if extractor is None:
            extractor = per_store["detected"] = detect_extractor(store) or SiftExtractor()  # type: ignore[index]
        key = (extractor.kind, self.params)
        index = per_store.get(key)
        if index is None:
            index = AsmkIndex.load(store, extractor, self.params)
            if index is None:
                if not self.auto_build:
                    raise ConsistError(f"{store.uri}: no ASMK index; build it with: consist index DATASET --store {store.uri}")
                log.warning("asmk_building_index", store=store.uri, samples=len(store), hint="index ahead of time with consist index")
                index = AsmkIndex.train(store, extractor, self.params, save=self.autosave and _writable(store))
            per_store[key] = index
        index.sync(store)  # a loaded snapshot may be older than the store
        if self.autosave and index.unsaved >= max(1, len(index) // 50) and _writable(store):
            try:
                index.save(store)
            except StoreError as exc:  # locked or read-only: the next process catches up
                log.debug("asmk_autosave_failed", store=store.uri, error=str(exc))
        return index

    def retrieve(self, query: Query, store: Any, k: int) -> list[Neighbour]:
        if store is None:
            raise ConsistError("the asmk retriever needs a store")
        if len(store) == 0:
            return []
        return self.index_for(store).retrieve(query, store, k)


# -------------------------------------------------------------- re-ranking


@attrs.frozen
class Reranked:
    """One result after spatial re-ranking.

    Attributes:
        neighbour: the sample; ``rank`` is its position after re-ranking,
            ``similarity`` the retrieval score.
        retrieval_rank: its rank before re-ranking.
        verification: the geometric verification (``None`` beyond the re-ranking
            depth or when its image could not be read).
        inlier_points: ``K x 4`` rows ``(xq, yq, xn, yn)`` of the inlier matches in
            query and neighbour pixels (for drawing).
        error: why it was not verified, when its image could not be read.
    """

    neighbour: Neighbour
    retrieval_rank: int
    verification: Any = None
    inlier_points: np.ndarray = attrs.field(factory=lambda: np.zeros((0, 4), np.float32), eq=False, repr=False)
    error: str = ""

    @property
    def verified(self) -> bool:
        return bool(self.verification is not None and self.verification.verified)

    @property
    def inliers(self) -> int:
        return 0 if self.verification is None else int(self.verification.inliers)

    @property
    def polygon(self) -> tuple[tuple[float, float], ...] | None:
        """Where the query (region) is in the neighbour: the projected region of a
        verified homography, else the inlier hull of a verified pair."""
        v = self.verification
        if v is None or not v.verified:
            return None
        return v.polygon if v.polygon is not None else v.inlier_hull

    @property
    def polygon_source(self) -> str | None:
        v = self.verification
        if self.polygon is None or v is None:
            return None
        return "projected_query_region" if v.polygon is not None else "inlier_hull"

    def to_dict(self) -> dict[str, Any]:
        s = self.neighbour.sample
        v = self.verification
        out: dict[str, Any] = {
            "rank": self.neighbour.rank,
            "id": s.id,
            "label": s.label,
            "uri": s.uri,
            "score": round(float(self.neighbour.similarity), 6),
            "retrieval_rank": self.retrieval_rank,
            "verified": self.verified,
            "inliers": self.inliers,
            "matches": None if v is None else v.matches,
            "polygon": None if self.polygon is None else [[round(x, 1), round(y, 1)] for x, y in self.polygon],
            "polygon_source": self.polygon_source,
        }
        if v is not None and not v.verified and v.reason:
            out["reason"] = v.reason
        if self.error:
            out["reason"] = self.error
        return out


def spatial_config_for(extractor: FeatureExtractor, **options: Any) -> Any:
    """A :class:`SpatialConfig` whose features are ``extractor``'s (same cache), so that
    the features cached for retrieval serve verification too."""
    from consist_spatial.checker import SpatialConfig

    known = {a.name for a in attrs.fields(SpatialConfig)}
    if isinstance(extractor, SiftExtractor):
        derived: dict[str, Any] = {"extractor": "sift", "max_side": extractor.max_side, "max_keypoints": extractor.max_keypoints, "rootsift": extractor.root}
    else:
        fields = attrs.asdict(extractor) if attrs.has(type(extractor)) else {}
        derived = {"extractor": getattr(extractor, "name", None), **{k: fields[k] for k in ("max_side", "max_keypoints", "device", "weights_dir") if k in fields}}
    derived = {k: v for k, v in derived.items() if k in known and v is not None or k == "max_side"}
    return SpatialConfig(**{**derived, **options})


def spatial_rerank(
    query: Query,
    neighbours: Sequence[Neighbour],
    store: Any,
    *,
    depth: int = DEFAULT_RERANK_DEPTH,
    checker: Any = None,
    config: Any = None,
    features: LocalFeatures | None = None,
) -> list[Reranked]:
    """Verify the query against its ``depth`` best neighbours and re-rank them:
    verified neighbours first, by pair score (:attr:`Verification.score`: inliers
    and scale/orientation-consistent matches; ties by retrieval rank), then the
    unverified ones and those beyond ``depth`` in retrieval order.

    Args:
        checker: a :class:`~consist_spatial.SpatialChecker` whose matching and
            verification are used (default one built from ``config``).
        config: a :class:`~consist_spatial.SpatialConfig` (default: the checker's).
            Its extractor should be the retriever's, so the cached features serve both.
        features: the query's features, already restricted to ``query.region``
            (computed when not given).
    """
    from consist_spatial.checker import SpatialChecker

    checker = checker or SpatialChecker(config)
    cfg = config or checker.config
    qf = features if features is not None else checker.query_features(query, store, cfg)
    ordered = sorted(neighbours, key=lambda n: n.rank)
    checked: list[Reranked] = []
    for n in ordered[: max(0, depth)]:
        try:
            v = checker.verify(qf, n.sample, store, cfg=cfg, region=query.region)
        except ImageError as exc:
            log.warning("rerank_image_unreadable", sample=n.sample.id, error=str(exc))
            checked.append(Reranked(n, n.rank, None, error=str(exc)))
            continue
        pts = np.zeros((0, 4), np.float32)
        if v.verified and len(v.inlier_matches):
            nf = features_for(n.sample, store, _config_extractor(cfg))
            m = np.asarray(v.inlier_matches, dtype=np.int64)
            pts = np.hstack([qf.keypoints[m[:, 0]], nf.keypoints[m[:, 1]]]).astype(np.float32)
        checked.append(Reranked(n, n.rank, v, pts))
    verified = sorted((r for r in checked if r.verified), key=lambda r: (-r.verification.score, r.retrieval_rank))
    rest = [r for r in checked if not r.verified] + [Reranked(n, n.rank) for n in ordered[max(0, depth):]]
    out = []
    for i, r in enumerate(verified + rest):
        out.append(attrs.evolve(r, neighbour=attrs.evolve(r.neighbour, rank=i)))
    return out
