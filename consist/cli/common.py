"""Helpers shared by CLI commands: JSON output, store option, error handling."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from consist.errors import ConsistError

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = ["DEFAULT_STORE_ENV", "emit_json", "fail", "json_option", "open_store_or_fail", "store_option"]

#: The store used when ``--store`` is not given.
DEFAULT_STORE_ENV = "CONSIST_STORE"


def store_option(f: Any) -> Any:
    return click.option(
        "--store",
        "store_uri",
        envvar=DEFAULT_STORE_ENV,
        required=True,
        metavar="URI",
        help=f"Store URI (sqlite:///path.db, a path, memory://). Default: ${DEFAULT_STORE_ENV}.",
    )(f)


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(f)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit 2 (bad invocation or bad input)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def open_store_or_fail(uri: str, *, create: bool = False) -> Store:
    """Open the store named by ``--store``; a missing SQLite file is an error unless
    ``create`` (a typo must not silently become a new, empty store)."""
    from consist.stores.uri import open_store

    try:
        return open_store(uri, create=create)
    except ConsistError as exc:
        fail(str(exc))
