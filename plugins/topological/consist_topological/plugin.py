"""Entry point of the ``consist-topological`` distribution (group ``consist``, name ``topological``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import consist
from consist_topological.checkers import CommunityVoteChecker, TopologicalRansacChecker


@consist.hookimpl
def consist_register_checkers(register: Callable[[object], None]) -> None:
    register(CommunityVoteChecker())
    register(TopologicalRansacChecker())


@consist.hookimpl
def consist_register_rerankers(register: Callable[[object], None]) -> None:
    from consist_topological.rerankers import HpReranker

    register(HpReranker())


@consist.hookimpl
def consist_register_commands(cli: Any) -> None:
    from consist_topological.cli import register

    register(cli)
