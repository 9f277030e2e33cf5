"""The built-in store back-ends: ``sqlite://`` (and bare paths) and ``memory://``
(embedded), ``postgresql://`` and ``postgres://`` (a server; psycopg 3 is imported
only when such a store is opened: ``pip install "consist[postgres]"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from consist.contracts.hookspecs import hookimpl

if TYPE_CHECKING:
    from consist.stores.postgres import PostgresStore
    from consist.stores.sqlite import SQLiteStore


def _open_sqlite(uri: str, **kwargs: Any) -> SQLiteStore:
    from consist.stores.sqlite import SQLiteStore

    return SQLiteStore.from_uri(uri, **kwargs)


def _open_postgres(uri: str, **kwargs: Any) -> PostgresStore:
    from consist.stores.postgres import PostgresStore

    return PostgresStore.from_uri(uri, **kwargs)


@hookimpl
def consist_register_stores(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("sqlite", _open_sqlite)
    register("memory", _open_sqlite)
    register("postgresql", _open_postgres)
    register("postgres", _open_postgres)
