"""Topological plugin benchmarks: hypergraph propagation (HP), community selection
(CS) and topological RANSAC (TR) on the shared photos, plus scaling on synthetic graphs.

1. **retrieval mAP**, leave-one-out on landmark-multiview (78 photos, 13 landmarks;
   the ambiguous alamo_plaza left out as in bench_spatial) and ukbench-subset (56):
   ASMK over SIFT/RootSIFT, + spatial re-ranking (verified neighbours first, by
   inliers), + HP (3 hops through active regions), + CS. Spatial re-ranking and HP
   use the *same* verifications (the query's hyperedges in the graph, i.e. its
   DEGENSAC verification against its top-k), so the gap between them is propagation.
   Target: HP > spatial re-ranking (as in the paper: ROxford M/H 85.7/70.3 with DELG).
2. **TR vs homography ROC-AUC** on bench_spatial's pairs: every same-instance pair and
   as many cross-instance pairs (fixed seed) on landmark-multiview and ukbench-subset;
   wxbs-v1.1 positives against cross-scene negatives. Scores: TR's largest region,
   DEGENSAC homography inliers (the spatial plugin's verification).
3. **costs**: graph build per image (fresh, every pair verified), propagation time per
   query with the cached graph (target < 5 ms), memory of the loaded graph per image.
4. **scaling**: random sparse hypergraphs of 1k, 10k, 100k nodes, ``k`` edges per
   node with 20 inliers each: build time (hyperedges made, serialised as stored, added)
   and 3-hop propagation per query; build time / (N*k) stays flat when growth is linear.

Run: ``python benchmarks/bench_topological.py`` (``--quick`` for a smoke run on
subsets, ``--json`` for one JSON object on stdout, ``--skip`` to leave parts out).
Stores, features and graphs are cached under ``--cache`` (default
``<tmp>/consist-bench-topological``): a second run only evaluates.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import _spatial_data as D

#: HP must beat spatial re-ranking (mAP points).
HP_MARGIN = 0.0
#: Propagation per query with a cached graph.
PROPAGATION_MS = 5.0


def log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)


def roc_auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Mann-Whitney U / (n_pos n_neg): P(positive > negative) + P(tie) / 2."""
    if not pos or not neg:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


class _Item:
    """bench data item as the evaluation wants it (``uri`` instead of ``path``)."""

    def __init__(self, it: D.Item) -> None:
        self.id, self.uri, self.label = it.id, it.path, it.label


# ------------------------------------------------------------------ retrieval


