"""The controller's view of a decision in progress, and its default stopping rule.

Before each checker runs, the engine asks every ``consist_skip_checker`` hook whether
to skip it, passing a :class:`ControllerState`. The default (``consist.builtin``)
stops once the decision is confident; the semantic plugin's frontal controller adds
its own reasons (run the LMM only when the topology is unsure, and so on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from consist.aggregate import AggregateResult
from consist.records import CheckerRun, Neighbour, Prediction, Vote

__all__ = ["ControllerConfig", "ControllerState"]


@attrs.frozen
class ControllerConfig:
    """When to stop running checkers.

    Attributes:
        stop_confidence: skip the remaining checkers once the leading label's
            posterior reaches this (0.95: the default rule needs about +3 log-odds
            of net evidence, two strong agreeing votes, to get there).
        min_checkers: run at least this many checkers costing ``negligible_cost`` or
            more before stopping early, so that a confident recognizer is still
            checked once against the pixels (0 trusts the prior).
        negligible_cost: checkers cheaper than this (seconds; default 1 ms) are
            arithmetic on the retrieval, like the built-in ``knn`` vote: they always
            run when reached, but do not count towards ``min_checkers``.
        always_run: names of checkers that the default rule never skips.
    """

    stop_confidence: float = 0.95
    min_checkers: int = 1
    negligible_cost: float = 1e-3
    always_run: frozenset[str] = attrs.field(factory=frozenset, converter=frozenset)


@attrs.frozen
class ControllerState:
    """The decision so far, as seen before running the next checker.

    ``signals`` carries numbers other plugins publish for the controller (for
    example the topological plugin's ``community_uncertainty``).
    """

    prediction: Prediction
    neighbours: tuple[Neighbour, ...]
    votes: tuple[Vote, ...]
    current: AggregateResult
    runs: tuple[CheckerRun, ...]
    remaining: tuple[str, ...]
    config: ControllerConfig
    signals: Mapping[str, Any] = attrs.field(factory=dict)

    costs: Mapping[str, float] = attrs.field(factory=dict)

    @property
    def n_ran(self) -> int:
        """Checkers that actually ran (including those that abstained or failed)."""
        return sum(1 for r in self.runs if r.status.value != "skipped")

    @property
    def n_checked(self) -> int:
        """Non-negligible checkers that ran (what ``min_checkers`` counts)."""
        return sum(1 for r in self.runs if r.status.value != "skipped" and self.costs.get(r.checker, 1.0) >= self.config.negligible_cost)
