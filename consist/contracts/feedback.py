"""The feedback contract: a sentence a person says about a sample, turned into store
changes (``consist tell`` on the command line, the sentence box of ``consist review``).

The core knows no grammar and no LMM: consist-semantic registers its understanding
(``tell``) through :func:`consist.contracts.hookspecs.consist_register_interpreters`,
and every front end (the CLI, the review server, a third party's chat bot) calls the
registered interpreter, so a sentence means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from consist.contracts.store import Store
from consist.records import HistoryEntry

__all__ = ["FeedbackInterpreter", "FeedbackOutcome"]


@attrs.frozen
class FeedbackOutcome:
    """What an interpreter understood and did.

    Attributes:
        sentence: what was said.
        target: the sample it was about (``None``: about the store as a whole).
        actions: one line per understood change ("relabel img-3 -> mug", ...), in the
            order they are applied.
        parser: who understood it (``"grammar"``, ``"lmm"``, a plugin's name).
        warnings: what the person should know (a contradiction, a fallback).
        entries: the history entries written (empty when ``apply=False``).
        details: JSON-able extras of the interpreter (its plan, as it shows it).
    """

    sentence: str
    target: str | None
    actions: tuple[str, ...]
    parser: str
    warnings: tuple[str, ...] = ()
    entries: tuple[HistoryEntry, ...] = ()
    details: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class FeedbackInterpreter(Protocol):
    """Understands a sentence about a sample and applies it to a store.

    ``interpret`` raises ``consist.errors.ConsistError`` (one line, shown to the
    person) when the sentence cannot be understood; nothing is written then. With
    ``apply=True`` every understood change is written in one transaction, each a history
    entry with user provenance that ``undo`` reverts.
    """

    name: str

    def interpret(self, store: Store, sentence: str, sample_id: str | None = None, *, apply: bool = True) -> FeedbackOutcome: ...