def bench_retrieval(datasets: dict[str, list[D.Item]], cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    from consist_topological.evaluation import evaluate_labelled
    from consist_topological.hypergraph import MatchingHypergraph

    out: dict[str, Any] = {}
    for name, items in datasets.items():
        store = D.open_dataset_store(cache / f"{name}.sqlite", items)
        t0 = time.perf_counter()
        res = evaluate_labelled(store, [_Item(it) for it in items], k=args.k, name=name)
        log(f"retrieval {name}: {time.perf_counter() - t0:.1f} s", args.quiet)
        block = res.to_dict()
        # memory of the loaded graph: everything a load allocates (networkx + arrays)
        tracemalloc.start()
        g = MatchingHypergraph(attrs_evolve_k(args.k))
        g.build(store, save=False)
        current, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        block["graph_memory_bytes_per_image"] = current / max(1, len(g))
        out[name] = block
        store.close()
    return out


def attrs_evolve_k(k: int) -> Any:
    from consist_topological.hypergraph import GraphConfig

    return GraphConfig(k=k)


def bench_build(items: list[D.Item], cache: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh graph (nothing reused from the store's saved hyperedges): seconds per
    image and per verified pair."""
    from consist_spatial import AsmkRetriever, detect_extractor
    from consist_spatial.features import SiftExtractor
    from consist_topological.hypergraph import GraphConfig, MatchingHypergraph

    store = D.open_dataset_store(cache / f"{name}.sqlite", items)
    retr = AsmkRetriever(extractor=detect_extractor(store) or SiftExtractor())
    retr.index_for(store)  # index (and features) ready: what is timed is the graph
    g = MatchingHypergraph(GraphConfig(k=args.k))
    t0 = time.perf_counter()
    report = g.add_samples(list(store.samples()), store, retriever=retr, save=False)
    dt = time.perf_counter() - t0
    store.close()
    return {
        "dataset": name,
        "images": report.added,
        "k": min(args.k, len(items) - 1),
        "verified_pairs": report.verified_pairs,
        "build_s": dt,
        "build_s_per_image": dt / max(1, report.added),
        "ms_per_pair": 1e3 * dt / max(1, report.verified_pairs),
        "edges": g.n_edges,
    }


# ------------------------------------------------------------------------ TR


def _pair_scores(pairs: Sequence[tuple[D.Item, D.Item]], store: Any, ext: Any, args: argparse.Namespace, what: str) -> list[dict[str, Any]]:
    from consist.records import Sample
    from consist_spatial.features import features_for
    from consist_spatial.matching import match_features
    from consist_spatial.verify import verify_pair
    from consist_topological.tr import topological_ransac

    def feats(it: D.Item) -> Any:
        return features_for(Sample(it.id, uri=it.path, label=it.label), store, ext)

    out = []
    t_start = time.perf_counter()
    for n, (a, b) in enumerate(pairs, 1):
        fa, fb = feats(a), feats(b)
        t0 = time.perf_counter()
        tr = topological_ransac(fa, fb)
        t1 = time.perf_counter()
        v = verify_pair(fa, fb, match_features(fa, fb))
        t2 = time.perf_counter()
        out.append({"tr": tr.score, "tr_regions": tr.regions, "inliers": v.inliers, "verified": v.verified, "tr_ms": 1e3 * (t1 - t0), "h_ms": 1e3 * (t2 - t1)})
        if n % 50 == 0:
            log(f"TR {what}: {n}/{len(pairs)} pairs ({time.perf_counter() - t_start:.0f} s)", args.quiet)
    return out


def _auc_block(pos: list[dict[str, Any]], neg: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "n_pos": len(pos),
        "n_neg": len(neg),
        "auc_tr": roc_auc([r["tr"] for r in pos], [r["tr"] for r in neg]),
        "auc_homography_inliers": roc_auc([r["inliers"] for r in pos], [r["inliers"] for r in neg]),
        "median_tr_pos": statistics.median(r["tr"] for r in pos) if pos else math.nan,
        "median_tr_neg": statistics.median(r["tr"] for r in neg) if neg else math.nan,
        "tr_ms_mean": statistics.fmean(r["tr_ms"] for r in pos + neg) if pos + neg else math.nan,
        "homography_ms_mean": statistics.fmean(r["h_ms"] for r in pos + neg) if pos + neg else math.nan,
    }


def bench_tr(datasets: dict[str, list[D.Item]], wxbs: list[D.WxbsPair], cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    from consist_spatial.features import SiftExtractor

    ext = SiftExtractor()
    out: dict[str, Any] = {}
    for name, items in datasets.items():
        store = D.open_dataset_store(cache / f"{name}.sqlite", items)
        pos_ij = D.positive_pairs(items)
        neg_ij = D.negative_pairs(items, len(pos_ij), seed=args.seed)
        pos = _pair_scores([(items[i], items[j]) for i, j in pos_ij], store, ext, args, f"{name} positives")
        neg = _pair_scores([(items[i], items[j]) for i, j in neg_ij], store, ext, args, f"{name} negatives")
        out[name] = _auc_block(pos, neg)
        store.close()
    if wxbs:
        items = sorted({it.id: it for p in wxbs for it in (p.img1, p.img2)}.values(), key=lambda it: it.id)
        store = D.open_dataset_store(cache / "wxbs-v1.1.sqlite", items)
        rng = random.Random(args.seed)
        cross = [(a, b) for a in wxbs for b in wxbs if D.wxbs_scene(a.name) != D.wxbs_scene(b.name)]
        negs = sorted(rng.sample(cross, min(len(cross), len(wxbs))), key=lambda ab: (ab[0].name, ab[1].name))
        pos = _pair_scores([(w.img1, w.img2) for w in wxbs], store, ext, args, "wxbs positives")
        neg = _pair_scores([(a.img1, b.img2) for a, b in negs], store, ext, args, "wxbs negatives")
        out["wxbs-v1.1"] = _auc_block(pos, neg)
        store.close()
    return out


# ------------------------------------------------------------------- scaling


def _fill(g: Any, n: int, k: int, inliers: int, rng: Any) -> int:
    from consist_topological.hypergraph import Hyperedge, _encode

    nbytes = 0
    for a in range(n):
        others = rng.choice(n - 1, size=k, replace=False)
        others[others >= a] += 1
        edges = []
        for b in others.tolist():
            ca, cb = rng.uniform(100, 900, 2), rng.uniform(100, 900, 2)
            pa = ca + rng.normal(0, 60, (inliers, 2))
            pb = cb + rng.normal(0, 60, (inliers, 2))
            idx = rng.integers(0, 2048, inliers)
            edges.append(Hyperedge(str(a), str(b), idx, idx, pa, pb))
        nbytes += len(_encode("", [e.b for e in edges], edges, str(a)))
        for e in edges:
            g.add_edge(e)
    return nbytes


def synthetic_graph(n: int, k: int, inliers: int, seed: int) -> tuple[Any, float, float]:
    """A random sparse hypergraph: each node verified against ``k`` random others,
    each edge ``inliers`` correspondences in a random box. Returns the graph, the
    build seconds (hyperedges made, serialised as they are stored, added) and the
    serialised bytes."""
    import numpy as np

    from consist_topological.hypergraph import MatchingHypergraph, gc_paused

    rng = np.random.default_rng(seed)
    g = MatchingHypergraph()
    t0 = time.perf_counter()
    with gc_paused():  # as MatchingHypergraph.build does while loading
        nbytes = _fill(g, n, k, inliers, rng)
    return g, time.perf_counter() - t0, nbytes


def bench_scaling(args: argparse.Namespace) -> dict[str, Any]:
    from consist_topological.propagation import propagate

    rows = []
    for n in args.scales:
        log(f"scaling: {n:,} nodes, k={args.synthetic_k}", args.quiet)
        g, build_s, nbytes = synthetic_graph(n, args.synthetic_k, 20, args.seed)
        t0 = time.perf_counter()
        g.pack_all()  # what loading a cached graph does
        build_s += time.perf_counter() - t0
        rng = random.Random(args.seed)
        seeds = [str(rng.randrange(n)) for _ in range(args.queries)]
        times, reached = [], []
        for s in seeds:
            t0 = time.perf_counter()
            p = propagate(g, {s: None})
            times.append(time.perf_counter() - t0)
            reached.append(len(p))
        rows.append(
            {
                "nodes": n,
                "k": args.synthetic_k,
                "edges": g.n_edges,
                "build_s": build_s,
                "build_us_per_nk": 1e6 * build_s / (n * args.synthetic_k),
                "stored_bytes_per_node": nbytes / n,
                "propagation_ms_mean": 1e3 * statistics.fmean(times),
                "propagation_ms_p95": 1e3 * sorted(times)[int(0.95 * (len(times) - 1))],
                "reached_mean": statistics.fmean(reached),
            }
        )
        del g
    return {"rows": rows}


# -------------------------------------------------------------------- report


def report(result: dict[str, Any], targets: list[C.Target]) -> None:
    C.print_machine(result["machine"])
    if "retrieval" in result:
        rows = []
        for name, block in result["retrieval"].items():
            for m, res in block["results"].items():
                rows.append((f"{name} [{m}]", res["map"], res["mp_at_k"].get(1, math.nan), res["mp_at_k"].get(5, math.nan), res["queries"]))
        C.print_table("1. retrieval mAP, leave-one-out (asmk / + spatial re-rank / + HP / + CS)", ("dataset [method]", "mAP", "mP@1", "mP@5", "queries"), rows)
        rows = [
            (
                name,
                b["graph"]["nodes"],
                b["graph"]["edges"],
                b["graph"]["mean_degree"],
                b["graph"]["isolated"],
                b["graph"]["k"],
                b["timings"]["propagation_ms_mean"],
                b["graph"]["hyperedge_bytes_per_image"] / 1024,
                b["graph_memory_bytes_per_image"] / 1024,
            )
            for name, b in result["retrieval"].items()
        ]
        C.print_table("   matching graphs", ("dataset", "images", "hyperedges", "mean degree", "isolated", "k", "HP ms/query", "hyperedge KiB/img", "loaded KiB/img"), rows)
    if "tr" in result:
        rows = [
            (name, b["n_pos"], b["n_neg"], b["auc_tr"], b["auc_homography_inliers"], b["median_tr_pos"], b["median_tr_neg"], b["tr_ms_mean"], b["homography_ms_mean"])
            for name, b in result["tr"].items()
        ]
        C.print_table(
            "2. verification ROC-AUC: topological RANSAC vs homography inliers (DEGENSAC)", ("pairs", "pos", "neg", "AUC TR", "AUC H inliers", "TR med pos", "TR med neg", "TR ms", "H ms"), rows
        )
    if "build" in result:
        b = result["build"]
        C.print_table(
            "3. graph build (fresh)",
            ("dataset", "images", "k", "verified pairs", "s/image", "ms/pair", "hyperedges"),
            [(b["dataset"], b["images"], b["k"], b["verified_pairs"], b["build_s_per_image"], b["ms_per_pair"], b["edges"])],
        )
    if "scaling" in result:
        rows = [
            (r["nodes"], r["k"], r["edges"], r["build_s"], r["build_us_per_nk"], r["stored_bytes_per_node"], r["propagation_ms_mean"], r["propagation_ms_p95"], r["reached_mean"])
            for r in result["scaling"]["rows"]
        ]
        C.print_table(
            "4. scaling on random sparse hypergraphs (20 inliers per edge)", ("nodes", "k", "edges", "build s", "build us/(N*k)", "stored B/node", "HP ms mean", "HP ms p95", "reached"), rows
        )
    C.print_targets(targets)


def build_targets(result: dict[str, Any]) -> list[C.Target]:
    targets = []
    for name, block in result.get("retrieval", {}).items():
        r = block["results"]
        if "hp" in r and "spatial" in r:
            targets.append(C.Target(f"{name}: HP mAP - spatial re-rank mAP", 100 * (r["hp"]["map"] - r["spatial"]["map"]), ">", HP_MARGIN, "points"))
        targets.append(C.Target(f"{name}: propagation per query (cached graph)", block["timings"]["propagation_ms_mean"], "<", PROPAGATION_MS, "ms"))
    for name, b in result.get("tr", {}).items():
        targets.append(C.Target(f"{name}: TR ROC-AUC", b["auc_tr"], ">", 0.80, "", required=False))
    rows = result.get("scaling", {}).get("rows", [])
    if len(rows) >= 2:
        ratio = rows[-1]["build_us_per_nk"] / rows[0]["build_us_per_nk"]
        targets.append(C.Target(f"build cost per N*k, {rows[-1]['nodes']:,} vs {rows[0]['nodes']:,} nodes (1 = linear)", ratio, "<", 2.0, "x"))
        targets.append(C.Target(f"propagation at {rows[-1]['nodes']:,} nodes", rows[-1]["propagation_ms_mean"], "<", PROPAGATION_MS, "ms", required=False))
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="the shared data folder (default $CONSIST_SHARED_DATA or ../shared/data)")
    ap.add_argument("--cache", default=None, help="store cache folder (default <tmp>/consist-bench-topological; reused across runs)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: retrieval,tr,build,scaling")
    ap.add_argument("--k", type=int, default=200, help="neighbours verified per image in the matching graph (200, the paper's; capped by the dataset)")
    ap.add_argument("--scales", default="1000,10000,100000", help="node counts of the synthetic graphs (1000,10000,100000)")
    ap.add_argument("--synthetic-k", type=int, default=10, help="edges per node of the synthetic graphs (10)")
    ap.add_argument("--queries", type=int, default=200, help="propagations timed per synthetic graph (200)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the negative pairs and synthetic graphs (0)")
    ap.add_argument("--quick", action="store_true", help="smoke run: data subsets, scales 1k and 10k")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    ap.add_argument("--json-out", metavar="PATH", help="also write the JSON object to PATH")
    ap.add_argument("--strict", action="store_true", help="exit with status 1 when a required target is missed")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.scales = [int(s) for s in args.scales.split(",") if s.strip()]
    if args.quick:
        args.scales = [s for s in args.scales if s <= 10_000] or [1000]
        args.queries = min(args.queries, 50)
    cache = Path(args.cache) if args.cache else Path(tempfile.gettempdir()) / "consist-bench-topological"
    cache.mkdir(parents=True, exist_ok=True)
    import consist_topological

    result: dict[str, Any] = {"machine": C.machine_info({"consist_topological": consist_topological.__version__, "cache": str(cache), "k": args.k}), "quick": args.quick}
    t_start = time.perf_counter()
    needs_data = bool({"retrieval", "tr", "build"} - skip)
    root = D.data_root(args.data)
    if needs_data and root is None:
        print("bench_topological: the shared data folder was not found (give --data or set $CONSIST_SHARED_DATA, or --skip retrieval,tr,build)", file=sys.stderr)
        return 2
    if root is not None and needs_data:
        landmark, ukbench, wxbs = D.landmark_items(root), D.ukbench_items(root), D.wxbs_pairs(root)
        if args.quick:
            keep = {"sacre_coeur", "reichstag", "st_pauls_cathedral", "tower_bridge_london"}
            landmark = [it for it in landmark if it.label in keep]
            ukbench = [it for it in ukbench if it.label in ("object00", "object01", "object02", "object03")]
            wxbs = wxbs[::8][:4]
        suffix = "-quick" if args.quick else ""
        datasets = {"landmark-multiview" + suffix: landmark, "ukbench-subset" + suffix: ukbench}
        if "retrieval" not in skip:
            with C.progress("retrieval", args.quiet):
                result["retrieval"] = bench_retrieval(datasets, cache, args)
        if "tr" not in skip:
            with C.progress("TR ROC-AUC", args.quiet):
                result["tr"] = bench_tr(datasets, wxbs, cache, args)
        if "build" not in skip:
            with C.progress("graph build", args.quiet):
                name = "ukbench-subset" + suffix
                result["build"] = bench_build(datasets[name], cache, name, args)
    if "scaling" not in skip:
        with C.progress("scaling", args.quiet):
            result["scaling"] = bench_scaling(args)
    result["machine"]["loadavg_at_end"] = C.loadavg()
    result["machine"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    targets = build_targets(result)
    return C.finish(result, targets, args, lambda: report(result, targets))


if __name__ == "__main__":
    sys.exit(main())
