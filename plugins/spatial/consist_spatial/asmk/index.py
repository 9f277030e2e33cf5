"""The ASMK index of one store: a codebook and an inverted file over its samples.

Incremental: the index follows the store's history (a
:class:`~consist.stores.derived.DerivedIndex`). Each :meth:`AsmkIndex.sync` (done by
the retriever before every query) reads the history entries newer than the index,
adds the samples that appeared or got other pixels (their aggregated descriptors are
appended to the inverted file, from the cached features: no retraining) and hides
deleted ones. The codebook is retrained only explicitly (``consist index --retrain``,
:func:`~consist_spatial.asmk.retriever.update_asmk_index` with ``retrain=True``) or
when ``consist index`` finds that the store has grown ``retrain_growth`` (4) times
beyond the images the codebook was trained on; the index never retrains at query
time (it logs once that a retrain is due). A codebook loaded from a file is never
retrained automatically.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from consist.errors import ConsistError, ImageError, StoreError
from consist.records import Neighbour, Query, Sample
from consist.stores.derived import DerivedIndex, StoreChanges, SyncReport, newest_seq
from consist_spatial.asmk import cache
from consist_spatial.asmk.aggregate import aggregate_residuals
from consist_spatial.asmk.artefacts import ASMK_SAMPLE_ID, FORMAT_VERSION, codebook_kind, ivf_kind, read_npz, write_npz
from consist_spatial.asmk.codebook import codebook_digest, codebook_from_array, load_codebook_file, train_centroids
from consist_spatial.asmk.detect import detect_extractor, extractor_spec
from consist_spatial.asmk.params import AsmkParams, Progress
from consist_spatial.asmk.query import query_features
from consist_spatial.features import FeatureExtractor, LocalFeatures, SiftExtractor, features_for

if TYPE_CHECKING:
    from consist.contracts import Store

__all__ = ["AsmkIndex"]

log = structlog.get_logger("consist.spatial")


class AsmkIndex(DerivedIndex[SyncReport]):
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

        super().__init__(SyncReport)  # last_seq: the store history the index reflects
        self.extractor = extractor
        self.params = params or AsmkParams()
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.codebook = cdb_pkg.Codebook(idx_pkg.initialize_index(gpu_id=None), size=int(centroids.shape[0]))
        self.codebook.index(centroids)
        self.kernel = kern_pkg.ASMKKernel(self.codebook, binary=self.params.binary)
        self.ivf = ivf_pkg.IVF.initialize_empty(codebook_size=self.codebook.size, use_idf=self.params.use_idf)
        self.digest = codebook_digest(centroids)
        self.codebook_meta = dict(codebook_meta or {})
        self.ids: list[str] = []  # imid -> sample id
        self.sources: list[str] = []  # imid -> uri indexed
        self.active: list[bool] = []
        self.current: dict[str, int] = {}  # sample id -> its live imid
        self.unsaved = 0  # samples added or hidden since the last save or load
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
        store: Store,
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
        seq = newest_seq(store)
        # id order: the index (and its ties) must not depend on the order samples were stored in
        pool = sorted((s for s in (samples if samples is not None else store.samples()) if s.uri is not None), key=lambda s: s.id)
        if isinstance(codebook, (str, Path)):
            source = f"file:{codebook}"
            centroids = load_codebook_file(codebook)
            meta: dict[str, Any] = {"source": source}
        elif codebook is not None:
            centroids = codebook_from_array(codebook)
            meta = {"source": "given"}
        else:
            centroids, meta = train_centroids(pool, store, extractor, params, progress)
        meta.update(extractor=extractor_spec(extractor), extractor_kind=extractor.kind, created=time.time())
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

    def add(self, samples: Iterable[Sample], store: Store | None = None, *, progress: Progress | None = None, chunk: int = 64) -> SyncReport:
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

    def sync(self, store: Store, *, progress: Progress | None = None) -> SyncReport:
        """Bring the index up to date with the store: add new samples or samples
        with new pixels, hide deleted ones. Reads only the history entries newer
        than the index (stores without a history are compared in full)."""
        return super().sync(store, progress=progress)

    def _sync_all(self, store: Store, progress: Progress | None = None) -> SyncReport:
        live = {s.id: s for s in store.samples() if s.uri is not None}
        gone = [sid for sid in self.current if sid not in live]
        return self._apply(store, gone, [s for s in live.values() if self._is_new(s)], progress)

    def _sync_changes(self, store: Store, changes: StoreChanges, progress: Progress | None = None) -> SyncReport:
        gone = [sid for sid in changes.deleted if sid in self.current] + [s.id for s in changes.changed if s.uri is None and s.id in self.current]
        return self._apply(store, gone, [s for s in changes.changed if s.uri is not None and self._is_new(s)], progress)

    def _is_new(self, sample: Sample) -> bool:
        """Not indexed yet, or indexed with other pixels."""
        imid = self.current.get(sample.id)
        return imid is None or self.sources[imid] != sample.uri

    def _apply(self, store: Store, gone: list[str], todo: list[Sample], progress: Progress | None) -> SyncReport:
        removed = self.remove(gone)
        report = self.add(todo, store, progress=progress)
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
            if k is not None and len(order) > k:
                # keep every image tied with the k-th, then break ties by id: the result
                # must not depend on the order the images were indexed in
                order = order[scores[order] >= scores[order[k - 1]]] if k > 0 else order[:0]
            hits = sorted(((self.ids[i], float(scores[i])) for i in order), key=lambda h: (-h[1], h[0]))
            return hits if k is None else hits[:k]

    def retrieve(self, query: Query, store: Store, k: int, *, features: LocalFeatures | None = None) -> list[Neighbour]:
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

    def save(self, store: Store) -> None:
        """Write the codebook (if not there yet) and a snapshot of the inverted file."""
        with self.lock:
            cb_kind = codebook_kind(self.extractor)
            stored = store.get_artefact(ASMK_SAMPLE_ID, cb_kind)
            write_codebook = stored is None
            if stored is not None:
                meta, _ = read_npz(stored, f"{store.uri} {cb_kind}")
                write_codebook = meta.get("digest") != self.digest
            with store.transaction():
                if write_codebook:
                    meta = {**self.codebook_meta, "version": FORMAT_VERSION, "digest": self.digest, "size": self.size, "dim": self.dim}
                    store.put_artefact(ASMK_SAMPLE_ID, cb_kind, write_npz(meta, centroids=self.codebook.centroids))
                store.put_artefact(ASMK_SAMPLE_ID, ivf_kind(self.extractor), self._ivf_bytes())
            self.unsaved = 0
        cache.remember(store, self)

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
        return write_npz(
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
    def load(cls, store: Store, extractor: FeatureExtractor | None = None, params: AsmkParams | None = None, *, progress: Progress | None = None) -> AsmkIndex | None:
        """The store's index for ``extractor`` (default: :func:`detect_extractor`, else
        SIFT defaults); ``None`` when it has no codebook. A missing or mismatched
        inverted-file snapshot is rebuilt from the store (no retraining)."""
        extractor = extractor or detect_extractor(store) or SiftExtractor()
        params = params or AsmkParams()
        cb_kind = codebook_kind(extractor)
        data = store.get_artefact(ASMK_SAMPLE_ID, cb_kind)
        if data is None:
            return None
        meta, arrays = read_npz(data, f"{store.uri} {cb_kind}")
        index = cls(arrays["centroids"], extractor, params, codebook_meta={k: v for k, v in meta.items() if k not in ("version", "digest", "size", "dim")})
        snap = store.get_artefact(ASMK_SAMPLE_ID, ivf_kind(extractor))
        if snap is not None:
            imeta, iarrays = read_npz(snap, f"{store.uri} {ivf_kind(extractor)}")
            if imeta.get("codebook_digest") == index.digest and bool(imeta.get("binary")) == params.binary and bool(imeta.get("use_idf")) == params.use_idf:
                index._restore_ivf(imeta, iarrays)
                index.unsaved = 0
                return index
            log.info("asmk_ivf_rebuild", reason="snapshot made with another codebook or parameters")
        index.last_seq = newest_seq(store)
        index.add([s for s in store.samples() if s.uri is not None], store, progress=progress)
        return index
