"""The ``lmm`` audit reporter: what the reflection checker's model calls came to.

It writes no file: it adds ``summary["lmm"]`` (``summary.json`` is written after
every other reporter) with the reflection checker's runs by status, how many
failed, and how many of those the back-end's circuit breaker refused without a
request (a dead server: three failed calls per worker, then none). Nothing is
added when the reflection checker never ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["LMMReporter"]


class LMMReporter:
    name = "lmm"
    enabled_by_default = True
    description = "adds the reflection checker's model calls (failures, circuit breaker) to summary.json"

    def report(self, outcome: Any) -> Sequence[Path]:
        statuses: Counter[str] = Counter()
        refused = 0
        for rec in outcome.records():
            for run in ((rec or {}).get("decision") or {}).get("runs") or ():
                if not isinstance(run, dict) or run.get("checker") != "reflection":
                    continue
                statuses[str(run.get("status"))] += 1
                if "circuit open" in str(run.get("reason", "")):
                    refused += 1
        if statuses:
            outcome.summary["lmm"] = {"reflection_runs": dict(sorted(statuses.items())), "failed": statuses.get("failed", 0), "refused_by_circuit_breaker": refused}
        return []
