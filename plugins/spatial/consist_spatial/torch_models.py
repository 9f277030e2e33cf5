"""The optional torch/kornia path of the learned extractors and matchers (the
``learned`` extra): importing torch and kornia with a clear error when they are
missing, choosing the device, reading checkpoints strictly, and keeping loaded
models once per process (a LightGlue load takes ~0.2 s, the first torch import
seconds).

The weights are loaded into kornia's own classes built *without* weights (kornia's
pretrained constructors download), and the keys the load leaves out are checked to be
exactly the derived buffers kornia recomputes (DESIGN.md 3.1) by :func:`load_exactly`.

Importing this module does not import torch; torch is imported on the first
extraction or match.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consist.errors import ConsistError

__all__ = ["DEVICES", "LearnedUnavailable", "cached_model", "import_torch", "kornia_feature", "load_checkpoint", "load_exactly", "resolve_device"]

#: ``device`` option values (``cuda:N`` is accepted too).
DEVICES = ("cpu", "cuda", "auto")


class LearnedUnavailable(ConsistError, ImportError):
    """torch/kornia are missing, too old, or the device asked for is absent."""


def import_torch() -> Any:
    """The torch module, or :class:`LearnedUnavailable` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise LearnedUnavailable(f"learned features need torch and kornia: pip install 'consist-spatial[learned]' ({exc})") from exc
    return torch


def kornia_feature(name: str) -> Any:
    """``kornia.feature.<name>``, or :class:`LearnedUnavailable` saying what is missing."""
    import_torch()
    try:
        import kornia
        import kornia.feature as kf
    except ImportError as exc:
        raise LearnedUnavailable(f"learned features need kornia: pip install 'consist-spatial[learned]' ({exc})") from exc
    cls = getattr(kf, name, None)
    if cls is None:
        raise LearnedUnavailable(f"kornia {kornia.__version__} has no kornia.feature.{name}: pip install -U 'kornia>=0.9'")
    return cls


_CUDA = re.compile(r"cuda(:\d+)?")


def resolve_device(device: str) -> str:
    """``"cpu"``, ``"cuda"``/``"cuda:N"`` (checked), or ``"auto"`` (CUDA when torch sees one)."""
    if device == "cpu":
        return "cpu"
    if device != "auto" and not _CUDA.fullmatch(device):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")
    torch = import_torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise LearnedUnavailable(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device (use device='cpu' or 'auto')")
    return device


_models: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def cached_model(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """The model built for ``key`` in this process (built now by ``build`` if none)."""
    with _lock:  # one load at a time; concurrent checkers wait for it instead of loading twice
        model = _models.get(key)
        if model is None:
            model = _models[key] = build()
        return model


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state dict in a weight file (tensors only: ``weights_only``), on the CPU."""
    torch = import_torch()
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download, an HTML page saved as .pth, ...
        raise ConsistError(f"weight file {path} could not be read: {type(exc).__name__}: {exc}") from exc


def load_exactly(module: Any, state: dict[str, Any], path: Path, missing: set[str]) -> Any:
    """``load_state_dict(strict=False)`` that insists the left-out keys are exactly ``missing``."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches raise even with strict=False
        first = str(exc).strip().splitlines()
        raise ConsistError(f"weight file {path} does not fit kornia's {type(module).__name__}: {first[-1].strip() if first else exc}") from exc
    if set(result.missing_keys) != missing or result.unexpected_keys:
        raise ConsistError(
            f"weight file {path} does not fit kornia's {type(module).__name__}: missing {sorted(result.missing_keys)} (expected {sorted(missing)}), unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    return result
