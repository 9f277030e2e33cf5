"""Entry point of the ``consist-spatial`` distribution (group ``consist``, name ``spatial``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import consist

from consist_spatial.checker import SpatialChecker


@consist.hookimpl
def consist_register_checkers(register: Callable[[object], None]) -> None:
    register(SpatialChecker())


@consist.hookimpl
def consist_register_retrievers(register: Callable[[object], None]) -> None:
    from consist_spatial import AsmkRetriever  # faiss/asmk load on first use

    register(AsmkRetriever())


@consist.hookimpl
def consist_register_commands(cli: Any) -> None:
    from consist_spatial.cli import register

    register(cli)
