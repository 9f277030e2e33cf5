"""Hook specifications of consist: every way a plugin can extend it.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, made
known through the entry-point group ``consist``. Most hooks are *registration*
hooks: they receive a ``register`` callback and hand it objects (checkers,
retrievers, embedders, stores, reporters). The engine then calls those objects
itself, which is what lets it order them by cost, time them out and isolate their
failures. Two hooks are *overridable policies* (``firstresult``): aggregation and
adaptation; consist's own implementations are ``trylast`` defaults.

Every hookspec here is documented in ``docs/plugins.md`` (a test fails otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from consist.aggregate import AggregateResult, AggregationConfig
    from consist.contracts.checker import Checker
    from consist.contracts.features import ExtractorFactory
    from consist.contracts.feedback import FeedbackInterpreter
    from consist.contracts.reporter import Reporter
    from consist.contracts.retrieval import Embedder, Reranker, Retriever
    from consist.contracts.store import Store, StoreOpener
    from consist.controller import ControllerState
    from consist.records import Decision, Prediction, Vote

#: Marks hook specifications (used by consist and by plugins adding their own hooks).
hookspec = pluggy.HookspecMarker("consist")
#: Marks hook implementations in plugins: ``@consist.hookimpl``.
hookimpl = pluggy.HookimplMarker("consist")


# --------------------------------------------------------------------- bootstrap


@hookspec(historic=True)
def consist_addhookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add a plugin's own hook specifications.

    Called once for every plugin as it is registered (historic: late plugins see it
    too). Call ``pluginmanager.add_hookspecs(module)`` with a module of functions
    decorated with :data:`consist.hookspec`; other plugins may then implement them.
    """


# ------------------------------------------------------------------ registration


@hookspec
def consist_register_checkers(register: Callable[[Checker], None]) -> None:
    """Register consistency checkers: call ``register(checker)`` for each.

    A checker is any object with ``name``, ``cost``, ``timeout`` and
    ``check(prediction, neighbours, context) -> list[Vote]`` (see
    :class:`consist.Checker`; subclassing :class:`consist.BaseChecker` gives
    defaults). Names must be unique across all plugins.
    """


@hookspec
def consist_register_retrievers(register: Callable[[Retriever], None]) -> None:
    """Register retrievers (:class:`consist.contracts.retrieval.Retriever`): objects
    with ``name``, ``prepare(store, *, features, progress)`` and
    ``retrieve(query, store, k, *, exclude, features) -> list[Neighbour]``.
    """


@hookspec
def consist_register_rerankers(register: Callable[[Reranker], None]) -> None:
    """Register re-rankers (:class:`consist.contracts.retrieval.Reranker`): objects
    with ``name`` and ``rerank(query, neighbours, store, *, k, features)`` that reorder
    retrieved neighbours with costlier evidence (``consist query --rerank NAME``).
    """


@hookspec
def consist_register_embedders(register: Callable[[Embedder], None]) -> None:
    """Register embedders (:class:`consist.contracts.retrieval.Embedder`): objects with
    ``name``, ``dim`` and ``embed(image) -> numpy.ndarray`` (one L2-normalised float32
    vector per image), used to index samples and to retrieve neighbours by vector search.
    """


@hookspec
def consist_register_extractors(register: Callable[[str, ExtractorFactory], None]) -> None:
    """Register local-feature extractors by name: ``register("sift", factory)``.

    ``factory(**options)`` returns a :class:`consist.contracts.features.FeatureExtractor`
    (options: ``max_side``, ``max_keypoints``, ``device``). ``consist audit --features
    NAME`` extracts with it in parallel workers and caches the features in the store
    under the extractor's ``kind``; retrievers and checkers read them from there.
    """


@hookspec
def consist_register_stores(register: Callable[[str, StoreOpener], None]) -> None:
    """Register store back-ends by URI scheme: ``register("myscheme", opener)``.

    ``opener(uri, **options)`` returns an object implementing
    :class:`consist.contracts.store.Store` (see
    :class:`consist.contracts.store.StoreOpener` for the options);
    ``consist.open_store("myscheme://...")`` then finds it.
    """


@hookspec
def consist_register_reporters(register: Callable[[Reporter], None]) -> None:
    """Register reporters (:class:`consist.contracts.reporter.Reporter`): objects with
    ``name``, ``enabled_by_default`` and ``report(outcome) -> list[Path]``, run at the
    end of ``consist audit`` with the :class:`~consist.contracts.reporter.AuditOutcome`.
    consist's own ``audit.csv``, ``audit.jsonl``, ``summary.json`` and ``report.html``
    are built-in reporters.
    """


@hookspec
def consist_register_interpreters(register: Callable[[FeedbackInterpreter], None]) -> None:
    """Register sentence interpreters (:class:`consist.contracts.feedback.FeedbackInterpreter`):
    objects with ``name`` and ``interpret(store, sentence, sample_id, apply=)`` that turn
    what a person says about a sample into store changes. consist-semantic registers
    ``tell`` (its grammar, or an LMM when configured); ``consist review``'s sentence box
    calls the registered one.
    """


@hookspec
def consist_register_commands(cli: click.Group) -> None:
    """Add commands to the ``consist`` CLI: ``@cli.command()`` inside the hook."""


# ---------------------------------------------------------------------- policies


@hookspec(firstresult=True)
def consist_aggregate(prediction: Prediction, votes: Sequence[Vote], config: AggregationConfig) -> AggregateResult | None:
    """Combine the votes into per-label scores and a decision.

    Return an :class:`consist.aggregate.AggregateResult` to replace the default rule
    (weighted log-odds with a "none of these" option, see docs/architecture.md), or
    ``None`` to let the next implementation decide. The first non-``None`` wins.
    """


@hookspec(firstresult=True)
def consist_adapt(decision: Decision, prediction: Prediction, store: Store, config: Any) -> str | None:
    """Write what a decision taught back into the store (database adaptation).

    Return a short description of what was done (``"added q1 as 'cat' (auto)"``) or
    of why nothing was (``"not adapted: confidence 0.62 < 0.90"``); ``None`` passes
    to the next implementation. The default adds confident decisions as verified
    samples with ``auto`` provenance and never overwrites a user's label.
    """


@hookspec
def consist_skip_checker(checker: Checker, state: ControllerState) -> str | None:
    """Say why the controller should *not* run ``checker`` now, or ``None`` to allow it.

    Called before each checker with the decision so far. Any non-``None`` answer
    skips the checker and is recorded as the reason in ``Decision.runs``. The
    default skips once the decision is confident (``stop_confidence``).
    """


# ------------------------------------------------------------------ notification


@hookspec
def consist_decision_made(decision: Decision, prediction: Prediction) -> None:
    """Observe every decision (after aggregation and adaptation): logging, metrics.

    Exceptions raised here are logged and swallowed: an observer cannot break a
    decision.
    """
