"""The frontal controller: reflect only when the cheaper evidence is unsure.

The thesis' "frontal module" decides when the expensive reflection is worth it.
Here it is a ``consist_skip_checker`` rule for every checker that opts in
(``frontal_controlled = True``, as the reflection checker does): the checker runs
when *any* of these says the decision is uncertain, and is skipped, with the
reason recorded in ``Decision.runs``, when none does:

* ``min_margin`` (2.0): the log-odds gap between the two best labels after the
  cheaper checkers; below it the top two are within e^2 ~ 7:1 odds;
* ``min_confidence`` (``None``: off): the leading label's posterior. Off by
  default because the posterior includes a "none of these" option: a label far
  ahead of every other one may still sit at 0.6 when the evidence is thin, and the
  margin already says whether the labels in contention are close;
* ``max_community_uncertainty`` (1.0): the topological plugin's
  ``signals["community_uncertainty"]`` (entropy of the community sizes among the
  top-20, in nats; 1.0 is the threshold of An et al. 2021's code); ignored when no
  checker published it;
* ``min_recognizer_confidence`` (0.5): the recognizer's own score for its top
  candidate (``None`` ignores it: an audit's "recognizer" is the dataset's label);
* ``reflect_on_change`` (on): the evidence so far would change the recognizer's
  label. A correction is the consequential act, and the recognizer disagreeing with
  the checkers is uncertainty in itself; without this rule a wrong kNN majority with
  a wide margin would relabel a correct image unchecked (seen on landmark-multiview,
  see benchmarks/README.md).

It counts what it decided (``stats``): the model calls it saved.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import attrs

__all__ = ["COMMUNITY_SIGNAL", "FrontalController", "FrontalStats"]

#: The signal the topological plugin publishes (entropy in nats).
COMMUNITY_SIGNAL = "community_uncertainty"


@attrs.frozen
class FrontalStats:
    consulted: int
    reflected: int
    skipped: int
    reasons: dict[str, int]

    @property
    def saved_share(self) -> float:
        return self.skipped / self.consulted if self.consulted else 0.0


class FrontalController:
    """Decides, per decision, whether an expensive (opt-in) checker should run."""

    def __init__(
        self, *, min_margin: float = 2.0, min_confidence: float | None = None, max_community_uncertainty: float = 1.0, min_recognizer_confidence: float | None = 0.5, reflect_on_change: bool = True
    ) -> None:
        if min_margin < 0 or not (min_confidence is None or 0 <= min_confidence <= 1) or max_community_uncertainty < 0:
            raise ValueError("min_margin >= 0, 0 <= min_confidence <= 1 and max_community_uncertainty >= 0 are required")
        self.min_margin = float(min_margin)
        self.min_confidence = min_confidence
        self.max_community_uncertainty = float(max_community_uncertainty)
        self.min_recognizer_confidence = min_recognizer_confidence
        self.reflect_on_change = bool(reflect_on_change)
        self._lock = threading.Lock()
        self._consulted = 0
        self._reflected = 0
        self._reasons: Counter[str] = Counter()

    def uncertainty(self, state: Any) -> list[str]:
        """Why the decision in ``state`` is uncertain (empty: it is not)."""
        why: list[str] = []
        current = state.current
        if current.margin < self.min_margin:
            why.append(f"margin {current.margin:.2f} < {self.min_margin:g}")
        if self.min_confidence is not None and current.confidence < self.min_confidence:
            why.append(f"confidence {current.confidence:.2f} < {self.min_confidence:g}")
        cu = state.signals.get(COMMUNITY_SIGNAL) if state.signals else None
        if isinstance(cu, (int, float)) and cu > self.max_community_uncertainty:
            why.append(f"community uncertainty {cu:.2f} > {self.max_community_uncertainty:g}")
        if self.reflect_on_change and current.label != state.prediction.top.label:
            why.append(f"change {state.prediction.top.label!r} -> {current.label!r} would be made")
        rc = self.min_recognizer_confidence
        if rc is not None and state.prediction.top.score < rc:
            why.append(f"recognizer {state.prediction.top.score:.2f} < {rc:g}")
        return why

    def skip_reason(self, state: Any) -> str | None:
        """``None`` to reflect (uncertain), or why reflecting is not worth a call."""
        why = self.uncertainty(state)
        with self._lock:
            self._consulted += 1
            if why:
                self._reflected += 1
                for w in why:
                    self._reasons[w.split(" ", 1)[0] if not w.startswith("community") else "community"] += 1
                return None
        cu = state.signals.get(COMMUNITY_SIGNAL) if state.signals else None
        parts = [f"margin {state.current.margin:.2f} >= {self.min_margin:g}"]
        if self.min_confidence is not None:
            parts.append(f"confidence {state.current.confidence:.2f} >= {self.min_confidence:g}")
        if isinstance(cu, (int, float)):
            parts.append(f"community uncertainty {cu:.2f} <= {self.max_community_uncertainty:g}")
        return "frontal: certain enough, no reflection (" + ", ".join(parts) + ")"

    @property
    def stats(self) -> FrontalStats:
        with self._lock:
            return FrontalStats(self._consulted, self._reflected, self._consulted - self._reflected, dict(self._reasons))

    def reset(self) -> None:
        with self._lock:
            self._consulted = self._reflected = 0
            self._reasons.clear()
