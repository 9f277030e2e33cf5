"""Validators for the options of checkers and commands (attrs records).

One place for the checks every options record needs, so that every plugin's error
reads the same: ``spatial option min_support must be in [0, 1], got 1.5``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["in_unit", "positive"]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def in_unit(what: str) -> Validator:
    """An attrs validator: the value lies in [0, 1]; ``what`` names the options."""

    def check(_inst: Any, attr: attrs.Attribute[Any], value: float) -> None:
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"{what} option {attr.name} must be in [0, 1], got {value}")

    return check


def positive(what: str) -> Validator:
    """An attrs validator: the value is > 0."""

    def check(_inst: Any, attr: attrs.Attribute[Any], value: float) -> None:
        if not value > 0:
            raise ValueError(f"{what} option {attr.name} must be > 0, got {value}")

    return check
