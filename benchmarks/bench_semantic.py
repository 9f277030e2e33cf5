"""Semantic plugin: LMM calls saved by the frontal controller, per-reflection
overhead, and the answer cache on a repeated audit.

1. **Calls saved** (needs ../shared/data): leave-one-out audit of
   landmark-multiview (without the ambiguous ``alamo_plaza_1dsfm``) whose labels
   get ``--noise`` injected label noise (that share of the images is given another,
   random landmark's label; seeded). Each image is a query whose "prediction" is its
   (possibly wrong) dataset label with score ``--claim-score``; its ``--k``
   neighbours come from the store's ``tiny`` embeddings (the query itself
   excluded). The engine runs ``knn`` + ``spatial`` (SIFT, DEGENSAC; ``--checkers``
   adds e.g. the topological plugin's ``community``) + ``reflection``, whose LMM is a scripted OpenAI-compatible server on 127.0.0.1
   that answers from the ground truth and is wrong with probability
   ``--error-rate`` (per image and label, seeded; P(yes) 0.9 / 0.1, coverage 0.95).
   The audit runs three times: reflecting on every decision (``always``), with the
   core controller only (``core``: skip once the posterior reaches 0.95), and with
   the frontal controller on top (``frontal``: defaults, except
   ``min_recognizer_confidence=None``: an audit's "recognizer" is the dataset
   label, not a model with a confidence). Reported: LMM calls of each, the calls
   saved by ``frontal`` against the two others, whether the decisions are equal,
   decision accuracy against the true labels, and precision/recall of the
   changed decisions as detections of the injected noise.
2. **Cache**: the audit with the frontal controller is run again by a fresh
   checker (new process state): every answer must come from the store.
3. **Overhead per reflection excluding model time** (no data needed): the client
   work of one question (request body and JSON, response JSON, P(yes), the vote),
   timed in-process on a recorded answer (target < 2 ms); also, informationally,
   the image encoding (once per query), a full round trip to an instant local
   server, and a cache hit.

Run: ``python benchmarks/bench_semantic.py`` (``--quick`` for a smaller audit,
``--json``, ``--help``). Needs ../shared/data (or ``--data`` /
``$CONSIST_SHARED_DATA``) for parts 1 and 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import numpy as np

TARGET_OVERHEAD_MS = 2.0
P_YES, COVERAGE = 0.9, 0.95


# ------------------------------------------------------------------ scripted LMM


def truth_server(truth_by_image: dict[str, str], error_rate: float, seed: int):
    """A scripted server answering "does it show LABEL?" from the ground truth."""
    from consist_semantic.questions import label_text
    from consist_semantic.testing import ScriptedServer, question_label, yes_no_reply

    def script(req):
        urls = req.image_urls
        key = hashlib.blake2b(urls[0].encode(), digest_size=16).hexdigest() if urls else ""
        truth = truth_by_image.get(key)
        asked = question_label(req.prompt) or ""
        correct = truth is not None and label_text(truth) == asked
        rng = random.Random(f"{seed}|{key}|{asked}")
        if rng.random() < error_rate:
            correct = not correct
        return yes_no_reply(P_YES if correct else 1 - P_YES, coverage=COVERAGE)

    return ScriptedServer(script)


# ------------------------------------------------------------------------ audit


def build_store(path: Path, items: list[Any], labels: dict[str, str], quiet: bool):
    from consist import plugins
    from consist.images import load_image
    from consist.records import Sample
    from consist.stores.sqlite import SQLiteStore

    store = SQLiteStore(str(path))
    tiny = plugins.embedders()["tiny"]
    rows = []
    with C.progress(f"embedding {len(items)} images (tiny)", quiet):
        for it in items:
            old = store.get(it.id)
            emb = old.embedding if old is not None and old.embedding is not None else tiny.embed(load_image(it.path))
            rows.append(Sample(it.id, uri=it.path, label=labels[it.id], embedding=emb))
    store.put(rows, force=True, reason="benchmark labels")
    return store


#: The three controllers compared: reflect on every decision; the core controller
#: only (skip once the posterior reaches stop_confidence 0.95); core + frontal.
MODES = ("always", "core", "frontal")


def run_audit(
    store: Any,
    items: list[Any],
    labels: dict[str, str],
    backend: Any,
    *,
    mode: str,
    persistent: bool,
    k: int,
    claim_score: float,
    spatial_opts: dict[str, Any],
    quiet: bool,
    checkers: tuple[str, ...] = ("knn", "spatial"),
) -> dict[str, Any]:
    from consist import Candidate, ControllerConfig, Engine, EngineConfig, Neighbour, Prediction, Query
    from consist.records import RunStatus
    from consist_semantic import AnswerCache, FrontalController, ReflectionChecker

    fc = FrontalController(min_recognizer_confidence=None) if mode == "frontal" else None
    checker = ReflectionChecker(backend, frontal=fc or False, cache=AnswerCache(persistent=persistent))
    controller = ControllerConfig(always_run=frozenset({"reflection"}) if mode == "always" else frozenset())
    engine = Engine([*checkers, checker], store=store, config=EngineConfig(adapt=False, controller=controller, checker_options={"spatial": spatial_opts}))
    decisions = {}
    refl_s: list[float] = []
    t0 = time.perf_counter()
    iterable = items
    if not quiet:
        from tqdm.auto import tqdm

        iterable = tqdm(items, unit="query", desc=f"audit ({mode})", file=sys.stderr)
    for it in iterable:
        s = store.get(it.id)
        hits = store.search(s.embedding, k, exclude=(it.id,))
        neighbours = [Neighbour(sample, sim, i) for i, (sample, sim) in enumerate(hits)]
        p = Prediction(Query(it.id, uri=it.path, embedding=s.embedding), [Candidate(labels[it.id], claim_score)], recognizer="dataset")
        d = engine.verify(p, neighbours)
        decisions[it.id] = d
        for r in d.runs:
            if r.checker == "reflection" and r.status is RunStatus.RAN:
                refl_s.append(r.elapsed_s)
    wall = time.perf_counter() - t0
    skipped = sum(1 for d in decisions.values() for r in d.runs if r.checker == "reflection" and r.status is RunStatus.SKIPPED)
    return {
        "decisions": {i: d.label for i, d in decisions.items()},
        "changed": {i for i, d in decisions.items() if d.changed},
        "model_calls": checker.model_calls,
        "cache_hits": checker.cache_hits,
        "reflections_run": sum(1 for d in decisions.values() for r in d.runs if r.checker == "reflection" and r.status is not RunStatus.SKIPPED),
        "reflections_skipped": skipped,
        "frontal": None if fc is None else {"consulted": fc.stats.consulted, "reflected": fc.stats.reflected, "skipped": fc.stats.skipped, "reasons": fc.stats.reasons},
        "wall_s": wall,
        "reflection_mean_ms": 1e3 * float(np.mean(refl_s)) if refl_s else float("nan"),
    }


def score(run: dict[str, Any], truth: dict[str, str], noisy: set[str]) -> dict[str, float]:
    n = len(truth)
    acc = sum(run["decisions"][i] == truth[i] for i in truth) / n
    flagged = run["changed"]
    tp = len(flagged & noisy)
    prec = tp / len(flagged) if flagged else float("nan")
    rec = tp / len(noisy) if noisy else float("nan")
    return {"accuracy": acc, "flagged": len(flagged), "noise_precision": prec, "noise_recall": rec}


def audit_part(args: argparse.Namespace, quiet: bool) -> dict[str, Any] | None:
    from _spatial_data import data_root, landmark_items

    root = data_root(args.data)
    if root is None:
        print("[bench] ../shared/data not found: skipping the audit (parts 1-2)", file=sys.stderr)
        return None
    from consist.images import load_image
    from consist_semantic import OpenAIChatBackend, encode_image

    items = landmark_items(root)
    if args.quick:
        by_label: dict[str, list[Any]] = {}
        for it in items:
            by_label.setdefault(it.label, []).append(it)
        items = sorted([it for group in list(by_label.values())[:6] for it in group[:5]], key=lambda it: it.id)
    truth = {it.id: it.label for it in items}
    rng = random.Random(args.seed)
    all_labels = sorted(set(truth.values()))
    noisy = set(rng.sample(sorted(truth), round(args.noise * len(items))))
    labels = {i: (rng.choice([lab for lab in all_labels if lab != truth[i]]) if i in noisy else truth[i]) for i in sorted(truth)}

    truth_by_image = {}
    with C.progress("encoding the images the scripted LMM will recognise", quiet):
        for it in items:
            url = encode_image(load_image(it.path)).data_url()
            truth_by_image[hashlib.blake2b(url.encode(), digest_size=16).hexdigest()] = it.label
    cache_dir = Path(args.cache or Path(tempfile.gettempdir()) / "consist-bench-semantic")
    cache_dir.mkdir(parents=True, exist_ok=True)
    store = build_store(cache_dir / ("landmark-quick.db" if args.quick else "landmark.db"), items, labels, quiet)
    for kind in list(store.artefact_kinds()):
        if kind.startswith("lmm-answer/"):
            store.delete_artefacts(kind)
    spatial_opts = {"max_side": args.max_side}
    out: dict[str, Any] = {
        "checkers": args.checkers,
        "images": len(items),
        "labels": len(all_labels),
        "noisy": len(noisy),
        "noise": args.noise,
        "error_rate": args.error_rate,
        "k": args.k,
        "claim_score": args.claim_score,
        "spatial_max_side": args.max_side,
    }
    with truth_server(truth_by_image, args.error_rate, args.seed) as server:
        backend = OpenAIChatBackend(server.base_url, "scripted-truth", backoff_s=0.05)
        common = dict(k=args.k, claim_score=args.claim_score, spatial_opts=spatial_opts, quiet=quiet, checkers=tuple(c for c in args.checkers.split(",") if c))
        runs = {m: run_audit(store, items, labels, backend, mode=m, persistent=(m == "frontal"), **common) for m in MODES}
        n_server = len(server.requests)
        repeat = run_audit(store, items, labels, backend, mode="frontal", persistent=True, **common)
        repeat_server = len(server.requests) - n_server
    store.close()
    out["claimed_label_accuracy"] = sum(labels[i] == truth[i] for i in truth) / len(truth)
    for m, r in runs.items():
        out[m] = {**{k: v for k, v in r.items() if k not in ("decisions", "changed")}, **score(r, truth, noisy)}
    fr = runs["frontal"]
    for base in ("always", "core"):
        b = runs[base]
        out[f"vs_{base}"] = {
            "calls_saved": b["model_calls"] - fr["model_calls"],
            "calls_saved_share": (b["model_calls"] - fr["model_calls"]) / b["model_calls"] if b["model_calls"] else float("nan"),
            "equal_decisions": sum(fr["decisions"][i] == b["decisions"][i] for i in truth),
            "differing": [{"id": i, "truth": truth[i], "frontal": fr["decisions"][i], base: b["decisions"][i]} for i in truth if fr["decisions"][i] != b["decisions"][i]],
        }
    hits, n_q = repeat["cache_hits"], repeat["cache_hits"] + repeat["model_calls"]
    out["repeat"] = {"cache_hits": hits, "questions": n_q, "hit_rate": hits / n_q if n_q else float("nan"), "server_requests": repeat_server, "same_decisions": repeat["decisions"] == fr["decisions"]}
    return out


# --------------------------------------------------------------------- overhead


def overhead_part(n: int, quiet: bool) -> dict[str, Any]:
    from consist_semantic import AnswerCache, OpenAIChatBackend, ReflectionChecker, encode_image
    from consist_semantic.backends import ChatRequest
    from consist_semantic.questions import render
    from consist_semantic.testing import ScriptedServer, yes_no_reply
    from consist_semantic.yesno import top_from_openai, yes_no_from_logprobs

    try:
        from skimage import data as skd

        image = skd.astronaut()
    except ImportError:
        image = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    enc_s = C.time_calls(lambda: encode_image(image), max(5, n // 100))
    enc = encode_image(image)
    reply = json.dumps(yes_no_reply(0.8).json).encode()
    backend = OpenAIChatBackend("http://127.0.0.1:9/v1", "m")
    checker = ReflectionChecker(backend, frontal=False)

    def client_work() -> None:  # everything of one question except the model and the socket
        request = ChatRequest(prompt=render("space suit"), images=(enc,), max_tokens=1, temperature=0.0, top_logprobs=20)
        json.dumps(backend.body(request)).encode()
        data = json.loads(reply)
        top, chosen = top_from_openai(data["choices"][0]["logprobs"])
        yn = yes_no_from_logprobs(top, chosen)
        from consist_semantic.reflection import Reflection

        checker.vote_for(Reflection("space suit", request.prompt, yn, False, 0.0), checker.config)

    client_work()
    client_s = C.time_calls(client_work, n)
    with ScriptedServer(lambda req: yes_no_reply(0.8)) as server:
        live = ReflectionChecker(OpenAIChatBackend(server.base_url, "m"), frontal=False, cache=AnswerCache(persistent=False))
        live.reflect(enc, "warm-up")
        labels = [f"thing {i}" for i in range(max(50, n // 20))]
        rt_s = [0.0] * len(labels)
        for i, lab in enumerate(labels):
            t0 = time.perf_counter()
            live.reflect(enc, lab)
            rt_s[i] = time.perf_counter() - t0
        hit_s = C.time_calls(lambda: live.reflect(enc, labels[0]), n)
    return {
        "image_side": int(max(image.shape[:2])),
        "encode_per_query": C.summarise(enc_s),
        "client_per_reflection": C.summarise(client_s),
        "round_trip_instant_server": C.summarise(rt_s),
        "cache_hit": C.summarise(hit_s),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="the shared data folder (default: $CONSIST_SHARED_DATA or ../shared/data)")
    ap.add_argument("--noise", type=float, default=0.1, help="share of labels replaced by a wrong one (default 0.1)")
    ap.add_argument("--error-rate", type=float, default=0.1, help="probability that the scripted LMM answers wrongly (default 0.1)")
    ap.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    ap.add_argument("--claim-score", type=float, default=0.6, help="score of the dataset label as the audit's prediction (default 0.6)")
    ap.add_argument("--max-side", type=int, default=1024, help="spatial checker's working size (default 1024, its default)")
    ap.add_argument("--checkers", default="knn,spatial", help="cheaper checkers run before the reflection (default knn,spatial; add 'community' for the topological plugin's community uncertainty)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", help="folder for the benchmark store (default $TMPDIR/consist-bench-semantic)")
    ap.add_argument("-n", type=int, default=2000, help="timed calls for the overhead figures (default 2000)")
    ap.add_argument("--quick", action="store_true", help="30 images of 6 landmarks, spatial at 640 px, fewer timed calls")
    ap.add_argument("--skip-audit", action="store_true", help="only the overhead figures (no data needed)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    ap.add_argument("--json-out", metavar="PATH", help="also write the JSON object to PATH")
    ap.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 300)
        args.max_side = min(args.max_side, 640)
    quiet = args.json
    result: dict[str, Any] = {"machine": C.machine_info()}
    result["overhead"] = overhead_part(args.n, quiet)
    audit = None if args.skip_audit else audit_part(args, quiet)
    result["audit"] = audit
    ov = result["overhead"]
    targets = [C.Target("client overhead per reflection (median)", ov["client_per_reflection"]["median_ms"], "<", TARGET_OVERHEAD_MS, "ms")]
    if audit is not None:
        targets.append(C.Target("repeated audit: answers from the cache", 100 * audit["repeat"]["hit_rate"], ">", 99.9, "%"))
    result["targets"] = [t.to_dict() for t in targets]
    if args.json or args.json_out:
        C.emit(result, args.json, args.json_out)
    if not args.json:
        C.print_table(
            "overhead per reflection, excluding model time (ms)", ("what", "median", "p95", "mean"), [(k, v["median_ms"], v["p95_ms"], v["mean_ms"]) for k, v in ov.items() if isinstance(v, dict)]
        )
        if audit is not None:
            rows = []
            for name in MODES:
                r = audit[name]
                rows.append((name, r["model_calls"], r["reflections_skipped"], r["accuracy"], r["flagged"], r["noise_precision"], r["noise_recall"], r["wall_s"]))
            C.print_table(
                f"LOO audit of landmark-multiview ({audit['images']} images, {audit['noisy']} noisy labels, LMM error rate {audit['error_rate']:g})",
                ("controller", "LMM calls", "skipped", "accuracy", "flagged", "noise P", "noise R", "wall s"),
                rows,
            )
            print(f"  claimed labels' accuracy {audit['claimed_label_accuracy']:.3f}")
            for base in ("always", "core"):
                v = audit[f"vs_{base}"]
                print(
                    f"  frontal vs {base}: {v['calls_saved']} of {audit[base]['model_calls']} LMM calls saved ({100 * v['calls_saved_share']:.1f} %), equal decisions {v['equal_decisions']}/{audit['images']}"
                )
                for d in v["differing"]:
                    print(f"    differs: {d['id']} truth {d['truth']}, frontal {d['frontal']}, {base} {d[base]}")
            rp = audit["repeat"]
            print(
                f"  repeated audit: {rp['cache_hits']}/{rp['questions']} answers from the store cache ({100 * rp['hit_rate']:.1f} %), {rp['server_requests']} server requests, same decisions: {rp['same_decisions']}"
            )
        C.print_targets(targets)
    if args.strict and not all(t.passed for t in targets if t.required):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
