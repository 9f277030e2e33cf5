"""Engine overhead per decision, with trivial checkers (target: < 1 ms).

The checkers here answer instantly (one or two fixed votes), so what is timed is the
framework: sorting/skipping logic and the ``consist_skip_checker`` hook per checker,
the isolation of each call (inline, or a daemon thread with a time limit), vote
validation, aggregation after every checker, building the :class:`Decision`, and the
observers. No store is given, so there is no retrieval and no adaptation: the
neighbours are passed in.

Scenarios (each over the same N predictions, after a warm-up):

* ``baseline``: an engine with no checkers (aggregation + Decision only);
* ``inline``: 3 trivial checkers with ``timeout=None`` (run in the caller's thread);
* ``inline+knn``: the same plus the builtin ``knn`` checker over 10 neighbours;
* ``thread``: 3 trivial checkers with a time limit (the BaseChecker default): each
  call runs in its own daemon thread;
* ``thread+knn``: the same plus ``knn`` (``knn`` itself always runs inline).

Each scenario is timed through ``Engine.verify`` (one call per decision) and through
``Engine.verify_many`` (a generator over ``(prediction, neighbours)`` pairs; the
time between consecutive yields is one decision). The controller's early stop is
disabled (``stop_confidence`` > 1) so that every checker runs on every decision:
the worst case for the framework.

Run: ``python benchmarks/bench_engine.py`` (``--quick`` for a smoke run, ``--json``
for a JSON object on stdout, ``--help`` for the options).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import numpy as np

from consist import BaseChecker, CheckContext, ControllerConfig, Engine, EngineConfig
from consist.records import Candidate, Neighbour, Prediction, Query, RunStatus, Sample, Vote

TARGET_MS = 1.0
THREAD_TIMEOUT_S = 5.0  # never reached: the checkers answer in microseconds

LABELS = ("cat", "dog", "fox", "owl")


class _Trivial(BaseChecker):
    """Returns fixed, weak votes (support near 0.5, so that nothing is decided early)."""

    def __init__(self, name: str, cost: float, timeout: float | None, two_votes: bool) -> None:
        self.name = name
        self.cost = cost
        self.timeout = timeout
        self._votes = [self.vote("cat", 0.6, 0.8)]
        if two_votes:
            self._votes.append(self.vote("dog", 0.45, 0.5))

    def check(self, prediction: Prediction, neighbours: Sequence[Neighbour], context: CheckContext) -> Sequence[Vote]:
        return self._votes


def trivial_checkers(timeout: float | None) -> list[BaseChecker]:
    return [
        _Trivial("trivial_a", 0.001, timeout, two_votes=False),
        _Trivial("trivial_b", 0.002, timeout, two_votes=True),
        _Trivial("trivial_c", 0.003, timeout, two_votes=False),
    ]


def make_items(n: int, n_neighbours: int, dim: int, seed: int = 0) -> list[tuple[Prediction, tuple[Neighbour, ...]]]:
    """N predictions, each with its own ``n_neighbours`` labelled neighbours."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        q = Query(id=f"q{i}", uri=f"file:///queries/{i}.jpg", embedding=rng.standard_normal(dim).astype(np.float32))
        pred = Prediction(query=q, candidates=(Candidate("cat", 0.55), Candidate("dog", 0.3), Candidate("fox", 0.1)))
        sims = np.sort(rng.uniform(0.5, 0.95, n_neighbours))[::-1]
        neighbours = tuple(
            Neighbour(
                sample=Sample(id=f"s{i}_{j}", uri=f"file:///db/{i}_{j}.jpg", label=LABELS[int(rng.integers(len(LABELS)))], meta={"split": "train"}),
                similarity=float(sims[j]),
                rank=j,
            )
            for j in range(n_neighbours)
        )
        items.append((pred, neighbours))
    return items


