"""Default policies: aggregation, adaptation and the controller's stopping rule.

All three are ``trylast`` so that any plugin's implementation runs first and can
replace them (``firstresult`` hooks) or add reasons (``consist_skip_checker``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from consist.adapt import adapt_decision
from consist.aggregate import AggregateResult, AggregationConfig, aggregate
from consist.contracts.hookspecs import hookimpl
from consist.records import Decision, Prediction, Vote

if TYPE_CHECKING:
    from consist.contracts.store import Store


@hookimpl(trylast=True)
def consist_aggregate(prediction: Prediction, votes: Sequence[Vote], config: AggregationConfig) -> AggregateResult:
    return aggregate(prediction, votes, config)


@hookimpl(trylast=True)
def consist_adapt(decision: Decision, prediction: Prediction, store: Store, config: Any) -> str:
    return adapt_decision(decision, prediction, store, threshold=getattr(config, "adapt_threshold", 0.9))


@hookimpl(trylast=True)
def consist_skip_checker(checker: Any, state: Any) -> str | None:
    cfg = state.config
    if checker.name in cfg.always_run or float(getattr(checker, "cost", 1.0)) < cfg.negligible_cost:
        return None  # never skip what costs nothing
    if state.n_checked < cfg.min_checkers:
        return None
    if state.current.confidence >= cfg.stop_confidence:
        return f"confident: {state.current.label!r} at {state.current.confidence:.3f} >= stop_confidence {cfg.stop_confidence:g}"
    return None
