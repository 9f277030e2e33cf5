"""Entry point of the ``consist-spatial`` distribution (group ``consist``, name ``spatial``)."""

from __future__ import annotations

from collections.abc import Callable

import consist

from consist_spatial.checker import SpatialChecker


@consist.hookimpl
def consist_register_checkers(register: Callable[[object], None]) -> None:
    register(SpatialChecker())
