"""Descriptor matchers, one module per method as in hloc.

All return :func:`~consist_spatial.matching.match_features`'s format (``M x 2`` int64
``(query index, neighbour index)`` rows, sorted by the query index; :mod:`.base`) from
``match(f1, f2)``, and scores with it from ``match_scored``:

* :class:`NNMatcher`: mutual nearest neighbour + Lowe's ratio in numpy (no torch), and
  :class:`TorchNNMatcher`, the same filters on torch (GPU) (:mod:`.nn`);
* :class:`LightGlueMatcher` (Lindenberger et al., ICCV 2023): kornia's ``LightGlue`` for
  ALIKED, DISK (and XFeat: "LighterGlue") (:mod:`.lightglue`).

:mod:`.registry` maps the ``matcher`` option to a matcher (:func:`make_matcher`).
"""

from __future__ import annotations

from consist_spatial.matchers.lightglue import LIGHTGLUE_FEATURES, LightGlueMatcher, lightglue_mismatch, load_lightglue
from consist_spatial.matchers.nn import NNMatcher, TorchNNMatcher
from consist_spatial.matchers.registry import MATCHERS, make_matcher

__all__ = [
    "LIGHTGLUE_FEATURES",
    "MATCHERS",
    "LightGlueMatcher",
    "NNMatcher",
    "TorchNNMatcher",
    "lightglue_mismatch",
    "load_lightglue",
    "make_matcher",
]
