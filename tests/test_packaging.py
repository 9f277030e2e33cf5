"""Packaging of the four distributions: one source for each version (the package's
``__version__``, read by setuptools), and ``py.typed`` shipped with every package."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (distribution name, import package, folder of its pyproject.toml)
DISTRIBUTIONS = [
    ("consist", "consist", "."),
    ("consist-spatial", "consist_spatial", "plugins/spatial"),
    ("consist-topological", "consist_topological", "plugins/topological"),
    ("consist-semantic", "consist_semantic", "plugins/semantic"),
]


def _pyproject(folder: str) -> dict:
    with (ROOT / folder / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize(("dist", "package", "folder"), DISTRIBUTIONS, ids=[d[0] for d in DISTRIBUTIONS])
def test_the_version_is_written_once(dist: str, package: str, folder: str) -> None:
    """pyproject.toml holds no version: setuptools reads ``package.__version__``."""
    data = _pyproject(folder)
    assert data["project"]["name"] == dist
    assert "version" not in data["project"]
    assert "version" in data["project"].get("dynamic", [])
    # the core keeps it in consist/_version.py so that no submodule imports the package root
    attr = f"{package}._version.__version__" if package == "consist" else f"{package}.__version__"
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": attr}


@pytest.mark.parametrize(("dist", "package", "folder"), DISTRIBUTIONS, ids=[d[0] for d in DISTRIBUTIONS])
def test_installed_metadata_version_is_the_package_version(dist: str, package: str, folder: str) -> None:
    module = importlib.import_module(package)
    assert isinstance(module.__version__, str) and module.__version__
    assert importlib.metadata.version(dist) == module.__version__


@pytest.mark.parametrize(("dist", "package", "folder"), DISTRIBUTIONS, ids=[d[0] for d in DISTRIBUTIONS])
def test_package_ships_py_typed(dist: str, package: str, folder: str) -> None:
    """The marker is in the installed package and declared as package data."""
    installed = importlib.resources.files(package) / "py.typed"
    assert installed.is_file(), f"{package}: no py.typed in the installed package ({installed})"
    assert "py.typed" in _pyproject(folder)["tool"]["setuptools"].get("package-data", {}).get(package, [])


@pytest.mark.parametrize(("dist", "package", "folder"), DISTRIBUTIONS, ids=[d[0] for d in DISTRIBUTIONS])
def test_built_wheel_has_the_package_version_and_py_typed(dist: str, package: str, folder: str, tmp_path: Path) -> None:
    """A wheel built from (a copy of) the sources: what a user would install."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / folder / "pyproject.toml", src)
    if (ROOT / folder / "README.md").exists():
        shutil.copy(ROOT / folder / "README.md", src)
    shutil.copytree(ROOT / folder / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "dist"
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", build, str(out)], cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = out / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        version = next(line.split(":", 1)[1].strip() for line in z.read(metadata).decode().splitlines() if line.startswith("Version:"))
    assert f"{package}/py.typed" in names
    assert version == importlib.import_module(package).__version__
