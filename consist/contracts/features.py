"""The local-features contract: what a feature extractor produces, how the run names
the features it wants, and how an extractor is registered.

Local features (keypoints + descriptors) are the currency of pixel-level checkers
(geometric verification, topological RANSAC), of instance retrieval (ASMK) and of the
audit, which extracts them once per image in parallel workers and caches them in the
store as artefacts of kind ``extractor.kind``. Because the record and the cache format
are part of the core contract, a third-party extractor (registered through
``consist_register_extractors``) replaces SIFT everywhere: under ``consist audit
--features NAME``, under the retriever and under every checker that reads features.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np

__all__ = ["FORMAT_VERSION", "ExtractorFactory", "FeatureExtractor", "FeatureSpec", "LocalFeatures"]

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


def _f32_points(value: Any) -> np.ndarray:
    return _f32(value, 2)


def _f32_vector(value: Any) -> np.ndarray:
    return _f32(value, 1)


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


def _size(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1]))


_eq_arrays = attrs.cmp_using(eq=lambda a, b: a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b)))


@attrs.frozen
class LocalFeatures:
    """Keypoints and descriptors of one image.

    Attributes:
        keypoints: ``N x 2`` float32 ``(x, y)`` in pixels of the ORIGINAL image (x right,
            y down, pixel centres at integers), whatever resolution they were found at.
        scales: ``N`` float32 keypoint diameters in original pixels (1 where the
            detector has no scale).
        angles: ``N`` float32 orientations in degrees (0 where it has none).
        descriptors: ``N x D``, float32 or uint8; what gets matched.
        image_size: ``(width, height)`` of the original image.
        resize_factor: ``working / original`` scale the image was extracted at (<= 1);
            keypoint accuracy, hence a sensible RANSAC threshold, is set by it.
        extractor: the extractor's ``kind`` (what produced these, with its parameters).
    """

    keypoints: np.ndarray = attrs.field(converter=_f32_points, eq=_eq_arrays, hash=False, repr=lambda a: f"<{len(a)} points>")
    scales: np.ndarray = attrs.field(converter=_f32_vector, eq=_eq_arrays, hash=False, repr=False)
    angles: np.ndarray = attrs.field(converter=_f32_vector, eq=_eq_arrays, hash=False, repr=False)
    descriptors: np.ndarray = attrs.field(converter=_descriptors, eq=_eq_arrays, hash=False, repr=lambda a: f"<{a.shape[0]}x{a.shape[1]} {a.dtype}>")
    image_size: tuple[int, int] = attrs.field(converter=_size)
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
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), keypoints=self.keypoints, scales=self.scales, angles=self.angles, descriptors=desc)
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


@runtime_checkable
class FeatureExtractor(Protocol):
    """Pixels in, :class:`LocalFeatures` out.

    ``kind`` is the artefact key of the cache (``features/sift-rootsift-1024-2048``):
    it must change whenever the output would (parameters, weights), so that a changed
    parameter fills a new cache instead of reading stale features. ``extract`` takes
    ``H x W x 3`` uint8 RGB pixels and returns keypoints in those pixels' frame.
    """

    @property
    def kind(self) -> str: ...

    def extract(self, image: np.ndarray) -> LocalFeatures: ...


class ExtractorFactory(Protocol):
    """What ``consist_register_extractors`` registers under a name: ``factory(**options)``
    returns a configured :class:`FeatureExtractor` (cheap: models load on first use).

    Options consist passes (a factory raises ``TypeError``/``ValueError`` for what it
    cannot honour): ``max_side`` (int or None: long side the image is reduced to),
    ``max_keypoints`` (int), ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``).
    """

    def __call__(self, **options: Any) -> FeatureExtractor: ...


@attrs.frozen
class FeatureSpec:
    """The local features a run wants, by registered name: given to retrievers, re-rankers
    and checkers (``CheckContext.features``) so that all of them read the same cached
    features instead of each choosing its own.

    Attributes:
        extractor: a name registered through ``consist_register_extractors`` (``"sift"``).
        matcher: the matcher a verifying checker should pair with these features
            (``"nn"``, ``"lightglue"``, ...), or ``None`` for the checker's default.
            A hint: a checker that does not know the name keeps its own.
        options: factory options (``max_side``, ``max_keypoints``, ``device``).
    """

    extractor: str = "sift"
    matcher: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda m: dict(sorted(dict(m).items())))

    @classmethod
    def parse(cls, text: str, **options: Any) -> FeatureSpec:
        """``"aliked-n16+lightglue"`` -> extractor ``aliked-n16``, matcher ``lightglue``."""
        name, _, matcher = text.strip().partition("+")
        if not name:
            raise ValueError(f"feature spec {text!r}: expected EXTRACTOR or EXTRACTOR+MATCHER")
        return cls(extractor=name, matcher=matcher or None, options=options)

    def __str__(self) -> str:
        return self.extractor + (f"+{self.matcher}" if self.matcher else "")
