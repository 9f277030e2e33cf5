"""Shared fixtures: fresh plugin discovery per test, temporary plugins on sys.path,
and real photos from scikit-image."""

from __future__ import annotations

import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import consist
from consist import plugins

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the commands the tests start, however pytest was started: a
    shell starts a background job (``cmd &``) with SIGINT ignored, its children inherit
    that, and the tests that interrupt an audit then saw it finish instead (exit 0, not
    130). A Python handler here is SIG_DFL again in every child after exec."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test rediscovers plugins, so env vars and temporary plugins take effect."""
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a plugin module the way pip would: a module plus a ``*.dist-info``
    folder with ``entry_points.txt`` on ``sys.path``, found by importlib.metadata."""

    def install(name: str, source: str, *, entry_name: str | None = None, version: str = "1.0") -> Path:
        site = tmp_path / f"site-{name}"
        site.mkdir()
        (site / f"{name}.py").write_text(textwrap.dedent(source))
        dist = site / f"{name.replace('_', '-')}-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
        (dist / "entry_points.txt").write_text(f"[consist]\n{entry_name or name} = {name}\n")
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.delitem(sys.modules, name, raising=False)
        import importlib

        importlib.invalidate_caches()
        plugins.reset_plugins()
        return site

    return install


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photographs shipped with scikit-image (no download)."""
    from consist.demo import demo_photos

    return demo_photos()


@pytest.fixture
def store() -> Iterator[consist.Store]:
    s = consist.open_store("memory://")
    yield s
    s.close()


# ------------------------------------------------------------ PostgreSQL (issue 14)


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole session (tests/pgserver.py), stopped at
    the end; skipped when the server binaries are not installed."""
    from pgserver import find_bindir, start_server

    if find_bindir() is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg", reason='psycopg 3 not installed (pip install "consist[postgres]")')
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_uri(pg_server) -> str:
    """A fresh, empty database of the session's server, one per test."""
    return pg_server.create_database()
