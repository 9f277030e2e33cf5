"""The ``matcher`` option: its values, and the matcher each one names."""

from __future__ import annotations

from typing import Any

from consist_spatial.matchers.lightglue import LIGHTGLUE_FEATURES, LightGlueMatcher, lightglue_mismatch
from consist_spatial.matchers.nn import NNMatcher, TorchNNMatcher
from consist_spatial.matching import LOWE_RATIO
from consist_spatial.torch_models import resolve_device

__all__ = ["MATCHERS", "make_matcher"]

#: ``matcher`` option values: mutual NN + ratio test, or LightGlue.
MATCHERS = ("nn", "lightglue")


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
