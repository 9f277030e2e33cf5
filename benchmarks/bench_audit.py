"""``consist audit``: label-error detection quality against cleanlab and k-NN
baselines, and throughput.

Real label errors first (``--paris-dev``; part of the default full run, printed
first): ``revisitop-paris-dev``, 183 Flickr photos of 11 Paris landmarks, audited
with their natural labels (the file names' labels: ~1 in 4 wrong or generic, such as
``paris_general``) and with 10% / 20% of the true labels flipped to another landmark
(tasks 1 and 2 of its README; exact definitions in ``benchmarks/_paris_dev.py``).
Per task and method: precision / recall / F1 of the flags, suggestion accuracy
(over the flagged mislabelled photos, and over all of them), the fraction of photos
without an answer (``unverifiable`` / ``unreadable``), the ECE of the method's
P(given label wrong) with its reliability table, and consist's wall time cold
(empty feature cache) and warm (features cached). The issue's goals (F1 >= 0.85,
precision >= 0.90, suggestion accuracy >= 0.90, <= 15% without answer, ECE <= 0.05)
are printed as targets.

Synthetic label errors: on ``landmark-multiview`` (14 landmarks; the ambiguous ``alamo_plaza_1dsfm``
class is dropped) and ``ukbench-subset`` (14 objects x 4 views), 10% and 20% of the
labels are flipped at random to another class (fixed seeds). consist audits each
noisy copy; side by side, from the *same* retrieval (the ASMK neighbours the audit
verified, read from its journal):

* ``knn-vote``: a plain similarity-weighted majority vote of the k neighbours
  (flag when it disagrees with the given label);
* ``cleanlab``: ``cleanlab.filter.find_label_issues`` fed with out-of-sample k-NN
  probabilities (each label's smoothed share of the neighbours' similarity; the
  sample itself is never its own neighbour), suggestion = the most probable label;
* ``verified-vote``: an inlier-weighted vote of the spatially verified neighbours
  (abstains when none verified).

Scored with :mod:`consist.metrics.audit`: precision, recall, F1 of the flags against
the flipped samples, and the accuracy of the suggested labels on the flipped samples.

Throughput (``--throughput``): images/s end to end on ``--workers`` processes
(default 2), cold (empty output and feature cache) and warm (features cached), the
peak resident memory of the run (this process and its workers), and the growth
from ``--scale`` sizes of synthetic views of scikit-image photos (crops, rotations,
scale, lighting).

Needs ``../shared/data`` for the quality part (research photos; never committed)
and ``pip install cleanlab`` (the ``bench`` extra). Run:
``python benchmarks/bench_audit.py`` (``--paris-dev``: the dev set only; ``--quick``:
ukbench only, 10% noise; ``--json`` for a JSON object; ``--k`` the audit's k).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import _paris_dev as PD
import numpy as np

import consist
from consist.audit.journal import read_journal
from consist.metrics.audit import audit_scores, suggestion_accuracy

DATA = Path(os.environ.get("CONSIST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
#: (name, folder, label column, classes dropped)
DATASETS = (
    ("landmark-multiview", "landmark-multiview", "instance", ("alamo_plaza_1dsfm",)),
    ("ukbench-subset", "ukbench-subset", "object_id", ()),
)
NOISE = (0.1, 0.2)
SEED = 0


def flip_labels(rows: Sequence[tuple[str, str]], rate: float, seed: int) -> list[tuple[str, str, str]]:
    """``(path, noisy, true)``: ``rate`` of the rows get another class, uniformly."""
    labels = sorted({lab for _, lab in rows})
    rng = random.Random(seed)
    flip = set(rng.sample(range(len(rows)), round(rate * len(rows))))
    out = []
    for i, (path, lab) in enumerate(rows):
        noisy = rng.choice([x for x in labels if x != lab]) if i in flip else lab
        out.append((path, noisy, lab))
    return out


def read_rows(folder: Path, column: str, drop: Sequence[str]) -> list[tuple[str, str]]:
    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        return [(r["file"], r[column]) for r in csv.DictReader(fh) if r[column] not in drop]


# ------------------------------------------------------------------ baselines


def knn_probs(records: dict[str, dict[str, Any]], ids: Sequence[str], given: dict[str, str], classes: Sequence[str], alpha: float = 0.1) -> np.ndarray:
    """Out-of-sample k-NN probabilities from the audit's own retrieval (similarity-weighted,
    additive smoothing ``alpha`` spread over the classes)."""
    index = {c: i for i, c in enumerate(classes)}
    P = np.full((len(ids), len(classes)), alpha / len(classes))
    for r, sid in enumerate(ids):
        for n in records.get(sid, {}).get("neighbours", ()):
            lab = given.get(n["id"])
            if lab in index:
                P[r, index[lab]] += max(0.0, n["similarity"])
    return P / P.sum(axis=1, keepdims=True)


def verified_vote(records: dict[str, dict[str, Any]], ids: Sequence[str], given: dict[str, str]) -> list[str | None]:
    out: list[str | None] = []
    for sid in ids:
        mass: dict[str, float] = defaultdict(float)
        for e in records.get(sid, {}).get("edges", ()):
            if e.get("verified") and e["b"] in given:
                mass[given[e["b"]]] += e["inliers"]
        out.append(max(mass, key=mass.get) if mass else None)
    return out


def score(name: str, flagged: Sequence[bool], suggested: Sequence[str | None], noisy: Sequence[str], true: Sequence[str]) -> dict[str, Any]:
    err = [n != t for n, t in zip(noisy, true)]
    prf = audit_scores(flagged, err)
    acc = suggestion_accuracy(suggested, true, among=err)
    caught = [f and e for f, e in zip(flagged, err)]
    acc_flagged = suggestion_accuracy(suggested, true, among=caught)
    return {
        "method": name,
        "precision": prf.precision,
        "recall": prf.recall,
        "f1": prf.f1,
        "suggestion_accuracy": acc,
        "suggestion_accuracy_flagged": acc_flagged,
        "flagged": int(sum(flagged)),
        "errors": int(sum(err)),
    }


def run_quality(name: str, folder: Path, column: str, drop: Sequence[str], rate: float, work: Path, workers: int, k: int | None = None) -> list[dict[str, Any]]:
    rows = read_rows(folder, column, drop)
    noisy = flip_labels(rows, rate, SEED)
    csv_path = work / f"{name}-{int(rate * 100)}.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows((p, n) for p, n, _ in noisy)
    out = work / f"{name}-{int(rate * 100)}"
    t0 = time.perf_counter()
    # one feature cache per dataset: the noise rates share the extracted features
    result = consist.audit(folder, out, labels=csv_path, store=f"sqlite:///{work / (name + '-cache.db')}", workers=workers, report=False, **({} if k is None else {"k": k}))
    elapsed = time.perf_counter() - t0
    ids = [p for p, _, _ in noisy]
    given = {p: n for p, n, _ in noisy}
    true = [t for _, _, t in noisy]
    noisy_labels = [n for _, n, _ in noisy]
    rows_by = {r.sample: r for r in result.rows}
    records = {rec["id"]: rec for rec in read_journal(out / ".audit" / "verified.jsonl")}
    out_rows = [score("consist", [rows_by[i].flagged for i in ids], [rows_by[i].suggested_label for i in ids], noisy_labels, true)]
    out_rows[0]["seconds"] = round(elapsed, 1)
    out_rows[0]["unverifiable"] = result.summary["counts"]["unverifiable"]
    classes = sorted(set(noisy_labels))
    P = knn_probs(records, ids, given, classes)
    knn_pred = [classes[j] for j in P.argmax(axis=1)]
    out_rows.append(score("knn-vote", [k != g for k, g in zip(knn_pred, noisy_labels)], knn_pred, noisy_labels, true))
    try:
        from cleanlab.filter import find_label_issues

        y = np.array([classes.index(g) for g in noisy_labels])
        issues = find_label_issues(labels=y, pred_probs=P)
        out_rows.append(score("cleanlab", list(map(bool, issues)), knn_pred, noisy_labels, true))
    except ImportError:
        out_rows.append({"method": "cleanlab", "error": "pip install cleanlab"})
    vv = verified_vote(records, ids, given)
    out_rows.append(score("verified-vote", [v is not None and v != g for v, g in zip(vv, noisy_labels)], vv, noisy_labels, true))
    for r in out_rows:
        r.update(dataset=name, noise=rate, n=len(ids))
    return out_rows


# ------------------------------------------------------ revisitop-paris-dev


def baseline_outputs(records: dict[str, dict[str, Any]], ids: Sequence[str], given: dict[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """The baselines' flags, suggestions, P(given label wrong) and answers per sample,
    from the audit's own retrieval and verification (its journal records):
    ``knn-vote`` and ``cleanlab`` share the out-of-sample k-NN probabilities
    (P(wrong) = 1 - P(given)); ``verified-vote`` weighs verified neighbours by inliers
    (P(wrong) = 1 - the given label's inlier share; no answer without a verified one)."""
    classes = sorted(set(given.values()))
    P = knn_probs(records, ids, given, classes)
    col = {c: i for i, c in enumerate(classes)}
    pred = [classes[j] for j in P.argmax(axis=1)]
    p_wrong = {sid: float(1.0 - P[r, col[given[sid]]]) for r, sid in enumerate(ids)}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    out["knn-vote"] = {"flagged": {sid: pred[r] != given[sid] for r, sid in enumerate(ids)}, "suggested": dict(zip(ids, pred)), "p_wrong": p_wrong, "answered": {sid: True for sid in ids}}
    try:
        from cleanlab.filter import find_label_issues

        y = np.array([col[given[sid]] for sid in ids])
        issues = find_label_issues(labels=y, pred_probs=P)
        out["cleanlab"] = {"flagged": {sid: bool(f) for sid, f in zip(ids, issues)}, "suggested": dict(zip(ids, pred)), "p_wrong": p_wrong, "answered": {sid: True for sid in ids}}
    except ImportError:
        print("cleanlab not installed (pip install cleanlab): its column is left out", file=sys.stderr)
    vv: dict[str, dict[str, Any]] = {"flagged": {}, "suggested": {}, "p_wrong": {}, "answered": {}}
    for sid in ids:
        mass: dict[str, float] = defaultdict(float)
        for e in records.get(sid, {}).get("edges", ()):
            if e.get("verified") and e["b"] in given:
                mass[given[e["b"]]] += e["inliers"]
        best = max(mass, key=mass.get) if mass else None  # type: ignore[arg-type]
        vv["flagged"][sid] = best is not None and best != given[sid]
        vv["suggested"][sid] = best
        vv["p_wrong"][sid] = None if not mass else 1.0 - mass.get(given[sid], 0.0) / sum(mass.values())
        vv["answered"][sid] = bool(mass)
    out["verified-vote"] = vv
    return out


def run_paris_dev(work: Path, workers: int, k: int | None = None) -> dict[str, Any]:
    """Audit the dev set's natural and injected tasks (one feature cache for all);
    the natural task twice: cold (empty cache), then warm (features cached)."""
    root = PD.dev_root(DATA)
    store = f"sqlite:///{work / 'paris-dev-cache.db'}"
    options = {} if k is None else {"k": k}
    quality: list[dict[str, Any]] = []
    timing: list[dict[str, Any]] = []
    for task in PD.tasks(root):
        csv_path = PD.write_labels_csv(task, work / f"paris-dev-{task.name}.csv")
        runs = ("cold", "warm") if task.name == "natural" else ("warm",)
        for run in runs:
            out = work / f"paris-dev-{task.name}" if run == runs[0] else work / f"paris-dev-{task.name}-{run}"
            print(f"auditing revisitop-paris-dev {task.name} ({run}) ...", file=sys.stderr)
            t0 = time.perf_counter()
            result = consist.audit(root, out, labels=csv_path, store=store, workers=workers, report=False, progress=False, **options)
            elapsed = time.perf_counter() - t0
            feats = result.summary.get("features", {})
            timing.append(
                {
                    "task": task.name,
                    "run": run,
                    "seconds": round(elapsed, 1),
                    "features_extracted": feats.get("extracted"),
                    "features_cached": feats.get("cached"),
                    "timings": result.summary.get("timings"),
                }
            )
            if run != runs[0]:
                continue
            records = {rec["id"]: rec for rec in read_journal(out / ".audit" / "verified.jsonl")}
            co = PD.consist_outputs(result.rows)
            quality.append(PD.score(task, co["flagged"], co["suggested"], co["p_wrong"], co["answered"], method="consist"))
            quality[-1]["seconds"] = round(elapsed, 1)
            for name, o in baseline_outputs(records, task.paths, task.given).items():
                quality.append(PD.score(task, o["flagged"], o["suggested"], o["p_wrong"], o["answered"], method=name))
    return {"quality": quality, "timing": timing, "k": k}


def print_paris_dev(res: dict[str, Any]) -> None:
    q = res["quality"]
    rows = [
        (
            q_["task"],
            q_["method"],
            q_["precision"],
            q_["recall"],
            q_["f1"],
            q_["suggestion_accuracy_flagged"],
            q_["suggestion_accuracy_all"],
            q_["without_answer"],
            q_["ece"],
            q_["with_confidence"],
            q_["flagged"],
            q_["errors"],
        )
        for q_ in q
    ]
    k = res.get("k")
    C.print_table(
        f"revisitop-paris-dev label audit (183 photos; k={'default' if k is None else k})",
        ("task", "method", "precision", "recall", "F1", "sugg. acc (flagged errors)", "sugg. acc (all errors)", "without answer", "ECE", "with conf.", "flagged", "errors"),
        rows,
    )
    print("  task natural: given = the file name's label (34 of 183 wrong, 26 of them 'paris_general'); injected-N: N% of the true labels flipped")
    print("  sugg. acc: suggestion among the photo's true landmarks; without answer: status unverifiable/unreadable;")
    print("  ECE: of P(given label wrong), 10 equal-width bins, over the photos with a confidence ('with conf.')")
    for task in dict.fromkeys(x["task"] for x in q):
        methods = [x for x in q if x["task"] == task and x["reliability"]]
        if not methods:
            continue
        bins = [b["bin"] for b in methods[0]["reliability"]]
        cells = []
        for i, b in enumerate(bins):
            row: list[Any] = [b]
            for m in methods:
                r = m["reliability"][i]
                row.append(f"{r['n']}" + (f" {r['mean_conf']:.2f}/{r['observed']:.2f}" if r["n"] else ""))
            cells.append(row)
        C.print_table(f"reliability, {task} (per bin of P(wrong): n mean P(wrong)/observed error rate)", ("P(wrong) bin", *(m["method"] for m in methods)), cells)
    C.print_table(
        "consist wall time on revisitop-paris-dev (cold: empty feature cache; warm: features cached)",
        ("task", "run", "seconds", "features extracted", "features cached"),
        [(t["task"], t["run"], t["seconds"], t["features_extracted"], t["features_cached"]) for t in res["timing"]],
    )


def paris_targets(res: dict[str, Any]) -> list[C.Target]:
    """The issue's goals for consist on each dev-set task."""
    out: list[C.Target] = []
    for q in res["quality"]:
        if q["method"] != "consist":
            continue
        t = q["task"]
        out.append(C.Target(f"paris-dev {t}: F1", q["f1"], ">", 0.85 - 1e-9, ""))
        out.append(C.Target(f"paris-dev {t}: precision", q["precision"], ">", 0.90 - 1e-9, ""))
        out.append(C.Target(f"paris-dev {t}: suggestion accuracy (flagged errors)", q["suggestion_accuracy_flagged"], ">", 0.90 - 1e-9, ""))
        out.append(C.Target(f"paris-dev {t}: without answer", q["without_answer"], "<", 0.15 + 1e-9, ""))
        out.append(C.Target(f"paris-dev {t}: ECE of P(wrong)", q["ece"], "<", 0.05 + 1e-9, ""))
    return out


# ----------------------------------------------------------------- throughput


def synthetic_dataset(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` synthetic views (class = source photo) of scikit-image photos."""
    from PIL import Image

    from consist.demo import demo_photos, perspective

    photos = demo_photos()
    names = sorted(photos)
    rng = random.Random(seed)
    for i in range(n):
        label = names[i % len(names)]
        x0, y0 = rng.uniform(0, 0.2), rng.uniform(0, 0.2)
        view = perspective(
            photos[label],
            tilt=rng.uniform(0, 0.3),
            rotate_deg=rng.uniform(-20, 20),
            scale=rng.uniform(0.6, 1.0),
            crop=(x0, y0, x0 + rng.uniform(0.7, 0.8), y0 + rng.uniform(0.7, 0.8)),
            gain=rng.uniform(0.7, 1.3),
        )
        d = root / label
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(view).save(d / f"{i:06d}.jpg", quality=90)
    return root


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def run_throughput(work: Path, sizes: Sequence[int], workers: int) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        ds = synthetic_dataset(work / f"synthetic-{n}", n)
        target = work / f"synthetic-{n}-out"
        t0 = time.perf_counter()
        r = consist.audit(ds, target, workers=workers, report=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        consist.audit(ds, target, workers=workers, report=False)  # features cached
        warm = time.perf_counter() - t0
        out.append(
            {
                "images": n,
                "cold_s": round(cold, 2),
                "cold_images_per_s": round(n / cold, 3),
                "warm_s": round(warm, 2),
                "warm_images_per_s": round(n / warm, 3),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "timings_cold": r.summary["timings"],
            }
        )
        shutil.rmtree(ds, ignore_errors=True)
    return out


#: The collection the issue's figures refer to: ~350 photos in 120 s on 2 cores, cold.
TARGET_IMAGES_PER_S = 350 / 120


def targets(result: dict[str, Any]) -> list[C.Target]:
    """consist beats both baselines on F1 and on suggestion accuracy, per setting;
    cold throughput (informational: the figure depends on the machine's load)."""
    out: list[C.Target] = []
    by: dict[tuple[str, float], dict[str, dict[str, Any]]] = defaultdict(dict)
    for q in result["quality"]:
        by[(q["dataset"], q["noise"])][q["method"]] = q
    for (name, noise), m in sorted(by.items()):
        c = m.get("consist")
        base = [m[k] for k in ("knn-vote", "cleanlab") if k in m and "f1" in m[k]]
        if c is None or not base:
            continue
        out.append(C.Target(f"F1 margin over the best baseline, {name} {noise:.0%}", c["f1"] - max(b["f1"] for b in base), ">", 0.0, ""))
        out.append(C.Target(f"suggestion accuracy margin (flagged errors), {name} {noise:.0%}", c["suggestion_accuracy_flagged"] - max(b["suggestion_accuracy_flagged"] for b in base), ">", -1e-9, ""))
        out.append(C.Target(f"suggestion accuracy margin (all errors), {name} {noise:.0%}", c["suggestion_accuracy"] - max(b["suggestion_accuracy"] for b in base), ">", -1e-9, "", required=False))
    if result.get("paris_dev"):
        out = paris_targets(result["paris_dev"]) + out
    for t in result["throughput"]:
        out.append(C.Target(f"cold throughput, {t['images']} images", t["cold_images_per_s"], ">", TARGET_IMAGES_PER_S, "img/s", "the issue's 350 images in 120 s on 2 cores", required=False))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="ukbench-subset at 10%% noise only; throughput at 40 images")
    ap.add_argument("--json", action="store_true", help="print a JSON object")
    ap.add_argument("--json-out", default=None, help="also write the JSON here")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--throughput", action="store_true", help="also measure throughput and scaling")
    ap.add_argument("--scale", default="100,1000", help="sizes for the scaling runs (comma-separated; 10000 takes hours on 2 cores)")
    ap.add_argument("--keep", default=None, help="keep the work folder here")
    ap.add_argument("--paris-dev", action="store_true", help="revisitop-paris-dev only (natural, 10%%, 20%% label errors)")
    ap.add_argument("--k", type=int, default=None, help="neighbours per image for the audits (default: the audit's default)")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": C.machine_info({"workers": args.workers}), "paris_dev": None, "quality": [], "throughput": []}
    try:
        if DATA.exists():
            if not args.quick:
                if PD.dev_root(DATA).exists():
                    result["paris_dev"] = run_paris_dev(work, args.workers, args.k)
                else:
                    print(f"{PD.dev_root(DATA)} not found: the dev-set part is skipped", file=sys.stderr)
            sets = () if args.paris_dev else DATASETS[1:] if args.quick else DATASETS
            for name, folder, column, drop in sets:
                for rate in NOISE[:1] if args.quick else NOISE:
                    print(f"auditing {name} at {rate:.0%} noise ...", file=sys.stderr)
                    result["quality"].extend(run_quality(name, DATA / folder, column, drop, rate, work, args.workers, args.k))
        else:
            print(f"{DATA} not found: quality part skipped", file=sys.stderr)
        if args.throughput or args.quick:
            sizes = [40] if args.quick else [int(x) for x in args.scale.split(",") if x]
            result["throughput"] = run_throughput(work, sizes, args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["targets"] = [t.to_dict() for t in targets(result)]
    if not args.json and result["paris_dev"]:
        print_paris_dev(result["paris_dev"])
        print("  goals (issue 11): F1 >= 0.85, precision >= 0.90, suggestion accuracy >= 0.90, <= 15% without answer, ECE <= 0.05")
    if not args.json and result["quality"]:
        rows = [
            (
                f"{q['dataset']} {q['noise']:.0%}",
                q["method"],
                q.get("precision", float("nan")),
                q.get("recall", float("nan")),
                q.get("f1", float("nan")),
                q.get("suggestion_accuracy", float("nan")),
                q.get("suggestion_accuracy_flagged", float("nan")),
                q.get("flagged", ""),
                q.get("errors", ""),
            )
            for q in result["quality"]
        ]
        C.print_table(
            "label-error detection (flags vs flipped labels)", ("setting", "method", "precision", "recall", "F1", "sugg. acc (all errors)", "sugg. acc (flagged errors)", "flagged", "errors"), rows
        )
        print("  sugg. acc (all errors): the suggested label of every flipped sample (an unflagged one keeps its wrong label, or has none);")
        print("  sugg. acc (flagged errors): the same over the flipped samples the method flagged")
        for q in result["quality"]:
            if q["method"] == "consist":
                print(f"  consist {q['dataset']} {q['noise']:.0%}: {q['seconds']} s, {q['unverifiable']} unverifiable")
    if not args.json:
        if result["throughput"]:
            print("  cold: empty output folder and feature cache; warm: the same audit again, features cached; peak RSS: this process or one worker, whichever is larger")
            C.print_table(
                f"throughput ({args.workers} workers)",
                ("images", "cold s", "cold img/s", "warm s", "warm img/s", "peak RSS MB"),
                [(t["images"], t["cold_s"], t["cold_images_per_s"], t["warm_s"], t["warm_images_per_s"], t["peak_rss_mb"]) for t in result["throughput"]],
            )
        C.print_targets(targets(result))
    C.emit(result, args.json, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
