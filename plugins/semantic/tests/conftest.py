"""Fixtures of the semantic plugin's tests: a real chat-completions server on
127.0.0.1 (``consist_semantic.testing``), real SQLite stores, real photos."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from consist import plugins
from consist_semantic.testing import ScriptedServer, yes_no_reply


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("CONSIST_LMM_BASE_URL", "CONSIST_LMM_MODEL", "CONSIST_LMM_API_KEY", "CONSIST_LMM_BACKEND", "CONSIST_LMM_MODEL_PATH", "OPENAI_API_KEY", "CONSIST_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(lambda req: yes_no_reply(0.9)) as s:
        yield s


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.chelsea()


@pytest.fixture(scope="session")
def photo2() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.coffee()