def build_engines(with_baseline: bool = True) -> dict[str, tuple[Engine, int]]:
    """scenario -> (engine, number of checkers)."""
    cfg = EngineConfig(controller=ControllerConfig(stop_confidence=1.01, min_checkers=0), adapt=False)
    specs: dict[str, list[Any]] = {}
    if with_baseline:
        specs["baseline (no checkers)"] = []
    specs["inline (3 trivial, timeout=None)"] = trivial_checkers(None)
    specs["inline+knn (3 trivial + knn, 10 nbrs)"] = [*trivial_checkers(None), "knn"]
    specs[f"thread (3 trivial, timeout={THREAD_TIMEOUT_S:g}s)"] = trivial_checkers(THREAD_TIMEOUT_S)
    specs["thread+knn (3 trivial + knn, 10 nbrs)"] = [*trivial_checkers(THREAD_TIMEOUT_S), "knn"]
    return {name: (Engine(checkers, config=cfg), len(checkers)) for name, checkers in specs.items()}


def sanity_check(engine: Engine, item: tuple[Prediction, tuple[Neighbour, ...]], n_checkers: int) -> None:
    d = engine.verify(*item)
    ran = [r for r in d.runs if r.status is RunStatus.RAN]
    if len(ran) != n_checkers:
        raise SystemExit(f"benchmark setup error: expected {n_checkers} checkers to run, got runs={d.runs}")


def time_verify(engine: Engine, items: Sequence[tuple[Prediction, tuple[Neighbour, ...]]]) -> list[float]:
    pc = time.perf_counter
    verify = engine.verify
    out = []
    for pred, nbrs in items:
        t0 = pc()
        verify(pred, nbrs)
        out.append(pc() - t0)
    return out


def time_verify_many(engine: Engine, items: Sequence[tuple[Prediction, tuple[Neighbour, ...]]]) -> tuple[list[float], float]:
    """Per-decision times (between yields) and the total wall time of the stream."""
    pc = time.perf_counter
    out = []
    t_start = prev = pc()
    for _ in engine.verify_many(items):
        now = pc()
        out.append(now - prev)
        prev = now
    return out, pc() - t_start


