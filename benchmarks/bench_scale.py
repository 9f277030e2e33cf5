"""``consist audit`` at scale: the cost per image of each stage, and the memory of the
parent and of each worker, at 1,000 and 10,000 images, on the local executor and on a
Dask cluster (LocalCluster) with a shared store (SQLite; PostgreSQL when a server and
the ``postgresql://`` store are available). Side by side with the targets:

* per-image time at the largest size within 1.25x of the smallest (the work is N * k,
  never N^2);
* peak RSS of the parent and of each worker within 1.5x from the smallest size to the
  largest;
* SQLite and PostgreSQL within 1.5x of each other on one machine (when both ran);

plus a projection for 10^6 images from the measured per-stage costs.

The dataset is generated from real photos: scikit-image's bundled photos and, when
present, ``../shared/data`` (landmark-multiview, ukbench-subset, revisitop-paris-dev;
read in place, never copied into the repository). Each photo is cut into tiles; each
tile is one object (a class) with 8 views: crop, perspective tilt, rotation, scale,
lighting gain and JPEG quality vary. 5% of the labels are flipped to another object
(the planted errors) and 5% of the images are distractors: views of tiles that are no
class, under a random class's label. Images are small (``--side``, 320 px long side)
and SIFT keeps ``--max-keypoints`` (256) so that 10k images run on 2 cores; the class
count grows with N (8 views per object), so the per-image work is the same at every
size.

Each audit runs in a child process (``consist.audit``) whose process tree is sampled
every 0.25 s for each process's peak RSS (``VmHWM``: the kernel's high-water mark, so
a sample can only miss growth in a process's last 0.25 s); a Dask cluster's workers
report their own ``VmHWM`` at the end. Stage times come from the audit's
``summary.json``. Results per (size, configuration) are kept in ``--work`` and
``--reuse`` reuses them (e.g. run ``--sizes 10000`` once in the background, then
rerun ``--sizes 1000,10000 --reuse`` to print both).

Run: ``nice -n 10 python benchmarks/bench_scale.py --sizes 1000`` (a few minutes),
``--sizes 1000,10000`` (hours on 2 cores; ``--configs local`` for one configuration).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

DATA = Path(os.environ.get("CONSIST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
#: Folders of real photos under ``../shared/data`` used as sources when present.
SHARED_SOURCES = ("landmark-multiview/images", "ukbench-subset/images", "revisitop-paris-dev/images")
#: Views per object (class): the same at every size, so the per-image work is too.
VIEWS_PER_OBJECT = 8
#: Share of images whose label is flipped to another object (the planted errors).
FLIP_RATE = 0.05
#: Share of images that are distractors (a tile that is no class, under a random label).
DISTRACTOR_RATE = 0.05
#: Seconds between two samples of the process tree's memory.
SAMPLE_EVERY_S = 0.25
#: Stages, in order, as the audit's summary.json times them.
STAGES = ("read", "extract", "index", "verify", "decide", "outputs")
#: Configurations: (name, executor kind, store kind).
CONFIGS = {"local": ("local", "sqlite"), "dask": ("dask", "sqlite"), "dask-pg": ("dask", "postgresql")}
#: Stages that run in the workers (they shard across machines); the others run in the parent.
PARALLEL_STAGES = ("extract", "verify")


# ------------------------------------------------------------------ the dataset


def _source_photos(shared: bool) -> list[tuple[str, Any]]:
    """(name, loader) of every source photo, in a fixed order."""
    from consist.demo import demo_photos

    out: list[tuple[str, Any]] = [(f"skimage-{name}", (lambda img=img: img)) for name, img in sorted(demo_photos().items())]
    if shared:
        for folder in SHARED_SOURCES:
            for p in sorted((DATA / folder).rglob("*")):
                if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    out.append((f"{folder.split('/')[0]}-{p.stem}", (lambda p=p: _load(p))))
    return out


def _load(path: Path) -> Any:
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.draft("RGB", (1024, 1024))
        img = ImageOps.exif_transpose(im).convert("RGB")
        img.thumbnail((1024, 1024))
        return np.asarray(img)


def _tiles(img: Any, grid: int) -> list[Any]:
    """The photo cut into ``grid`` x ``grid`` tiles: each one is an object of its own."""
    h, w = img.shape[:2]
    return [img[r * h // grid : (r + 1) * h // grid, c * w // grid : (c + 1) * w // grid] for r in range(grid) for c in range(grid)]


def _view(tile: Any, rng: random.Random, side: int) -> Any:
    """One view: crop, tilt, rotation, scale, lighting; ``side`` px long side at most."""
    from consist.demo import perspective

    x0, y0 = rng.uniform(0, 0.15), rng.uniform(0, 0.15)
    h, w = tile.shape[:2]
    scale = min(1.0, side / max(h, w)) * rng.uniform(0.75, 1.0)
    return perspective(
        tile,
        tilt=rng.uniform(0, 0.25),
        pan=rng.uniform(0, 0.15),
        rotate_deg=rng.uniform(-20, 20),
        scale=scale,
        crop=(x0, y0, x0 + rng.uniform(0.75, 0.85), y0 + rng.uniform(0.75, 0.85)),
        gain=rng.uniform(0.65, 1.35),
    )


def build_dataset(root: Path, n: int, *, side: int, shared: bool, seed: int = 0) -> dict[str, Any]:
    """Write ``n`` images under ``root/<label>/``; returns (and keeps in
    ``root/manifest.json``) the truth: each image's object, its given label, which
    labels were flipped, which images are distractors. Reused when already built."""
    from PIL import Image

    manifest = root / "manifest.json"
    if manifest.exists():
        data: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("n") == n and data.get("side") == side and data.get("shared") == shared and data.get("seed") == seed:
            return data
        shutil.rmtree(root)
    rng = random.Random(seed)
    sources = _source_photos(shared)
    n_distractors = round(n * DISTRACTOR_RATE)
    n_objects = -(-(n - n_distractors) // VIEWS_PER_OBJECT)
    grid = 2
    while len(sources) * grid * grid < n_objects + n_distractors and grid < 6:
        grid += 1
    # which tiles are objects, which are distractors: a fixed shuffle of all tiles
    slots = [(s, t) for s in range(len(sources)) for t in range(grid * grid)]
    rng.shuffle(slots)
    objects = sorted(slots[:n_objects])
    distractor_tiles = sorted(slots[n_objects : n_objects + n_distractors])
    if len(objects) < n_objects:
        raise SystemExit(f"not enough source tiles for {n} images ({len(slots)} tiles)")
    labels = [f"o{i:05d}" for i in range(len(objects))]
    plan: dict[int, list[tuple[str, str | None]]] = {}  # source -> [(tile key, object label or None)]
    for lab, (s, t) in zip(labels, objects):
        plan.setdefault(s, []).append((f"{t}", lab))
    for s, t in distractor_tiles:
        plan.setdefault(s, []).append((f"{t}", None))
    items: list[dict[str, Any]] = []
    made = 0
    with C.progress(f"generating {n} images from {len(sources)} photos ({grid}x{grid} tiles) in {root}"):
        for s in sorted(plan):
            name, load = sources[s]
            tiles = _tiles(load(), grid)
            for tkey, lab in plan[s]:
                tile = tiles[int(tkey)]
                views = VIEWS_PER_OBJECT if lab is not None else 1
                for _view_no in range(views):
                    if made >= n:
                        break
                    if lab is None:
                        given, flipped = labels[rng.randrange(len(labels))], False
                    elif rng.random() < FLIP_RATE:
                        given, flipped = labels[rng.randrange(len(labels))], True
                        flipped = given != lab
                    else:
                        given, flipped = lab, False
                    img = _view(tile, rng, side)
                    rel = f"{given}/{made:06d}.jpg"
                    (root / given).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(root / rel, quality=rng.randint(60, 95))
                    items.append({"sample": rel, "object": lab, "given": given, "flipped": flipped, "source": f"{name}#{tkey}"})
                    made += 1
    data = {"n": n, "side": side, "shared": shared, "seed": seed, "sources": len(sources), "grid": grid, "objects": len(objects), "items": items}
    manifest.write_text(json.dumps(data), encoding="utf-8")
    return data


# ------------------------------------------------------------ flag quality


def _landmarks() -> dict[str, frozenset[str]]:
    """Source photo name -> what it shows, from each shared data set's own listing:
    the landmark (landmark-multiview: its folder; revisitop-paris-dev: the landmarks the
    image is positive for, else its file name's landmark) or the object (ukbench-subset:
    ``object_id``). Photos absent here (scikit-image's) show nothing in common."""
    out: dict[str, set[str]] = {}
    lm = DATA / "landmark-multiview" / "images"
    if lm.exists():
        for p in lm.rglob("*"):
            if p.is_file():
                out.setdefault(f"landmark-multiview-{p.stem}", set()).add(f"landmark-multiview:{p.parent.name}")
    for listing, key in ((DATA / "ukbench-subset" / "labels.csv", "ukbench-subset"), (DATA / "revisitop-paris-dev" / "manifest.csv", "revisitop-paris-dev")):
        if not listing.exists():
            continue
        for row in _read_csv(listing):
            path = row.get("image_file") or row.get("file") or ""
            if not path.startswith("images/"):
                continue
            name = f"{key}-{Path(path).stem}"
            if key == "ukbench-subset":
                out.setdefault(name, set()).add(f"ukbench:{row['object_id']}")
            else:  # one row per (query, image): the landmarks it is positive for, over all rows
                shown = out.setdefault(name, set())
                shown.update(f"paris:{x}" for x in (row.get("positive_for_landmarks") or "").split(";") if x)
                prefix = Path(path).stem.rsplit("_", 1)[0]
                if prefix != "paris_general":  # "general" photos show anything: only their positives count
                    shown.add(f"paris:{prefix}")
    return {k: frozenset(v) for k, v in out.items()}


def flag_quality(manifest: dict[str, Any], rows: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Planted flips found and the precision of the flags against the planted errors
    and distractors; and the same precision leaving out the flags that name, for a
    correctly labelled image, an object cut from ANOTHER photo of the same landmark or
    object: two such tiles can show the same surface under two labels (the audit found
    them verified against each other), which the generated truth cannot rule out. The
    shared sets hold several photos per landmark (82 photos of 14 landmarks in
    landmark-multiview), so at 10k images this is most of what looks like a false flag.
    """
    items = {it["sample"]: it for it in manifest["items"]}
    flipped = {s for s, it in items.items() if it["flipped"]}
    wrong = flipped | {s for s, it in items.items() if it["object"] is None}
    flagged = [r for r in rows if r["flagged"] == "true"]
    photo = {it["object"]: it["source"].split("#")[0] for it in manifest["items"] if it["object"]}
    shows = _landmarks()
    same_landmark = 0
    for r in flagged:
        if r["sample"] in wrong:
            continue
        a, b = photo.get(items[r["sample"]]["object"]), photo.get(r["suggested_label"])
        if a is not None and b is not None and a != b and shows.get(a, frozenset()) & shows.get(b, frozenset()):
            same_landmark += 1
    hits = sum(1 for r in flagged if r["sample"] in wrong)
    return {
        "planted_flips": len(flipped),
        "flipped_flagged": sum(1 for r in flagged if r["sample"] in flipped),
        "flag_precision": round(hits / len(flagged), 3) if flagged else None,
        "flags_same_landmark": same_landmark,
        "flag_precision_other": round(hits / (len(flagged) - same_landmark), 3) if len(flagged) > same_landmark else None,
    }


# ------------------------------------------------------------- memory sampling


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class TreeMemory:
    """Peak RSS (VmHWM) of a process and each of its descendants, sampled every
    :data:`SAMPLE_EVERY_S` seconds in a thread until :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[int, float] = {}
        #: pid -> command line (the local executor's helper processes are told apart by it)
        self.cmdlines: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            kids = _children()
            todo, seen = [self.pid], set()
            while todo:
                p = todo.pop()
                if p in seen:
                    continue
                seen.add(p)
                todo.extend(kids.get(p, ()))
                hwm = _hwm_mb(p)
                if p not in self.cmdlines:
                    try:
                        with open(f"/proc/{p}/cmdline", "rb") as fh:
                            self.cmdlines[p] = fh.read().replace(b"\0", b" ").decode(errors="replace")
                    except OSError:
                        self.cmdlines[p] = ""
                if hwm is not None:
                    self.peaks[p] = max(self.peaks.get(p, 0.0), hwm)
            self._stop.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _worker_hwm(_: object = None) -> tuple[int, float | None]:
    """Run on a Dask worker: its pid and peak RSS."""
    return os.getpid(), _hwm_mb(os.getpid())


# ------------------------------------------------------------------- one audit


def _child(spec: dict[str, Any]) -> None:
    """The audit itself, in a fresh process (``--child``): its memory is the parent's."""
    import consist

    executor = spec["executor"]
    result = consist.audit(
        spec["dataset"],
        spec["out"],
        store=spec.get("store"),
        executor=executor,
        workers=spec.get("workers"),
        progress=True,
        max_side=spec["side"],
        max_keypoints=spec["max_keypoints"],
    )
    print(json.dumps({"samples": len(result.rows)}), flush=True)


def _store_size_mb(store: str | None, out: Path) -> float:
    """Bytes the store occupies (SQLite: the file and its WAL; PostgreSQL: the database)."""
    if store and store.startswith("postgresql"):
        import psycopg

        with psycopg.connect(store.split("?")[0]) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return float(row[0]) / 2**20 if row else float("nan")
    path = Path(store[len("sqlite:///") :]) if store else out / "store.db"
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()) / 2**20


def run_one(config: str, ds: Path, n: int, work: Path, args: argparse.Namespace, pg: Any) -> dict[str, Any]:
    """One audit of ``ds`` under ``config``; its stage times, memory and store size."""
    executor_kind, store_kind = CONFIGS[config]
    out = work / f"out-{n}-{config}"
    shutil.rmtree(out, ignore_errors=True)
    store = None
    if store_kind == "postgresql":
        store = pg.create_database(f"bench_scale_{n}_{int(time.time())}")
    cluster = client = None
    worker_peaks: dict[int, float] = {}
    if executor_kind == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        executor = "dask://" + cluster.scheduler_address.replace("tcp://", "")
    else:
        executor = "local"
    spec = {"dataset": str(ds), "out": str(out), "store": store, "executor": executor, "workers": args.workers, "side": args.side, "max_keypoints": args.max_keypoints}
    env = dict(os.environ)
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], env=env, stdout=subprocess.PIPE, stderr=None if args.verbose else subprocess.DEVNULL, text=True)
        mem = TreeMemory(proc.pid)
        proc.communicate()
        mem.stop()
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the {config} audit of {n} images failed (exit {proc.returncode}); rerun with --verbose")
        if client is not None:
            worker_peaks = {pid: hwm for pid, hwm in client.run(_worker_hwm).values() if hwm is not None}
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    t = summary["timings"]
    stages = {
        "read": t.get("read_s", 0.0),
        "extract": t.get("extract_s", 0.0),
        "index": t.get("index_s", 0.0),
        "verify": t.get("verify_s", 0.0),
        "decide": t.get("decide_s", 0.0),
        "outputs": sum(v for k, v in t.items() if k.startswith("report_") and k.endswith("_s") and k != "report_s"),
    }
    parent = mem.peaks.get(proc.pid, float("nan"))
    if executor_kind == "local":
        # the pool's worker processes, not multiprocessing's resource tracker
        worker_peaks = {p: v for p, v in mem.peaks.items() if p != proc.pid and "resource_tracker" not in mem.cmdlines.get(p, "")}
    manifest = json.loads((ds / "manifest.json").read_text(encoding="utf-8"))
    return {
        "config": config,
        "executor": executor_kind,
        "store": store_kind,
        "images": n,
        "wall_s": round(wall, 2),
        "stage_s": {k: round(v, 3) for k, v in stages.items()},
        "stage_ms_per_image": {k: round(1e3 * v / n, 3) for k, v in stages.items()},
        "total_ms_per_image": round(1e3 * sum(stages.values()) / n, 3),
        "parent_peak_rss_mb": round(parent, 1),
        "worker_peak_rss_mb": sorted(round(v, 1) for v in worker_peaks.values()),
        "store_mb": round(_store_size_mb(store, out), 2),
        "store_kb_per_image": round(1024 * _store_size_mb(store, out) / n, 2),
        "counts": summary["counts"],
        "label_model": {k: summary["label_model"].get(k) for k in ("groups", "linked_groups", "classes")},
        **flag_quality(manifest, list(_read_csv(out / "audit.csv"))),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _read_csv(path: Path) -> Any:
    import csv

    with path.open(encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


# --------------------------------------------------------------------- report


def _ratio(a: float, b: float) -> float:
    return b / a if a and a == a and b == b else float("nan")


def targets(results: Sequence[dict[str, Any]]) -> list[C.Target]:
    out: list[C.Target] = []
    by = {(r["config"], r["images"]): r for r in results}
    sizes = sorted({r["images"] for r in results})
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        for config in CONFIGS:
            a, b = by.get((config, lo)), by.get((config, hi))
            if a is None or b is None:
                continue
            out.append(C.Target(f"{config}: time per image {hi} / {lo}", _ratio(a["total_ms_per_image"], b["total_ms_per_image"]), "<", 1.25, "x", "N * k: the per-image cost must not grow with N"))
            out.append(C.Target(f"{config}: parent peak RSS {hi} / {lo}", _ratio(a["parent_peak_rss_mb"], b["parent_peak_rss_mb"]), "<", 1.5, "x"))
            wa, wb = max(a["worker_peak_rss_mb"] or [float("nan")]), max(b["worker_peak_rss_mb"] or [float("nan")])
            out.append(C.Target(f"{config}: largest worker peak RSS {hi} / {lo}", _ratio(wa, wb), "<", 1.5, "x"))
    for n in sizes:
        a, b = by.get(("dask", n)), by.get(("dask-pg", n))
        if a is not None and b is not None:
            out.append(C.Target(f"{n} images: PostgreSQL / SQLite time per image (Dask)", _ratio(a["total_ms_per_image"], b["total_ms_per_image"]), "<", 1.5, "x"))
    return out


def projection(results: Sequence[dict[str, Any]], workers: int, target_n: int = 1_000_000) -> list[dict[str, Any]]:
    """Per stage: the growth exponent measured between the two largest sizes of the
    local run (1.0: linear), the cost at ``target_n`` images extrapolated with it, as
    CPU hours and as wall hours (stages in the workers divided over ``workers``)."""
    local = sorted((r for r in results if r["config"] == "local"), key=lambda r: r["images"])
    if not local:
        return []
    import math

    hi = local[-1]
    lo = local[-2] if len(local) >= 2 else None
    rows = []
    for stage in STAGES:
        t_hi = hi["stage_s"][stage]
        expo = 1.0
        if lo is not None and lo["stage_s"][stage] > 0.05 and t_hi > 0.05:
            expo = math.log(t_hi / lo["stage_s"][stage]) / math.log(hi["images"] / lo["images"])
        wall_s = t_hi * (target_n / hi["images"]) ** max(1.0, expo)
        parallel = stage in PARALLEL_STAGES
        rows.append(
            {
                "stage": stage,
                "where": "workers" if parallel else "parent",
                "growth_exponent": round(expo, 3),
                "s_at_measured": t_hi,
                "hours_at_target_single": round(wall_s / 3600 * (workers if parallel else 1), 2),
                "hours_at_target_wall": round(wall_s / 3600, 2),
            }
        )
    return rows


def report(result: dict[str, Any], tg: Sequence[C.Target]) -> None:
    C.print_machine(result["machine"])
    results = result["results"]
    sizes = sorted({r["images"] for r in results})
    for config in CONFIGS:
        rs = {r["images"]: r for r in results if r["config"] == config}
        if not rs:
            continue
        head = ["stage (ms per image)"] + [f"{n:,}" for n in sizes if n in rs]
        if len(rs) >= 2:
            head.append("ratio")
        rows: list[list[Any]] = []
        for stage in [*STAGES, "total"]:
            vals = [rs[n]["total_ms_per_image"] if stage == "total" else rs[n]["stage_ms_per_image"][stage] for n in sizes if n in rs]
            rows.append([stage, *vals] + ([_ratio(vals[0], vals[-1])] if len(vals) >= 2 else []))
        for label, key in (("parent peak RSS (MB)", "parent_peak_rss_mb"), ("store (KB per image)", "store_kb_per_image"), ("wall (s)", "wall_s")):
            vals = [rs[n][key] for n in sizes if n in rs]
            rows.append([label, *vals] + ([_ratio(vals[0], vals[-1])] if len(vals) >= 2 else []))
        vals = [max(rs[n]["worker_peak_rss_mb"] or [float("nan")]) for n in sizes if n in rs]
        rows.append(["largest worker peak RSS (MB)", *vals] + ([_ratio(vals[0], vals[-1])] if len(vals) >= 2 else []))
        C.print_table(f"{config}: executor {rs[max(rs)]['executor']}, store {rs[max(rs)]['store']}, {result['workers']} workers", head, rows)
        for n in sizes:
            if n in rs:
                r = rs[n]
                print(
                    f"  {n:,}: workers' peak RSS (MB) {r['worker_peak_rss_mb']}; {r['counts']['flagged']} flagged, {r['counts']['suspect']} suspect; "
                    f"planted flips flagged {r['flipped_flagged']}/{r['planted_flips']}, flag precision {r['flag_precision']} "
                    f"({r.get('flag_precision_other', '—')} leaving out {r.get('flags_same_landmark', '—')} flags naming a tile of another photo of the same landmark); label model {r['label_model']}; measured {r['measured_at']}"
                )
    if result.get("skipped"):
        for line in result["skipped"]:
            print(f"  not measured: {line}")
    proj = result.get("projection") or []
    if proj:
        C.print_table(
            "projection to 10^6 images (local run: each stage extrapolated with its measured growth, at least linear)",
            ["stage", "runs in", "growth exponent", "s measured", "h on 1 core", f"h wall ({result['workers']} workers)"],
            [[p["stage"], p["where"], p["growth_exponent"], p["s_at_measured"], p["hours_at_target_single"], p["hours_at_target_wall"]] for p in proj],
        )
    C.print_targets(tg)


# ----------------------------------------------------------------------- main


def _postgres(skipped: list[str]) -> Any:
    """A throw-away PostgreSQL server (tests/pgserver.py), or None (reason in ``skipped``)."""
    from consist import plugins

    if "postgresql" not in plugins.store_openers():
        skipped.append("PostgreSQL: no postgresql:// store is registered in this checkout")
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    try:
        import pgserver
    except ImportError:
        skipped.append("PostgreSQL: tests/pgserver.py is missing")
        return None
    if pgserver.find_bindir() is None:
        skipped.append("PostgreSQL: no server binaries (initdb, postgres) found")
        return None
    return pgserver.start_server()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000", help="image counts, comma-separated (default 1000,10000; 10000 takes hours on 2 cores)")
    ap.add_argument("--configs", default="local,dask,dask-pg", help=f"configurations: {', '.join(CONFIGS)} (dask-pg needs a PostgreSQL server and the postgresql:// store)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes, local and Dask (default 2)")
    ap.add_argument("--side", type=int, default=320, help="long side of the generated images, px (default 320)")
    ap.add_argument("--max-keypoints", type=int, default=256, help="SIFT keypoints per image (default 256)")
    ap.add_argument("--no-shared", action="store_true", help="scikit-image photos only, even when ../shared/data is present")
    ap.add_argument("--work", default=None, help="work folder: datasets, outputs, results (default: a temporary folder, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--reuse", action="store_true", help="reuse the results already in --work for the sizes and configurations asked")
    ap.add_argument("--verbose", action="store_true", help="show the audits' progress")
    ap.add_argument("--json", action="store_true", help="print a JSON object")
    ap.add_argument("--json-out", default=None, help="also write the JSON here")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a required target fails")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    shared = DATA.exists() and not args.no_shared
    skipped: list[str] = []
    if not shared:
        skipped.append(f"../shared/data ({DATA}) is absent: scikit-image photos only")
    pg = _postgres(skipped) if "dask-pg" in configs else None
    if pg is None and "dask-pg" in configs:
        configs.remove("dask-pg")
    results: list[dict[str, Any]] = []
    try:
        for n in sizes:
            ds = work / f"dataset-{n}"
            build_dataset(ds, n, side=args.side, shared=shared)
            for config in configs:
                keep = work / f"result-{n}-{config}.json"
                if args.reuse and keep.exists():
                    kept = json.loads(keep.read_text(encoding="utf-8"))
                    if "flags_same_landmark" not in kept and (work / f"out-{n}-{config}" / "audit.csv").exists():  # a result from before that figure
                        kept.update(flag_quality(json.loads((ds / "manifest.json").read_text(encoding="utf-8")), list(_read_csv(work / f"out-{n}-{config}" / "audit.csv"))))
                    results.append(kept)
                    print(f"[bench] {config}, {n} images: reused {keep}", file=sys.stderr, flush=True)
                    continue
                with C.progress(f"{config} audit of {n} images"):
                    r = run_one(config, ds, n, work, args, pg)
                keep.write_text(json.dumps(r, indent=2), encoding="utf-8")
                results.append(r)
    finally:
        if pg is not None:
            pg.stop()
        if not args.work and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        "machine": C.machine_info({"sizes": sizes, "configs": configs, "side": args.side, "max_keypoints": args.max_keypoints, "shared_data": shared, "work": str(work)}),
        "workers": args.workers,
        "results": results,
        "skipped": skipped,
        "projection": projection(results, args.workers),
    }
    tg = targets(results)
    return C.finish(result, tg, args, lambda: report(result, tg))


if __name__ == "__main__":
    raise SystemExit(main())
