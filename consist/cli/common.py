"""Helpers shared by CLI commands: JSON output, store option, error handling."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from consist.errors import ConsistError

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = ["DEFAULT_STORE_ENV", "emit_json", "fail", "json_option", "open_store_or_fail", "safe", "store_option"]

#: The store used when ``--store`` is not given.
DEFAULT_STORE_ENV = "CONSIST_STORE"


def store_option(f: Any) -> Any:
    return click.option(
        "--store",
        "store_uri",
        envvar=DEFAULT_STORE_ENV,
        required=True,
        metavar="URI",
        help=f"Store URI (sqlite:///path.db, a path, memory://, postgresql://user@host/db). Default: ${DEFAULT_STORE_ENV}.",
    )(f)


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(f)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


#: Bidirectional-text controls: they reorder what a terminal shows (U+202E turns
#: ``gpj.exe`` into ``exe.jpg``).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def safe(text: object) -> str:
    """``text`` fit for a terminal: control characters (ANSI escape sequences, a
    newline, a carriage return, a bell, DEL, C1 controls), line and paragraph
    separators and bidirectional controls are shown escaped (``\\x1b``, ``\\n``,
    ``\\u202e``) instead of acting. Every user string a command prints (labels,
    sample ids, file names, reasons, error messages) goes through it; ``--json``
    output is JSON-escaped anyway."""
    import unicodedata

    s = str(text)
    if s.isprintable() and not _BIDI.intersection(s):
        return s
    out = []
    for ch in s:
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit 2 (bad invocation or bad input); a newline or
    an escape sequence in a file name or label is shown escaped (:func:`safe`)."""
    click.echo(f"error: {safe(message)}", err=True)
    sys.exit(2)


def open_store_or_fail(uri: str, *, create: bool = False) -> Store:
    """Open the store named by ``--store``; a missing SQLite file is an error unless
    ``create`` (a typo must not silently become a new, empty store)."""
    from consist.stores.uri import open_store

    try:
        return open_store(uri, create=create)
    except ConsistError as exc:
        fail(str(exc))
