"""The embedded store back-ends: ``sqlite://`` (and bare paths) and ``memory://``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from consist.contracts.hookspecs import hookimpl

if TYPE_CHECKING:
    from consist.stores.sqlite import SQLiteStore


def _open_sqlite(uri: str, **kwargs: Any) -> SQLiteStore:
    from consist.stores.sqlite import SQLiteStore

    return SQLiteStore.from_uri(uri, **kwargs)


@hookimpl
def consist_register_stores(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("sqlite", _open_sqlite)
    register("memory", _open_sqlite)
