"""kornia's networks behind the learned extractors, loaded with the shipped weights.

Each is built without weights (kornia's pretrained constructors download) and loaded
strictly: the keys left out must be exactly the derived buffers kornia recomputes,
``dkd.hw_grid`` for ALIKED and none for DISK and XFeat (DESIGN.md 3.1).
"""

from __future__ import annotations

from typing import Any

import structlog

from consist.errors import ConsistError
from consist_spatial.torch_models import cached_model, kornia_feature, load_checkpoint, load_exactly, resolve_device
from consist_spatial.weights import ALIKED_VARIANTS, weights_path

__all__ = ["LEARNED_EXTRACTORS", "load_extractor_model"]

log = structlog.get_logger("consist.spatial")

#: The learned extractors (``extractor`` option values besides ``sift``).
LEARNED_EXTRACTORS = (*(f"aliked-{v}" for v in ALIKED_VARIANTS), "disk", "xfeat")


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
            model = kornia_feature("ALIKED")(model_name=name, nms_radius=2, **params)
            load_exactly(model, load_checkpoint(path), path, {"dkd.hw_grid"})
        elif name == "disk":
            model = kornia_feature("DISK")()
            state = load_checkpoint(path)
            if "extractor" not in state:
                raise ConsistError(f"weight file {path} has no 'extractor' entry (keys: {sorted(state)[:5]}): not a DISK checkpoint")
            load_exactly(model, state["extractor"], path, set())
        elif name == "xfeat":
            model = kornia_feature("XFeat")()
            load_exactly(model.net, load_checkpoint(path), path, set())
        else:
            raise ValueError(f"unknown learned extractor {name!r} (known: {', '.join(LEARNED_EXTRACTORS)})")
        log.debug("spatial_model_loaded", model=name, device=dev, weights=str(path))
        return model.eval().to(dev)

    return cached_model(key, build)
