"""Errors consist raises on purpose. Each message is one line that names the thing at fault."""

from __future__ import annotations

__all__ = [
    "ConsistError",
    "ImageError",
    "LabelConflict",
    "PluginError",
    "SampleNotFound",
    "StoreError",
    "StoreLockedError",
    "UndoConflict",
]


class ConsistError(Exception):
    """Base class: the CLI prints these as ``error: <message>`` and exits 2."""


class PluginError(ConsistError):
    """A plugin failed to load or registered something invalid."""


class StoreError(ConsistError):
    """A store could not be opened, read or written."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock for longer than the wait allows."""


class SampleNotFound(StoreError, KeyError):
    """No sample with the given id."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class UndoConflict(StoreError):
    """An undo would discard a later change of the same sample."""


class LabelConflict(StoreError):
    """An automatic change would overwrite a label of higher trust (a user's)."""


class ImageError(ConsistError):
    """An image is missing, unreadable, corrupt or too large."""
