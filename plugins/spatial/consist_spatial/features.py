"""Local features: extraction (OpenCV SIFT / RootSIFT), a compact serialisation, and a
per-sample cache in the consist store.

Feature extraction dominates the cost of spatial verification (DESIGN.md 3.1: SIFT
~0.07 s per 1024 px image, matching ~10 ms, DEGENSAC ~2 ms), so features are
extracted once per sample and kept as a store artefact whose *kind* encodes every
parameter that changes them (``features/sift-rootsift-1024-2048``): changing a
parameter never reads stale features, it just fills a new cache.

Coordinates are always in pixels of the ORIGINAL image (x right, y down, pixel
centres at integers, OpenCV's convention), whatever resolution the features were
extracted at; ``resize_factor`` remembers that resolution, because keypoint
localisation accuracy (and hence a sensible RANSAC threshold) is set by it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import attrs
import cv2
import numpy as np
import structlog

from consist.errors import StoreError
from consist.images import image_id, load_gray, load_image
from consist.records import Query, Sample

__all__ = [
    "FORMAT_VERSION",
    "LocalFeatures",
    "FeatureExtractor",
    "SiftExtractor",
    "features_for",
    "rootsift",
    "resize_long_side",
]

log = structlog.get_logger("consist.spatial")

#: Version of the :meth:`LocalFeatures.to_bytes` layout; bumped when it changes.
FORMAT_VERSION = 1


def _f32(value: Any, ndim: int) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    if arr.size == 0:
        arr = arr.reshape((0, 2) if ndim == 2 else (0,))
    if arr.ndim != ndim:
        raise ValueError(f"expected a {ndim}-d array, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


def _descriptors(value: Any) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(value))
    if arr.size == 0 and arr.ndim != 2:
        arr = arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"descriptors must be an NxD array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32, copy=False)
    arr.setflags(write=False)
    return arr


_eq_arrays = attrs.cmp_using(eq=lambda a, b: a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b)))


@attrs.frozen
class LocalFeatures:
    """Keypoints and descriptors of one image.

    Attributes:
        keypoints: ``N x 2`` float32 ``(x, y)`` in pixels of the original image.
        scales: ``N`` float32 keypoint diameters (OpenCV ``KeyPoint.size``), original pixels.
        angles: ``N`` float32 orientations in degrees (OpenCV convention).
        descriptors: ``N x D``, float32 (RootSIFT, learned) or uint8; what gets matched.
        image_size: ``(width, height)`` of the original image.
        resize_factor: ``working / original`` scale the image was extracted at (<= 1).
        extractor: the extractor's ``kind`` (what produced these, with its parameters).
    """

    keypoints: np.ndarray = attrs.field(converter=lambda v: _f32(v, 2), eq=_eq_arrays, hash=False, repr=lambda a: f"<{len(a)} points>")
    scales: np.ndarray = attrs.field(converter=lambda v: _f32(v, 1), eq=_eq_arrays, hash=False, repr=False)
    angles: np.ndarray = attrs.field(converter=lambda v: _f32(v, 1), eq=_eq_arrays, hash=False, repr=False)
    descriptors: np.ndarray = attrs.field(converter=_descriptors, eq=_eq_arrays, hash=False, repr=lambda a: f"<{a.shape[0]}x{a.shape[1]} {a.dtype}>")
    image_size: tuple[int, int] = attrs.field(converter=lambda v: (int(v[0]), int(v[1])))
    resize_factor: float = attrs.field(default=1.0, converter=float)
    extractor: str = ""

    def __attrs_post_init__(self) -> None:
        n = len(self.keypoints)
        if self.keypoints.shape[1] != 2:
            raise ValueError(f"keypoints must be N x 2, got {self.keypoints.shape}")
        if not (len(self.scales) == len(self.angles) == n):
            raise ValueError(f"{n} keypoints but {len(self.scales)} scales and {len(self.angles)} angles")
        if len(self.descriptors) != n:
            raise ValueError(f"{n} keypoints but {len(self.descriptors)} descriptors")
        if not self.resize_factor > 0:
            raise ValueError(f"resize_factor must be > 0, got {self.resize_factor}")

    def __len__(self) -> int:
        return int(len(self.keypoints))

    @property
    def working_size(self) -> tuple[int, int]:
        """``(width, height)`` of the image the features were extracted from."""
        w, h = self.image_size
        return (max(1, round(w * self.resize_factor)), max(1, round(h * self.resize_factor)))

    def subset(self, index: np.ndarray) -> LocalFeatures:
        """The features selected by a boolean mask or an index array."""
        desc = self.descriptors[index] if len(self.descriptors) else self.descriptors
        return attrs.evolve(self, keypoints=self.keypoints[index], scales=self.scales[index], angles=self.angles[index], descriptors=desc)

    # ------------------------------------------------------------ serialisation

    def to_bytes(self, *, quantize: bool = True) -> bytes:
        """Serialise to an in-memory ``.npz`` (no pickle).

        uint8 descriptors are stored as they are. Float descriptors are stored as
        uint8 after an affine quantisation over the record's min..max when
        ``quantize`` (RootSIFT values lie in [0, ~0.5]: a step of ~0.002, an error
        norm of ~0.007 per unit-norm 128-d vector, well below nearest-neighbour
        distance gaps; a quarter of float32's size), else as float16.
        """
        meta: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "image_size": list(self.image_size),
            "resize_factor": self.resize_factor,
            "extractor": self.extractor,
            "dtype": str(self.descriptors.dtype),
            "codec": "raw",
        }
        desc = self.descriptors
        if desc.dtype != np.uint8:
            if quantize and desc.size:
                lo, hi = float(desc.min()), float(desc.max())
                step = (hi - lo) / 255.0 or 1.0
                desc = np.round((desc - lo) / step).astype(np.uint8)
                meta.update(codec="u8", lo=lo, step=step)
            else:
                desc = desc.astype(np.float16)
                meta["codec"] = "f16"
        buf = io.BytesIO()
        np.savez(
            buf,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            keypoints=self.keypoints,
            scales=self.scales,
            angles=self.angles,
            descriptors=desc,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        """Rebuild features written by :meth:`to_bytes`; ``ValueError`` if unreadable."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes().decode())
                arrays = {k: z[k] for k in ("keypoints", "scales", "angles", "descriptors")}
        except Exception as exc:  # zipfile/npy errors vary: one clear error type
            raise ValueError(f"not serialised LocalFeatures: {type(exc).__name__}: {exc}") from exc
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"LocalFeatures format {meta.get('version')} (this version reads {FORMAT_VERSION})")
        desc = arrays["descriptors"]
        if meta["codec"] == "u8":
            desc = desc.astype(np.float32) * np.float32(meta["step"]) + np.float32(meta["lo"])
        elif meta["codec"] == "f16":
            desc = desc.astype(np.float32)
        return cls(
            keypoints=arrays["keypoints"],
            scales=arrays["scales"],
            angles=arrays["angles"],
            descriptors=desc,
            image_size=tuple(meta["image_size"]),
            resize_factor=meta["resize_factor"],
            extractor=meta["extractor"],
        )


