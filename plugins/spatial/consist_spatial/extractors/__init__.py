"""Local feature extractors on the torch/kornia path (the ``learned`` extra), one
module per model as in hloc; SIFT/RootSIFT (OpenCV) is :mod:`consist_spatial.features`.

All have :class:`~consist_spatial.features.SiftExtractor`'s interface (``kind``,
``extract(image) -> LocalFeatures``):

* ALIKED (Zhao et al., IEEE TIM 2023), variants ``n16``, ``n16rot``, ``n32``, ``t16``
  (:class:`AlikedExtractor`, kornia's ``ALIKED``; :mod:`.aliked`);
* DISK (Tyszkiewicz et al., NeurIPS 2020; "depth" weights; :class:`DiskExtractor`; :mod:`.disk`);
* XFeat (Potje et al., CVPR 2024; :class:`XFeatExtractor`; :mod:`.xfeat`).

:mod:`.base` holds what they share, :mod:`.models` loads kornia's networks with the
shipped weights (:mod:`consist_spatial.weights`), and :mod:`.registry` maps the
``extractor`` option to an extractor (:func:`make_extractor`). Constructing an extractor
imports no torch; the first extraction does.
"""

from __future__ import annotations

from consist_spatial.extractors.aliked import ALIKED_VARIANTS, AlikedExtractor
from consist_spatial.extractors.disk import DiskExtractor
from consist_spatial.extractors.models import LEARNED_EXTRACTORS, load_extractor_model
from consist_spatial.extractors.registry import EXTRACTORS, make_extractor
from consist_spatial.extractors.xfeat import XFeatExtractor

__all__ = [
    "ALIKED_VARIANTS",
    "EXTRACTORS",
    "LEARNED_EXTRACTORS",
    "AlikedExtractor",
    "DiskExtractor",
    "XFeatExtractor",
    "load_extractor_model",
    "make_extractor",
]
