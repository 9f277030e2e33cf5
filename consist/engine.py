"""The verification engine: run checkers cheapest first, isolate them, aggregate, adapt.

One :meth:`Engine.verify` call is one decision:

1. neighbours come from the caller or from the configured retriever;
2. enabled checkers are sorted by ``cost``; before each, the ``consist_skip_checker``
   hooks may skip it (the default stops once the decision is confident);
3. each checker runs isolated: in a (reused) daemon thread with its time limit, so
   that an exception or a hang becomes a recorded abstention (``Decision.runs``),
   never a crash; a hung thread is abandoned, not killed (Python cannot kill threads), and a
   checker that timed out is not called again by this engine until
   ``quarantine_s`` has passed;
4. the votes are aggregated (``consist_aggregate``; default: weighted log-odds);
5. a store, when given, is adapted (``consist_adapt``), and observers are told
   (``consist_decision_made``).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from consist import plugins as _plugins
from consist.aggregate import AggregateResult, AggregationConfig
from consist.aliases import canonicalise_prediction
from consist.contracts.checker import Abstain, CheckContext, Checker
from consist.contracts.features import FeatureSpec
from consist.contracts.retrieval import Retriever
from consist.controller import ControllerConfig, ControllerState
from consist.errors import ConsistError
from consist.records import CheckerRun, Decision, Localisation, Neighbour, Prediction, Region, RunStatus, Vote

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = ["Engine", "EngineConfig"]

log = structlog.get_logger("consist.engine")


@attrs.frozen
class EngineConfig:
    """Everything that tunes an :class:`Engine`; each part has documented defaults.

    Attributes:
        controller: when to stop running checkers (:class:`ControllerConfig`).
        aggregation: the vote-combination rule's parameters (:class:`AggregationConfig`).
        k: neighbours to retrieve when the caller gives none.
        adapt: write confident decisions back to the store.
        adapt_threshold: minimum decision confidence for adaptation (0.9).
        checker_options: per-checker options, given to it as ``context.config``.
        timeouts: per-checker time-limit overrides, in seconds.
        quarantine_s: after a time-out, how long the checker is not called again.
        features: the local features checkers should read (``CheckContext.features``;
            ``None``: each checker's own default).
    """

    controller: ControllerConfig = attrs.field(factory=ControllerConfig)
    aggregation: AggregationConfig = attrs.field(factory=AggregationConfig)
    k: int = 10
    adapt: bool = True
    adapt_threshold: float = 0.9
    checker_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    timeouts: Mapping[str, float] = attrs.field(factory=dict)
    quarantine_s: float = 300.0
    features: FeatureSpec | None = None


class _Outcome:
    __slots__ = ("done", "error", "votes")

    def __init__(self) -> None:
        self.votes: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class _Worker:
    """A reusable daemon thread for checker calls (starting a thread per call cost
    more than the rest of the engine). A worker whose call timed out is abandoned:
    it finishes the call, if ever, and exits instead of returning to the pool."""

    def __init__(self, pool: _WorkerPool) -> None:
        self.pool = pool
        self.tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.abandoned = False
        threading.Thread(target=self._loop, name="consist-checker", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.tasks.get()()
            with self.pool.lock:
                if self.abandoned:
                    return
                self.pool.idle.append(self)


class _WorkerPool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []

    def submit(self, fn: Callable[[], None]) -> _Worker:
        with self.lock:
            worker = self.idle.pop() if self.idle else None
        worker = worker or _Worker(self)
        worker.tasks.put(fn)
        return worker

    def abandon(self, worker: _Worker, outcome: _Outcome) -> bool:
        """Abandon a worker whose call is late; False if it finished meanwhile."""
        with self.lock:
            if outcome.done.is_set():
                return False
            worker.abandoned = True
            return True


_POOL = _WorkerPool()


class Engine:
    """Verifies predictions against neighbours with the registered checkers.

    Args:
        checkers: names of registered checkers, or checker objects, to use; ``None``
            uses every registered checker that is enabled by default.
        store: the store to retrieve from and adapt (optional).
        config: :class:`EngineConfig`.
        retriever: name of a registered retriever (default ``"vector"``), used when
            ``verify`` is called without neighbours.
        plugin_manager: a specific plugin manager (tests); default the global one.
    """

    def __init__(
        self,
        checkers: Sequence[str | Checker] | None = None,
        *,
        store: Store | None = None,
        config: EngineConfig | None = None,
        retriever: str | Any = "vector",
        plugin_manager: Any = None,
    ) -> None:
        self.pm = plugin_manager or _plugins.get_plugin_manager()
        self.config = config or EngineConfig()
        self.store = store
        registered = _plugins.checkers(self.pm)
        chosen: list[Checker] = []
        if checkers is None:
            chosen = [c for c in registered.values() if getattr(c, "enabled_by_default", True)]
        else:
            for item in checkers:
                if isinstance(item, str):
                    if item not in registered:
                        known = ", ".join(sorted(registered)) or "none"
                        hint = f"; {_plugins.ENV_VAR}={os.environ[_plugins.ENV_VAR]!r} limits which plugins load" if _plugins.ENV_VAR in os.environ else ""
                        raise ConsistError(f"unknown checker {item!r} (registered: {known}{hint})")
                    chosen.append(registered[item])
                else:
                    if not isinstance(item, Checker):
                        raise ConsistError(f"{item!r} is not a checker: it needs name, cost, timeout and check()")
                    chosen.append(item)
        # cheapest first; ties keep the given/registration order
        self.checkers: tuple[Checker, ...] = tuple(sorted(chosen, key=lambda c: float(getattr(c, "cost", 1.0))))
        by_name = {**registered, **{c.name: c for c in self.checkers}}
        for name, options in self.config.checker_options.items():
            if name not in by_name:
                import difflib

                close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.75)
                if close:  # a typo: fail now, not silently run with defaults
                    raise ConsistError(f"checker_options for unknown checker {name!r}: did you mean {close[0]!r}?")
                # options for a plugin that is not installed (or disabled) here: harmless
                log.warning("checker_options_for_unknown_checker", checker=name, registered=sorted(by_name))
                continue
            validate = getattr(by_name.get(name), "validate_options", None)
            if validate is None:
                continue
            try:
                validate(options)
            except (TypeError, ValueError) as exc:
                raise ConsistError(f"checker {name!r}: bad options: {exc}") from exc
        self._retriever_spec = retriever
        self._retriever: Retriever | None = None
        self._quarantine: dict[str, float] = {}

    # ------------------------------------------------------------------ retrieval

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            spec = self._retriever_spec
            if isinstance(spec, str):
                found = _plugins.retrievers(self.pm)
                if spec not in found:
                    raise ConsistError(f"unknown retriever {spec!r} (registered: {', '.join(sorted(found)) or 'none'})")
                spec = found[spec]
            self._retriever = spec
        return self._retriever

    def neighbours(self, prediction: Prediction, k: int | None = None) -> list[Neighbour]:
        """Retrieve the query's neighbours from the store (empty without a store)."""
        if self.store is None:
            return []
        query = prediction.query
        return list(self.retriever.retrieve(query, self.store, k or self.config.k, exclude=(query.id,), features=self.config.features))

    # ------------------------------------------------------------------- checking

    def _timeout_for(self, checker: Checker) -> float | None:
        return self.config.timeouts.get(checker.name, getattr(checker, "timeout", None))

    def _call(self, checker: Checker, prediction: Prediction, neighbours: Sequence[Neighbour], ctx: CheckContext) -> tuple[list[Vote], CheckerRun]:
        name = checker.name
        timeout = self._timeout_for(checker)
        t0 = time.perf_counter()
        outcome = _Outcome()

        def target() -> None:
            try:
                outcome.votes = checker.check(prediction, neighbours, ctx)
            except BaseException as exc:
                outcome.error = exc
            finally:
                outcome.done.set()

        if timeout is None:
            target()
        else:
            worker = _POOL.submit(target)
            if not outcome.done.wait(timeout) and _POOL.abandon(worker, outcome):
                self._quarantine[name] = time.monotonic() + self.config.quarantine_s
                elapsed = time.perf_counter() - t0
                log.warning("checker_timeout", checker=name, query=prediction.query.id, timeout_s=timeout)
                return [], CheckerRun(name, RunStatus.TIMEOUT, f"no answer within {timeout:g} s", elapsed)
        elapsed = time.perf_counter() - t0
        err = outcome.error
        if isinstance(err, Abstain):
            return [], CheckerRun(name, RunStatus.ABSTAINED, str(err) or "abstained", elapsed)
        if err is not None:
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise err
            log.warning("checker_failed", checker=name, query=prediction.query.id, error=f"{type(err).__name__}: {err}")
            return [], CheckerRun(name, RunStatus.FAILED, f"{type(err).__name__}: {err}", elapsed)
        raw = outcome.votes
        if raw is None:
            raw = []
        if isinstance(raw, Vote) or not isinstance(raw, Iterable):
            return [], CheckerRun(name, RunStatus.FAILED, f"check() returned {type(raw).__name__}, not a list of Vote", elapsed)
        votes: list[Vote] = []
        for v in raw:
            if not isinstance(v, Vote):
                return [], CheckerRun(name, RunStatus.FAILED, f"check() returned a {type(v).__name__} among its votes", elapsed)
            votes.append(v if v.checker == name else attrs.evolve(v, checker=name))
        if not votes:
            return [], CheckerRun(name, RunStatus.ABSTAINED, "no votes", elapsed)
        return votes, CheckerRun(name, RunStatus.RAN, "", elapsed, len(votes))

    def _aggregate(self, prediction: Prediction, votes: Sequence[Vote]) -> AggregateResult:
        result = self.pm.hook.consist_aggregate(prediction=prediction, votes=votes, config=self.config.aggregation)
        if result is None:  # every implementation passed: cannot happen with the default loaded
            raise ConsistError("no consist_aggregate implementation returned a result")
        return result

    def verify(self, prediction: Prediction, neighbours: Sequence[Neighbour] | None = None, *, adapt: bool | None = None) -> Decision:
        """Decide on one prediction. Never raises because of a checker."""
        t0 = time.perf_counter()
        if self.store is not None:  # personal names ("Bluey") compare as their labels
            prediction = canonicalise_prediction(prediction, self.store)
        if neighbours is None:
            neighbours = self.neighbours(prediction)
        neighbours = tuple(neighbours)
        votes: list[Vote] = []
        runs: list[CheckerRun] = []
        signals: dict[str, Any] = {}
        current = self._aggregate(prediction, votes)
        names = [c.name for c in self.checkers]
        costs = {c.name: float(getattr(c, "cost", 1.0)) for c in self.checkers}
        for i, checker in enumerate(self.checkers):
            until = self._quarantine.get(checker.name)
            if until is not None and time.monotonic() < until:
                runs.append(CheckerRun(checker.name, RunStatus.SKIPPED, "quarantined after a time-out"))
                continue
            state = ControllerState(
                prediction=prediction,
                neighbours=neighbours,
                votes=tuple(votes),
                current=current,
                runs=tuple(runs),
                remaining=tuple(names[i:]),
                config=self.config.controller,
                signals=signals,
                costs=costs,
            )
            reasons = [r for r in self.pm.hook.consist_skip_checker(checker=checker, state=state) if r]
            if reasons:
                runs.append(CheckerRun(checker.name, RunStatus.SKIPPED, "; ".join(reasons)))
                continue
            ctx = CheckContext(
                store=self.store,
                votes=tuple(votes),
                scores=dict(current.scores),
                config=self.config.checker_options.get(checker.name, {}),
                signals=signals,
                features=self.config.features,
            )
            new_votes, run = self._call(checker, prediction, neighbours, ctx)
            runs.append(run)
            if new_votes:
                votes.extend(new_votes)
                current = self._aggregate(prediction, votes)
        decision = Decision(
            query_id=prediction.query.id,
            label=current.label,
            confidence=current.confidence,
            changed=current.label != prediction.top.label,
            predicted_label=prediction.top.label,
            scores=current.scores,
            votes=tuple(votes),
            runs=tuple(runs),
            localisations=_localisations(votes),
            elapsed_s=time.perf_counter() - t0,
        )
        if self.store is not None and (self.config.adapt if adapt is None else adapt):
            outcome = self.pm.hook.consist_adapt(decision=decision, prediction=prediction, store=self.store, config=self.config)
            decision = attrs.evolve(decision, adapted=outcome, elapsed_s=time.perf_counter() - t0)
        self._notify(decision, prediction)
        return decision

    def _notify(self, decision: Decision, prediction: Prediction) -> None:
        log.info(
            "decision",
            query=decision.query_id,
            label=decision.label,
            predicted=decision.predicted_label,
            confidence=round(decision.confidence, 4),
            changed=decision.changed,
            ran=[r.checker for r in decision.runs if r.status is RunStatus.RAN],
            skipped=[r.checker for r in decision.skipped],
            elapsed_ms=round(decision.elapsed_s * 1e3, 3),
        )
        for impl in self.pm.hook.consist_decision_made.get_hookimpls():
            try:
                impl.function(decision=decision, prediction=prediction)
            except Exception as exc:
                log.warning("observer_failed", plugin=impl.plugin_name, error=f"{type(exc).__name__}: {exc}")

    def verify_many(
        self,
        items: Iterable[Prediction | tuple[Prediction, Sequence[Neighbour] | None]],
        *,
        progress: bool = False,
        total: int | None = None,
        adapt: bool | None = None,
    ) -> Iterator[Decision]:
        """Decide on many predictions, lazily (a generator: memory stays bounded).

        Each item is a prediction (neighbours are retrieved) or a
        ``(prediction, neighbours)`` pair. ``progress=True`` shows a progress bar.
        """
        iterable: Iterable[Any] = items
        if progress:
            from tqdm.auto import tqdm

            iterable = tqdm(items, total=total, unit="query", desc="verifying")
        for item in iterable:
            if isinstance(item, Prediction):
                yield self.verify(item, adapt=adapt)
            else:
                prediction, neighbours = item
                yield self.verify(prediction, neighbours, adapt=adapt)


def _region_from(evidence: Any) -> Region | None:
    poly = evidence.get("polygon")
    box = evidence.get("box")
    try:
        if poly:
            return Region(polygon=tuple(tuple(p) for p in poly))
        if box:
            return Region(box=tuple(box))
    except (TypeError, ValueError):
        pass  # a checker's malformed region is evidence lost, not a crash
    return None


def _localisations(votes: Sequence[Vote]) -> tuple[Localisation, ...]:
    """Regions that supporting votes report, in the neighbours' pixel coordinates.

    A vote's own ``evidence["polygon"]``/``["box"]`` localises the query in
    ``vote.neighbour_id``; ``evidence["localisations"]`` may list more, as
    ``{"neighbour": id, "polygon" | "box": ..., "score": ...}`` (one vote per label
    can thus localise the object in every verified neighbour of that label).
    """
    out: list[Localisation] = []
    seen: set[tuple[str, str]] = set()
    for v in votes:
        if v.support <= 0.5:
            continue
        entries: list[tuple[Any, Any, float]] = []
        if v.neighbour_id is not None:
            entries.append((v.neighbour_id, v.evidence, v.support))
        extra = v.evidence.get("localisations")
        if isinstance(extra, list):
            for item in extra:
                if isinstance(item, dict) and isinstance(item.get("neighbour"), str):
                    score = item.get("score", v.support)
                    entries.append((item["neighbour"], item, float(score) if isinstance(score, (int, float)) else v.support))
        for sample_id, ev, score in entries:
            region = _region_from(ev)
            if region is None or (sample_id, v.checker) in seen:
                continue
            seen.add((sample_id, v.checker))
            out.append(Localisation(sample_id=sample_id, region=region, checker=v.checker, score=score))
    return tuple(out)
