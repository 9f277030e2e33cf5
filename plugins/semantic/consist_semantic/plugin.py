"""Entry point of the ``consist-semantic`` distribution (group ``consist``, name ``semantic``).

Registers the reflection checker (on by default only when an LMM is configured in
the environment), the frontal controller's skip rule, the ``tell`` and ``ask``
commands, the plugin's own back-end hookspec and the two built-in back-ends.

Only hook implementations live here, each importing what it registers: no module
of the plugin imports this one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import consist


@consist.hookimpl
def consist_addhookspecs(pluginmanager: Any) -> None:
    from consist_semantic import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@consist.hookimpl
def consist_semantic_register_backends(register: Callable[[str, Callable[..., Any]], None]) -> None:
    from consist_semantic.builtin_backends import register_builtin_backends

    register_builtin_backends(register)


@consist.hookimpl
def consist_register_checkers(register: Callable[[object], None]) -> None:
    from consist_semantic.backends import configured_in_env
    from consist_semantic.reflection import ReflectionChecker

    checker = ReflectionChecker()
    checker.enabled_by_default = configured_in_env()
    register(checker)


@consist.hookimpl
def consist_skip_checker(checker: Any, state: Any) -> str | None:
    frontal = getattr(checker, "frontal", None)
    if frontal is None or not getattr(checker, "frontal_controlled", False):
        return None
    return frontal.skip_reason(state)


@consist.hookimpl
def consist_register_commands(cli: Any) -> None:
    from consist_semantic.cli import register

    register(cli)


@consist.hookimpl
def consist_register_reporters(register: Callable[[object], None]) -> None:
    from consist_semantic.report import LMMReporter

    register(LMMReporter())


@consist.hookimpl
def consist_register_interpreters(register: Callable[[object], None]) -> None:
    from consist_semantic.interpreter import TellInterpreter

    register(TellInterpreter())
