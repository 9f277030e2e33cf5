"""The learned path on a CUDA GPU (issue 11): learned feature extraction, LightGlue
verification and a revisitop-paris-dev label audit with ``--features
aliked-n16+lightglue --device cuda``, with the figures the CPU benchmarks print.

Without a CUDA device (``torch.cuda.is_available()`` is False, or torch is not
installed) it says so and exits 0 having run nothing: the CPU figures come from
``bench_paris_pixels.py`` and ``bench_audit.py``.

With one:

1. ``bench_paris_pixels.py --device cuda`` for ``--features`` (default
   ``aliked-n16+lightglue``): extraction seconds per image (wall and CPU: on a GPU
   the wall time is the cost), LightGlue verification seconds per pair, and the
   dev-set tasks 3-5 (verification ROC-AUC, localisation box / mask IoU, ranking mAP
   with ASMK and + spatial re-ranking; HP only with ``--with-hp``: its matching
   hypergraph verifies every pair of the 183 photos with mutual-NN matching, minutes
   even on a GPU machine's CPUs).
2. ``consist.audit`` of the dev set's natural labels (task 1: given label = the file
   name's) with ``features=<the first pipeline>``, ``device="cuda"``, cold (empty
   feature cache), scored by ``_paris_dev.score``: precision / recall / F1, suggestion
   accuracy, the share without an answer, ECE; wall and CPU seconds, per image.

Stores and caches go to ``--cache`` (default ``<tmp>/consist-bench-learned-cuda``);
the photos are read from ``../shared/data/revisitop-paris-dev`` (``--data``,
``$CONSIST_SHARED_DATA``) and never copied.

Run: ``python benchmarks/bench_learned_cuda.py`` (``--json`` for one JSON object;
``--skip audit`` or ``--skip pixels``; ``--fresh`` empties the cache first).
``--device cpu`` runs the same steps on the CPU to test the script where there is no
GPU (slow: add ``--queries p25 --limit 10``; its audit of a subset is a cost estimate,
not a quality figure: the subset's photos only see each other).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

DEFAULT_FEATURES = "aliked-n16+lightglue"


def cuda_device() -> str | None:
    """The CUDA device's name, or None when there is none (or no torch)."""
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return str(torch.cuda.get_device_name(0))
    except Exception:
        return None


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (audit workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_pixels(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    import bench_paris_pixels as BPP

    out = cache / "pixels.json"
    argv = ["--features", args.features, "--device", args.device, "--cache", str(cache / "pixels"), "--threads", str(args.threads), "--json-out", str(out)]
    if args.data:
        argv += ["--data", args.data]
    if args.queries:
        argv += ["--queries", args.queries]
    if not args.with_hp:
        argv += ["--skip", "hp"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf if args.json else sys.stdout):
        rc = BPP.main(argv)
    if rc != 0 or not out.exists():
        return {"error": f"bench_paris_pixels exited {rc}"}
    return json.loads(out.read_text(encoding="utf-8"))


def run_audit(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    import _paris_dev as PD

    import consist

    data = Path(args.data) if args.data else PD.DATA
    root = PD.dev_root(data)
    if not root.exists():
        return {"error": f"{root} not found"}
    task = PD.natural_task(PD.load_photos(root), root)
    if args.limit:  # an evenly spaced subset, to estimate costs
        keep = task.paths[:: max(1, len(task.paths) // args.limit)][: args.limit]
        task = PD.Task(f"natural-{len(keep)}", keep, {p: task.given[p] for p in keep}, {p: task.truth[p] for p in keep}, root)
    work = cache / "audit"
    shutil.rmtree(work, ignore_errors=True)  # cold: empty feature cache
    work.mkdir(parents=True)
    labels = PD.write_labels_csv(task, work / "natural.csv")
    feature = args.features.split(",")[0].strip()
    c0, w0 = cpu_seconds(), time.perf_counter()
    result = consist.audit(root, work / "out", labels=labels, store=f"sqlite:///{work / 'cache.db'}", workers=args.workers, report=False, progress=False, features=feature, device=args.device)
    wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    co = PD.consist_outputs(result.rows)
    score = PD.score(task, co["flagged"], co["suggested"], co["p_wrong"], co["answered"], method=f"consist --features {feature} --device {args.device}")
    n = len(task.paths)
    return {
        "features": feature,
        "device": args.device,
        "workers": args.workers,
        "images": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "wall_s_per_image": wall / n,
        "cpu_s_per_image": cpu / n,
        "summary_timings": result.summary.get("timings"),
        "summary_features": result.summary.get("features"),
        "score": score,
    }


def report(result: dict[str, Any]) -> None:
    C.print_machine(result["machine"])
    px = result.get("pixels")
    if px and "pipelines" in px:
        rows = []
        for r in px["pipelines"]:
            if r.get("skipped"):
                rows.append((r["pipeline"] + " (skipped: " + r["skipped"][:60] + ")", *(["n/a"] * 8)))
                continue
            v, lo, ex, rk = r["verification"], r["localisation"], r["extraction"], r.get("ranking") or {}
            rows.append(
                (
                    r["pipeline"],
                    ex["wall_s_per_image"],
                    ex["cpu_s_per_image"],
                    v["wall_s_per_pair"],
                    v["cpu_s_per_pair"],
                    v["auc_score"],
                    lo["box_iou_mean"],
                    rk.get("map_asmk", float("nan")),
                    rk.get("map_spatial", float("nan")),
                )
            )
        C.print_table(
            f"learned path on {result['machine']['cuda_device']}: revisitop-paris-dev pixel tasks",
            ("pipeline", "extract wall s/img", "extract CPU s/img", "verify wall s/pair", "verify CPU s/pair", "AUC", "box IoU", "mAP asmk", "mAP +spatial"),
            rows,
        )
    elif px:
        print(f"\npixel tasks: {px.get('error')}")
    au = result.get("audit")
    if au and "score" in au:
        s = au["score"]
        C.print_table(
            f"learned path on {au['device']}: consist audit, revisitop-paris-dev natural labels ({au['images']} photos, {au['workers']} workers, cold)",
            ("features", "precision", "recall", "F1", "sugg. acc", "without answer", "ECE", "wall s", "wall s/img", "CPU s/img"),
            [(au["features"], s["precision"], s["recall"], s["f1"], s["suggestion_accuracy_flagged"], s["without_answer"], s["ece"], au["wall_s"], au["wall_s_per_image"], au["cpu_s_per_image"])],
        )
    elif au:
        print(f"\naudit: {au.get('error')}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default=DEFAULT_FEATURES, help=f"comma list of learned pipelines (default {DEFAULT_FEATURES}); the audit uses the first")
    ap.add_argument("--data", default=None, help="the shared data folder (default $CONSIST_SHARED_DATA or ../shared/data)")
    ap.add_argument("--cache", default=None, help="work folder (default <tmp>/consist-bench-learned-cuda)")
    ap.add_argument("--fresh", action="store_true", help="empty the cache first (cold extraction and verification)")
    ap.add_argument("--skip", default="", help="comma list: pixels, audit")
    ap.add_argument("--with-hp", action="store_true", help="also the HP column (builds the store's matching hypergraph: slow)")
    ap.add_argument("--workers", type=int, default=2, help="audit worker processes (default 2; each loads the models on the GPU)")
    ap.add_argument("--threads", type=int, default=4, help="CPU threads for torch / OpenCV in the pixel tasks (default 4)")
    ap.add_argument("--queries", default="", help="pixel tasks on these query folders only (p10,p15,...; default all 10)")
    ap.add_argument("--limit", type=int, default=0, help="audit an evenly spaced subset of this many photos (default 0: all 183)")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu runs the same steps on the CPU, to test this script where there is no GPU (slow)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    ap.add_argument("--json-out", metavar="PATH", help="also write the JSON object to PATH")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    device = cuda_device() if args.device.startswith("cuda") else f"{args.device} (test run, no GPU used)"
    if device is None:
        print("bench_learned_cuda: no CUDA device here (torch.cuda.is_available() is False or torch is missing): nothing run; the CPU figures come from bench_paris_pixels.py and bench_audit.py")
        return 0
    cache = Path(args.cache) if args.cache else Path(tempfile.gettempdir()) / "consist-bench-learned-cuda"
    if args.fresh:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": C.machine_info({"cuda_device": device, "features": args.features, "cache": str(cache)})}
    t0 = time.perf_counter()
    if "pixels" not in skip:
        with C.progress(f"pixel tasks on {args.device}"):
            result["pixels"] = run_pixels(args, cache)
    if "audit" not in skip:
        with C.progress(f"audit on {args.device}"):
            result["audit"] = run_audit(args, cache)
    result["machine"]["loadavg_at_end"] = C.loadavg()
    result["machine"]["wall_s"] = round(time.perf_counter() - t0, 1)
    if not args.json:
        report(result)
    C.emit(result, args.json, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
