"""consist-semantic's sentence interpreter, registered as ``tell``
(:class:`consist.contracts.FeedbackInterpreter`): the same understanding as the
``consist tell`` command (the grammar, or the configured LMM with the grammar as its
fallback), for every front end that takes sentences (``consist review``'s sentence box).
"""

from __future__ import annotations

from typing import Any

from consist.contracts import FeedbackOutcome, Store

__all__ = ["TellInterpreter"]


class TellInterpreter:
    """``interpret(store, "that's the Radcliffe Camera", "img-3")`` -> what it means,
    applied in one transaction (user provenance, undoable)."""

    name = "tell"

    def __init__(self, *, use_lmm: bool = True) -> None:
        self.use_lmm = use_lmm

    def _backend(self) -> Any:
        if not self.use_lmm:
            return None
        from consist_semantic.backends import LMMUnavailable, backend_from_env, configured_in_env

        if not configured_in_env():
            return None
        try:
            return backend_from_env()
        except LMMUnavailable:  # misconfigured: the grammar still understands
            return None

    def interpret(self, store: Store, sentence: str, sample_id: str | None = None, *, apply: bool = True) -> FeedbackOutcome:
        from consist_semantic.conversation import tell

        plan, entries = tell(store, sentence, sample_id, backend=self._backend(), apply=apply)
        return FeedbackOutcome(
            sentence=plan.sentence,
            target=plan.target,
            actions=tuple(plan.describe()),
            parser=plan.parser,
            warnings=tuple(plan.warnings),
            entries=tuple(entries),
            details=plan.to_dict(),
        )
