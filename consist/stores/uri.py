"""Opening stores by URI: the scheme picks the back-end among those registered through
``consist_register_stores`` (built in: ``sqlite://`` and ``memory://``; a plain file
path means SQLite; ``postgresql://`` and ``postgres://``). The protocol itself is :class:`consist.contracts.store.Store`.
"""

from __future__ import annotations

from typing import Any

from consist.contracts.store import Store
from consist.errors import StoreError

__all__ = ["open_store", "split_uri"]


def split_uri(uri: str) -> tuple[str, str]:
    """``"sqlite:///a.db"`` -> ``("sqlite", "/a.db")``; a bare path is SQLite."""
    if "://" not in uri:
        return "sqlite", uri
    scheme, rest = uri.split("://", 1)
    return scheme.lower(), rest


def open_store(uri: str | Store, **kwargs: Any) -> Store:
    """Open a store by URI (``sqlite:///path.db``, ``memory://``, ``path.db``, or a
    scheme a plugin registered). A store object passes through unchanged."""
    if not isinstance(uri, str):
        return uri
    from consist.plugins import store_openers

    scheme, _ = split_uri(uri)
    openers = store_openers()
    if scheme not in openers:
        known = ", ".join(f"{s}://" for s in sorted(openers))
        raise StoreError(f"no store for the URI scheme {scheme!r} in {uri!r} (known: {known})")
    return openers[scheme](uri, **kwargs)