# ------------------------------------------------------------------- extraction


@runtime_checkable
class FeatureExtractor(Protocol):
    """What :func:`features_for` needs: a cache ``kind`` and ``extract(image)``.

    ``kind`` must change whenever the output would (parameters, model weights):
    it is the artefact key of the cache.
    """

    @property
    def kind(self) -> str: ...

    def extract(self, image: np.ndarray) -> LocalFeatures: ...


def rootsift(descriptors: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman, CVPR 2012): L1-normalise, square-root.

    Euclidean distance between RootSIFT vectors is the Hellinger kernel on the
    original SIFT histograms, which matches and retrieves better than L2 on SIFT.
    The result has unit L2 norm.
    """
    d = np.asarray(descriptors, dtype=np.float32)
    if d.size == 0:
        return d
    d = d / (np.abs(d).sum(axis=1, keepdims=True) + eps)
    return np.sqrt(np.maximum(d, 0.0))


def resize_long_side(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so that the long side is at most ``max_side`` (never upscale).

    Returns the image and the factor ``working / original``. INTER_AREA averages
    pixels, so downscaling does not alias (which would create spurious keypoints).
    """
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    factor = max_side / float(max(h, w))
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    # the factor actually applied (rounding changes it by < 1 px over the image)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / float(w)


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB(A)/grey uint8 pixels to one uint8 grey channel."""
    img = load_image(image)  # normalises dtype and channels of an array
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


@attrs.frozen
class SiftExtractor:
    """OpenCV SIFT (Lowe, IJCV 2004), RootSIFT descriptors by default.

    Attributes:
        max_keypoints: keep at most this many keypoints, the strongest by response
            (2048: enough for instance matching at 1024 px, and matching stays
            ~10 ms per pair; more mostly adds weak, unstable points).
        max_side: downscale images so that their long side is at most this
            (1024, the revisitop protocol's resolution; ``None`` keeps full size).
        root: convert descriptors to RootSIFT (Arandjelović & Zisserman 2012).
        contrast_threshold, edge_threshold, sigma: OpenCV/Lowe defaults (0.04, 10, 1.6).
    """

    max_keypoints: int = 2048
    max_side: int | None = 1024
    root: bool = True
    contrast_threshold: float = 0.04
    edge_threshold: float = 10.0
    sigma: float = 1.6

    @property
    def kind(self) -> str:
        """Artefact kind, e.g. ``features/sift-rootsift-1024-2048``.

        Non-default detector thresholds are appended so that they get their own cache.
        """
        name = "sift-rootsift" if self.root else "sift"
        kind = f"features/{name}-{self.max_side or 'full'}-{self.max_keypoints}"
        if (self.contrast_threshold, self.edge_threshold, self.sigma) != (0.04, 10.0, 1.6):
            kind += f"-c{self.contrast_threshold:g}-e{self.edge_threshold:g}-s{self.sigma:g}"
        return kind

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """Detect and describe; keypoints are returned in original-image pixels."""
        gray = to_gray(image)
        return self.extract_gray(gray, (gray.shape[1], gray.shape[0]))

    def extract_gray(self, gray: np.ndarray, original_size: tuple[int, int]) -> LocalFeatures:
        """:meth:`extract` on grey pixels of an image whose full size is
        ``original_size`` ``(w, h)``; the pixels may already be reduced (a JPEG decoded
        at a DCT scale by :func:`consist.images.load_gray`), keypoints are mapped to
        the full size either way."""
        w, h = int(original_size[0]), int(original_size[1])
        if self.max_side and max(w, h) > self.max_side:
            f = self.max_side / float(max(w, h))
            size = (max(1, round(w * f)), max(1, round(h * f)))
        else:
            size = (w, h)
        work = gray if (gray.shape[1], gray.shape[0]) == size else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        factor = size[0] / float(w)  # the factor actually applied (rounding: < 1 px over the image)
        sift = cv2.SIFT_create(
            nfeatures=int(self.max_keypoints),
            contrastThreshold=self.contrast_threshold,
            edgeThreshold=self.edge_threshold,
            sigma=self.sigma,
        )  # one detector per call: cheap, and no state shared between threads
        kps, desc = sift.detectAndCompute(work, None)
        if desc is None or not kps:
            return LocalFeatures(np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros((0, 128), np.float32), (w, h), factor, self.kind)
        response = np.array([k.response for k in kps], dtype=np.float32)
        if len(kps) > self.max_keypoints:  # OpenCV may keep ties beyond nfeatures
            keep = np.sort(np.argsort(-response, kind="stable")[: self.max_keypoints])
            kps = [kps[i] for i in keep]
            desc = desc[keep]
        xy = np.array([k.pt for k in kps], dtype=np.float32)
        # pixel centres are at integers in both frames: x_orig = (x_work + 0.5) / f - 0.5
        xy = (xy + 0.5) / factor - 0.5
        scales = np.array([k.size for k in kps], dtype=np.float32) / factor
        angles = np.array([k.angle for k in kps], dtype=np.float32)
        desc = rootsift(desc) if self.root else np.asarray(desc, dtype=np.float32)
        return LocalFeatures(xy, scales, angles, desc, (w, h), factor, self.kind)


# ------------------------------------------------------------------------ cache


def _source_of(item: Sample | Query) -> str:
    """What the pixels came from: a cached entry for another source is stale."""
    if isinstance(item, Query) and item.image is not None:
        return image_id(item.image)
    return str(item.uri or "")


def _load_pixels(item: Sample | Query, store: Any) -> np.ndarray:
    """A query's pixels, or the image at its/the sample's URI (``ImageError`` if none)."""
    return load_image(item, store=store)


def _cache_blob(features: LocalFeatures, source: str) -> bytes:
    digest = hashlib.blake2b(source.encode(), digest_size=8).hexdigest().encode()
    return b"CSF1" + digest + features.to_bytes()


def _read_cache(blob: bytes, source: str) -> LocalFeatures | None:
    digest = hashlib.blake2b(source.encode(), digest_size=8).hexdigest().encode()
    if blob[:4] != b"CSF1" or blob[4:20] != digest:
        return None  # another image now has this id, or another layout: recompute
    try:
        return LocalFeatures.from_bytes(blob[20:])
    except ValueError:
        return None


def features_for(
    item: Sample | Query,
    store: Any = None,
    extractor: FeatureExtractor | None = None,
    *,
    cache_queries: bool = False,
    load: Callable[[Sample | Query, Any], np.ndarray] = _load_pixels,
) -> LocalFeatures:
    """Features of a sample or a query, from the store's artefact cache when there.

    Samples are cached under ``(sample.id, extractor.kind)``. Queries are cached
    (under the query id) only with ``cache_queries=True``: a query id is often a
    one-off, and caching it would grow the store with every question asked.
    A cache entry remembers the image it was computed from (the sample's URI, or a
    hash of a query's pixels) and is recomputed when that changed. Pixels are read
    with :func:`consist.images.load_image` (so ``artefact://`` URIs work); a
    read-only store is used for reading only.
    """
    extractor = extractor or SiftExtractor()
    kind = extractor.kind
    use_cache = store is not None and (isinstance(item, Sample) or cache_queries)
    source = _source_of(item) if use_cache else ""
    if use_cache:
        blob = store.get_artefact(item.id, kind)
        if blob is not None:
            cached = _read_cache(blob, source)
            if cached is not None:
                return cached
    if load is _load_pixels and hasattr(extractor, "extract_gray"):
        # grey-only extractors skip the RGB decode (and decode big JPEGs reduced)
        gray, size = load_gray(item, max_side=getattr(extractor, "max_side", None), store=store)
        features = extractor.extract_gray(gray, size)
    else:
        features = extractor.extract(load(item, store))
    if use_cache:
        try:
            store.put_artefact(item.id, kind, _cache_blob(features, source))
        except StoreError as exc:  # read-only or locked store: still answer
            log.debug("feature_cache_write_failed", sample=item.id, kind=kind, error=str(exc))
    return features
