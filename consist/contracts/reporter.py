"""The reporter contract: what writes an audit's results somewhere.

``consist audit`` ends by running every reporter enabled by default (and those named
with ``--reporters``). consist's own outputs (``audit.csv``, ``audit.jsonl``,
``summary.json``, ``report.html``) are built-in reporters registered through the same
hook a plugin uses, so a plugin's reporter sees exactly what they see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = ["AuditOutcome", "Reporter"]


@attrs.frozen
class AuditOutcome:
    """Everything a reporter may read about one finished audit.

    Attributes:
        out: the audit's output folder (reporters write there, or elsewhere).
        rows: one verdict per sample (``consist.audit.AuditRow``: sample,
            given_label, status, flagged, suggested_label, confidence, reason, ...), in
            dataset order.
        summary: the ``summary.json`` object (counts, per-label table, label findings,
            timings, failures, configuration).
        store: URI of the store the audit used (features, history).
        dataset: the audited folder or CSV.
        records: ``records()`` iterates the full per-sample records (neighbours, the
            checkers' decision with votes and pair evidence), streamed from the
            journal: never all in memory.
    """

    out: Path
    rows: Sequence[Any]
    summary: Mapping[str, Any]
    store: str
    dataset: str
    records: Callable[[], Iterator[Mapping[str, Any]]] = attrs.field(eq=False, repr=False)


@runtime_checkable
class Reporter(Protocol):
    """Writes an audit's results: ``report(outcome)`` returns the paths it wrote.

    ``enabled_by_default = False`` keeps a reporter off unless named with
    ``consist audit --reporters NAME``. A reporter's exception is reported as a
    failure in the summary; it never loses the other outputs.
    """

    name: str
    enabled_by_default: bool

    def report(self, outcome: AuditOutcome) -> Sequence[Path]: ...
