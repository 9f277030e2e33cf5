"""The checker contract: what a plugin implements to vote on a prediction.

A checker is an *object* registered through ``consist_register_checkers`` (not a hook
implementation): the engine calls it itself, so it can order checkers by cost, give
each a time limit, and turn an exception or a hang into a recorded abstention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from consist.records import Neighbour, Prediction, Vote

if TYPE_CHECKING:
    from consist.contracts.features import FeatureSpec
    from consist.contracts.retrieval import Progress
    from consist.contracts.store import Store

__all__ = ["DEFAULT_TIMEOUT_S", "Abstain", "BaseChecker", "CheckContext", "Checker"]

#: Default per-call time limit of a checker, in seconds. A checker that needs longer
#: (an LMM on a slow server) sets its own ``timeout``.
DEFAULT_TIMEOUT_S = 60.0


class Abstain(Exception):
    """Raise from ``check`` to say "I have nothing to say about this query", with a reason."""


@attrs.frozen
class CheckContext:
    """What a checker may read besides the prediction and the neighbours.

    ``store`` is the store being verified against (``None`` for store-less use);
    ``votes`` are the votes cast so far by cheaper checkers in this decision, and
    ``scores`` the posterior log-odds per label after them, so that an expensive
    checker can focus on the labels still in contention. ``config`` holds the
    options given to this checker (``EngineConfig(checker_options={name: {...}})``).
    ``signals`` is the one mutable thing: a dict shared by the checkers of one
    decision where a checker may publish numbers for the controller and for later
    checkers (``context.signals["community_uncertainty"] = 1.3``). ``features`` names
    the local features of the run (``consist audit --features``), which checkers that
    read local features should use instead of their own default, so that every
    checker reads the same cached features.
    """

    store: Store | None = None
    votes: tuple[Vote, ...] = ()
    scores: Mapping[str, float] = attrs.field(factory=dict)
    config: Mapping[str, Any] = attrs.field(factory=dict)
    signals: dict[str, Any] = attrs.field(factory=dict)
    features: FeatureSpec | None = None


@runtime_checkable
class Checker(Protocol):
    """A consistency checker.

    Attributes:
        name: unique, stable identifier (appears in votes, CLI, config).
        cost: expected seconds per query; the engine runs cheaper checkers first.
        timeout: seconds before a call is abandoned and recorded as an abstention
            (``None`` runs it inline with no limit: only for trusted, fast checkers).

    Optional attributes, read with their defaults when absent (:class:`BaseChecker`
    sets them): ``enabled_by_default`` (True), ``description`` (""),
    ``reads_pixels`` (True: a vote of this checker is evidence from the image itself;
    False for checkers that only read labels, like the ``knn`` vote, whose agreement
    does not make an image "verified"), ``builds_store_graph`` (False: True for a
    checker that verifies every image against its neighbours to build store-wide
    state; the audit, which verifies those pairs itself, leaves it out unless named),
    and the methods ``prepare(store, options, progress)`` (build shared state once
    before many queries) and ``validate_options(options)``. A checker that verifies
    image pairs also implements :class:`consist.contracts.evidence.PairVerifier` and
    publishes its pairs under ``evidence["pairs"]`` (``PairEvidence``).
    """

    name: str
    cost: float
    timeout: float | None

    def check(self, prediction: Prediction, neighbours: Sequence[Neighbour], context: CheckContext) -> Sequence[Vote]:
        """Return votes about the query (``[]`` or ``raise Abstain(reason)`` to abstain)."""
        ...


class BaseChecker:
    """Convenience base class with the defaults most checkers want.

    Subclasses set ``name`` (and usually ``cost``) and implement :meth:`check`.
    ``enabled_by_default = False`` keeps a checker off unless asked for by name.
    ``description`` is shown by ``consist plugins``. ``reads_pixels`` and
    ``builds_store_graph`` are explained in :class:`Checker`.
    """

    name: str = ""
    cost: float = 1.0
    timeout: float | None = DEFAULT_TIMEOUT_S
    enabled_by_default: bool = True
    description: str = ""
    reads_pixels: bool = True
    builds_store_graph: bool = False

    def prepare(self, store: Store, options: Mapping[str, Any] | None = None, progress: Progress | None = None) -> None:
        """Build what this checker shares across queries (an index, a graph) once,
        before a batch or an audit starts its workers; ``options`` are this checker's
        ``checker_options``. The default does nothing."""

    def check(self, prediction: Prediction, neighbours: Sequence[Neighbour], context: CheckContext) -> Sequence[Vote]:
        raise NotImplementedError

    def vote(self, label: str, support: float, confidence: float = 1.0, *, neighbour: Neighbour | None = None, evidence: Mapping[str, Any] | None = None, **more: Any) -> Vote:
        """Build a :class:`Vote` signed with this checker's name; evidence comes as a
        dict (``evidence=``), as keyword arguments, or both."""
        return Vote(
            checker=self.name,
            label=label,
            support=support,
            confidence=confidence,
            evidence={**(evidence or {}), **more},
            neighbour_id=None if neighbour is None else neighbour.sample.id,
        )

    def validate_options(self, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` for options this checker does not understand.

        Called once when an :class:`~consist.Engine` is built, so that a typo in
        ``checker_options`` is an error then, not a failed run on every query. The
        default accepts anything.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} cost={self.cost}>"
