"""Whether an extractor + matcher pipeline can run here, checked up front and
cheaply (no torch import), so that a misconfiguration fails before any work."""

from __future__ import annotations

import importlib.util

from consist_spatial.matchers.lightglue import LIGHTGLUE_FEATURES
from consist_spatial.torch_models import LearnedUnavailable
from consist_spatial.weights import weights_path

__all__ = ["check_available"]


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