def time_bodies(items: Sequence[tuple[Prediction, tuple[Neighbour, ...]]], with_knn: bool) -> list[float]:
    """The checker bodies alone, called directly: what the framework adds is the rest."""
    from consist.plugins import checkers as registered

    bodies: list[Any] = trivial_checkers(None)
    if with_knn:
        bodies.append(registered()["knn"])
    ctx = CheckContext()
    pc = time.perf_counter
    out = []
    for pred, nbrs in items:
        t0 = pc()
        for b in bodies:
            b.check(pred, nbrs, ctx)
        out.append(pc() - t0)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--decisions", type=int, default=5000, help="timed decisions per scenario and repetition (default 5000)")
    ap.add_argument("--warmup", type=int, default=500, help="untimed decisions per scenario before timing (default 500)")
    ap.add_argument("-r", "--repeat", type=int, default=3, help="repetitions; scenarios are interleaved, samples pooled (default 3)")
    ap.add_argument("--neighbours", type=int, default=10, help="neighbours per prediction (default 10)")
    ap.add_argument("--dim", type=int, default=512, help="query embedding size (not read by the checkers; default 512)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few decisions, one repetition (a few seconds)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    ap.add_argument("--json-out", metavar="PATH", help="also write the JSON object to PATH")
    ap.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.quick:
        args.decisions, args.warmup, args.repeat = min(args.decisions, 300), min(args.warmup, 50), 1
    quiet = args.json

    info = C.machine_info({"gc_enabled": gc.isenabled(), "thread_timeout_s": THREAD_TIMEOUT_S})
    with C.progress(f"building {args.decisions} predictions with {args.neighbours} neighbours", quiet):
        items = make_items(args.decisions, args.neighbours, args.dim)
        warm = make_items(args.warmup, args.neighbours, args.dim, seed=1)

    engines = build_engines()
    for _name, (engine, n) in engines.items():
        sanity_check(engine, items[0], n)

    verify_samples: dict[str, list[float]] = {k: [] for k in engines}
    many_samples: dict[str, list[float]] = {k: [] for k in engines}
    many_wall: dict[str, list[float]] = {k: [] for k in engines}
    rep_means: dict[str, list[float]] = {k: [] for k in engines}
    many_rep_means: dict[str, list[float]] = {k: [] for k in engines}
    for rep in range(args.repeat):
        for name, (engine, _n) in engines.items():
            with C.progress(f"rep {rep + 1}/{args.repeat} {name}", quiet):
                for pred, nbrs in warm:
                    engine.verify(pred, nbrs)
                gc.collect()
                ts = time_verify(engine, items)
                verify_samples[name] += ts
                rep_means[name].append(sum(ts) / len(ts) * 1e3)
                gc.collect()
                ts2, wall = time_verify_many(engine, items)
                many_samples[name] += ts2
                many_wall[name].append(wall)
                many_rep_means[name].append(sum(ts2) / len(ts2) * 1e3)
    bodies = {"3 trivial": C.summarise(time_bodies(items, False)), "3 trivial + knn": C.summarise(time_bodies(items, True))}

    results: dict[str, Any] = {"scenarios": {}}
    rows = []
    for name, (_engine, n) in engines.items():
        v = C.summarise(verify_samples[name])
        m = C.summarise(many_samples[name])
        total = sum(many_wall[name])
        m["decisions_per_s"] = (len(many_samples[name]) / total) if total else float("nan")
        v["decisions_per_s"] = 1e3 / v["mean_ms"]
        v["rep_means_ms"] = rep_means[name]
        results["scenarios"][name] = {"checkers": n, "verify": v, "verify_many": m}
        m["rep_means_ms"] = many_rep_means[name]
        rows.append((name, "verify", n, v["mean_ms"], min(rep_means[name]), v["median_ms"], v["p95_ms"], v["p99_ms"], v["decisions_per_s"]))
        rows.append(("", "verify_many", n, m["mean_ms"], min(many_rep_means[name]), m["median_ms"], m["p95_ms"], m["p99_ms"], m["decisions_per_s"]))
    results["checker_bodies_direct"] = bodies

    # the price of thread isolation, per checker call
    keys = list(engines)
    inline, thread = keys[1], keys[3]
    per_call_thread_ms = (results["scenarios"][thread]["verify"]["mean_ms"] - results["scenarios"][inline]["verify"]["mean_ms"]) / 3
    results["derived"] = {"thread_isolation_cost_per_checker_call_ms": per_call_thread_ms}

    targets = []
    for name in keys[1:]:
        for mode in ("verify", "verify_many"):
            targets.append(C.Target(f"{name.split(' ')[0]} {mode} mean", results["scenarios"][name][mode]["mean_ms"], "<", TARGET_MS, "ms"))
    results["targets"] = [t.to_dict() for t in targets]
    info["loadavg_at_end"] = C.loadavg()
    results["machine"] = info
    results["config"] = {k: getattr(args, k) for k in ("decisions", "warmup", "repeat", "neighbours", "dim", "quick")}

    C.emit(results, args.json, args.json_out)
    if not args.json:
        print(f"consist engine overhead per decision (N={args.decisions} x {args.repeat} reps, warm-up {args.warmup}, {args.neighbours} neighbours, no store)")
        C.print_machine(info)
        C.print_table(
            "per-decision wall time, ms (every checker runs: early stop disabled)",
            ("scenario", "mode", "checkers", "mean", "best rep mean", "median", "p95", "p99", "decisions/s"),
            rows,
        )
        C.print_table(
            "checker bodies alone, called directly (per decision), ms",
            ("checkers", "mean", "median", "p95"),
            [(k, s["mean_ms"], s["median_ms"], s["p95_ms"]) for k, s in bodies.items()],
        )
        print(f"\nthread isolation costs {per_call_thread_ms * 1e3:.0f} us per checker call (thread - inline, / 3)")
        spread = {k.split(" ")[0]: f"{min(v):.3f}-{max(v):.3f}" for k, v in rep_means.items()}
        print(f"spread of per-repetition verify means (ms): {spread}")
        C.print_targets(targets)
    if args.strict and not all(t.passed for t in targets if t.required):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
