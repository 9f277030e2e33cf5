"""Spatial plugin: speed and accuracy of local features + matching + geometric verification.

Four parts, each per *pipeline* (an extractor with a matcher, as the spatial checker's
``extractor`` / ``matcher`` options select them: ``sift+nn`` is the default):

1. **speed** (one core by default, ``--threads``): feature extraction (images/s at
   ``max_side`` 1024, from decoded pixels; decoding is timed separately) and
   verification of pairs from cached features (matching + RANSAC, pairs/s), on
   landmark photos whose long side is >= 1024 px (so the working size really is 1024),
   half same-landmark and half cross-landmark pairs. Targets for the SIFT default:
   >= 12 images/s, >= 60 pairs/s.
2. **verification ROC-AUC**: positives = every same-instance pair, negatives = as many
   cross-instance pairs drawn with a fixed seed, on landmark-multiview (without the
   ambiguous ``alamo_plaza_1dsfm``), ukbench-subset, and wxbs-v1.1 (its 33 complete
   pairs vs cross-pair negatives between different scenes). Scores (see
   ``docs/spatial.md``): ``score`` = the checker's pair score (``Verification.score``:
   ``sqrt((1 + inliers) * (1 + consistent)) - 1``, whether or not the pair verified);
   ``support`` = what the SpatialChecker's vote would carry,
   ``SpatialChecker.support_for(inliers)`` if the pair verifies else 0 (a monotone
   function of the verified inlier count); ``inliers`` = distinct inliers of the
   fitted model whether or not it was accepted (0 if none was fitted);
   ``consistent`` = matches agreeing on one scale/orientation change;
   ``matches`` = tentative matches. AUC by the Mann-Whitney U statistic with mid-ranks
   for ties (a tie counts 1/2), 95% bootstrap interval (2000 resamples, seed 0).
3. **homography accuracy** on homography-pairs (Oxford graf 1-2..1-6, 15 EVD pairs):
   mean distance between image 1's corners projected by the estimated and by the
   ground-truth homography (image-2 pixels), share of pairs verified with an error
   < 5 px, and every failing pair by name.
4. **retrieval mAP**, leave-one-out over landmark-multiview and ukbench-subset
   (revisitop AP from ``consist.metrics``; positives = the other images of the label):
   (a) the core's weight-free ``tiny`` embedder + exact vector search (``store.search``
   through the ``vector`` retriever), (b) ASMK over each extractor's cached features
   (``consist_spatial.asmk``; codebook trained on the evaluated images), (c) (b)
   (and with ``--rerank-on tiny``, (a)) re-ranked by spatial verification of the
   top ``--rerank-depth``: verified first by pair score, then the rest in retrieval order
   (the rule of ``consist_spatial.spatial_rerank``).

Features are cached per extractor in one SQLite store per dataset under ``--cache``
(default: ``$TMPDIR/consist-bench-spatial``), and each verified pair in a JSON-lines
file keyed by the pipeline's options and a digest of the plugin's matching and
verification code: a second run reuses both, so only what changed is recomputed.
A pair is verified once, with the image earlier in the dataset's order as the query;
the retrieval re-ranking reuses that result for both directions.

Run: ``python benchmarks/bench_spatial.py`` (``--quick`` for a < 60 s smoke run with
SIFT on subsets, ``--extractors sift,aliked-n16,disk,xfeat``, ``--json``, ``--help``).
Needs ../shared/data (or ``--data`` / ``$CONSIST_SHARED_DATA``).
"""

from __future__ import annotations

import os
import sys


def _early_threads(argv: list[str]) -> int:
    """``--threads N`` read before numpy/cv2/torch load: BLAS and OpenMP read their
    thread variables once, when they are first imported."""
    for i, a in enumerate(argv):
        try:
            if a == "--threads" and i + 1 < len(argv):
                return max(1, int(argv[i + 1]))
            if a.startswith("--threads="):
                return max(1, int(a.split("=", 1)[1]))
        except ValueError:
            return 1  # argparse reports the bad value
    return 1


THREADS = _early_threads(sys.argv[1:])
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse
import hashlib
import json
import math
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as C
import cv2
import numpy as np

cv2.setNumThreads(THREADS)

import _spatial_data as D

from consist.images import load_gray, load_image
from consist.metrics import evaluate_query
from consist.records import Query, Sample
from consist_spatial.checker import SpatialChecker, SpatialConfig
from consist_spatial.features import LocalFeatures, features_for
from consist_spatial.verify import pair_score, verify_pair

ALL_EXTRACTORS = ("sift", "aliked-n16", "disk", "xfeat")
SIFT_IMAGES_PER_S = 12.0
SIFT_PAIRS_PER_S = 60.0
#: the target the issue sets on its hidden hard landmark set; printed for reference only
HARD_SET_AUC = 0.80


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- pipelines


@dataclass(frozen=True)
class Pipeline:
    extractor: str
    matcher: str

    @property
    def name(self) -> str:
        return f"{self.extractor}+{self.matcher}"

    def config(self) -> SpatialConfig:
        """The checker's options for this pipeline; everything else at its default."""
        return SpatialConfig(extractor=self.extractor, matcher=self.matcher)


def select_pipelines(extractors: Sequence[str], matchers: str) -> tuple[list[Pipeline], list[str]]:
    """The pipelines to run and one note per skipped extractor/matcher."""
    notes: list[str] = []
    try:
        from consist_spatial import availability as A
        from consist_spatial import extractors as E
        from consist_spatial import matchers as M
    except Exception as exc:
        A = E = M = None  # type: ignore[assignment]
        notes.append(f"consist_spatial extractors/matchers not importable ({type(exc).__name__}: {exc}): only sift runs")
    out: list[Pipeline] = []
    for ext in extractors:
        if ext != "sift" and (E is None or ext not in E.EXTRACTORS):
            notes.append(f"{ext}: not available yet (no such extractor in consist_spatial.extractors): skipped")
            continue
        wanted: list[str]
        learned_lg = M is not None and ext in M.LIGHTGLUE_FEATURES
        if matchers == "default":
            wanted = ["lightglue"] if learned_lg else ["nn"]
        elif matchers == "all":
            wanted = ["nn"] + (["lightglue"] if learned_lg else [])
        else:
            wanted = [matchers]
        for m in wanted:
            if ext == "sift" and m == "nn":
                out.append(Pipeline(ext, m))
                continue
            if m == "lightglue" and not learned_lg:
                notes.append(f"{ext}+lightglue: no LightGlue weights for {ext}: skipped")
                continue
            try:
                A.check_available(ext, m)  # type: ignore[union-attr]
                Pipeline(ext, m).config()
            except Exception as exc:
                notes.append(f"{ext}+{m}: not available ({type(exc).__name__}: {exc}): skipped")
                continue
            out.append(Pipeline(ext, m))
    return out, notes


def _set_torch_threads(pipelines: Sequence[Pipeline]) -> str | None:
    if all(p.extractor == "sift" and p.matcher == "nn" for p in pipelines):
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(THREADS)
    except RuntimeError:
        pass
    return torch.__version__


#: what decides a verification's outcome, by module: a change to any of these (and only
#: to these) makes the pair cache recompute (other edits of the plugin leave it valid)
_OUTCOME_CODE = {
    "consist_spatial.matching": ("match_descriptors", "_sq_dists", "LOWE_RATIO"),
    "consist_spatial.verify": (
        "verify_pair",
        "_fit",
        "_quad_problem",
        "_distinct",
        "_hull",
        "_to_work",
        "_bounds_quad",
        "_region_vertices",
        "_image_box",
        "project_points",
        "consistent_matches",
        "pair_score",
        "DEFAULT_THRESHOLDS",
        "MIN_POINTS",
        "HOUGH_SCALE_BIN",
        "HOUGH_ANGLE_BIN",
    ),
    "consist_spatial.features": ("SiftExtractor", "rootsift", "resize_long_side", "to_gray"),
}
#: the same for the learned extractors and matchers (module -> names), added when either
#: the extractor or the matcher is one of them
_LEARNED_CODE = {
    "consist_spatial.extractors.base": ("rgb_tensor",),
    "consist_spatial.extractors.models": ("load_extractor_model",),
    "consist_spatial.torch_models": ("load_exactly", "load_checkpoint"),
    "consist_spatial.matchers.lightglue": ("load_lightglue", "_lightglue_state"),
    "consist_spatial.matchers.base": ("sorted_by_query",),
}
_LEARNED_MODULES = ("consist_spatial.extractors.", "consist_spatial.matchers.")


def _code_digest(extractor: Any, matcher: Any) -> str:
    """Digest of the source of the functions and classes a verification's outcome
    depends on (matching, model fitting and checks, this extractor and matcher)."""
    import importlib
    import inspect

    parts: list[str] = []

    def add(obj: Any, name: str) -> None:
        try:
            parts.append(inspect.getsource(obj))
        except (TypeError, OSError):
            parts.append(f"{name}={obj!r}")

    for mod_name, names in _OUTCOME_CODE.items():
        mod = importlib.import_module(mod_name)
        for n in names:
            add(getattr(mod, n, None), n)
    for obj in (extractor, matcher):
        for cls in type(obj).__mro__:
            if cls.__module__.startswith("consist_spatial"):
                add(cls, cls.__name__)
    if any(type(o).__module__.startswith(_LEARNED_MODULES) for o in (extractor, matcher)):
        for mod_name, names in _LEARNED_CODE.items():
            mod = importlib.import_module(mod_name)
            for n in names:
                add(getattr(mod, n, None), n)
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=6).hexdigest()


# ------------------------------------------------------------ pair verification


class PairRunner:
    """Verifies image pairs of one dataset with one pipeline, exactly as
    :meth:`SpatialChecker.verify` does (the configured matcher, then
    :func:`verify_pair` with the checker's options), from features cached in the
    dataset's store; results are memoised in a JSON-lines file."""

    def __init__(self, pipeline: Pipeline, store: Any, cache_dir: Path, dataset: str, *, quiet: bool = False) -> None:
        self.pipeline = pipeline
        self.cfg = pipeline.config()
        self.store = store
        self.extractor = self.cfg.feature_extractor
        self.matcher = self.cfg.feature_matcher
        self.quiet = quiet
        self._feats: dict[str, LocalFeatures] = {}
        self.extract_seconds: list[float] = []
        self.path = cache_dir / pair_cache_name(pipeline, self.cfg, self.extractor, self.matcher, dataset)
        self._done: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by an interrupted run
                    self._done[(rec["q"], rec["d"])] = rec
        self.reused = 0
        self.computed = 0

    def features(self, item: D.Item) -> LocalFeatures:
        f = self._feats.get(item.id)
        if f is None:
            t0 = time.perf_counter()
            f = features_for(Sample(item.id, uri=item.path, label=item.label), self.store, self.extractor)
            dt = time.perf_counter() - t0
            if dt > 0.02:  # not a cache hit: an extraction (decode included)
                self.extract_seconds.append(dt)
            self._feats[item.id] = f
        return f

    def verify(self, q: D.Item, d: D.Item) -> dict[str, Any]:
        rec = self._done.get((q.id, d.id))
        if rec is not None:
            self.reused += 1
            return rec
        f1, f2 = self.features(q), self.features(d)
        cfg = self.cfg
        c0 = time.process_time()
        t0 = time.perf_counter()
        matches = self.matcher.match(f1, f2)
        t1 = time.perf_counter()
        v = verify_pair(
            f1, f2, matches, model=cfg.model, estimator=cfg.estimator, threshold=cfg.threshold, max_iters=cfg.max_iters, seed=cfg.seed,
            min_inliers=cfg.min_inliers, min_area_fraction=cfg.min_area_fraction, max_scale_change=cfg.max_scale_change,
        )  # fmt: skip
        t2 = time.perf_counter()
        rec = {
            "q": q.id,
            "d": d.id,
            "verified": bool(v.verified),
            "inliers": int(v.inliers),
            "matches": int(v.matches),
            "consistent": int(v.consistent),
            "reason": v.reason,
            "coverage": round(float(v.coverage), 4),
            "scale": None if v.scale_change is None else round(float(v.scale_change), 4),
            "H": None if v.H is None else [list(r) for r in v.H],
            "n1": len(f1),
            "n2": len(f2),
            "t_match": round(t1 - t0, 5),
            "t_ransac": round(t2 - t1, 5),
            "t_cpu": round(time.process_time() - c0, 5),
        }
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        self._done[(q.id, d.id)] = rec
        self.computed += 1
        return rec

    def verify_many(self, pairs: Sequence[tuple[D.Item, D.Item]], what: str) -> list[dict[str, Any]]:
        out = []
        t0 = time.perf_counter()
        last = t0
        for n, (q, d) in enumerate(pairs, 1):
            out.append(self.verify(q, d))
            now = time.perf_counter()
            if now - last > 30:
                last = now
                log(f"{self.pipeline.name} {what}: {n}/{len(pairs)} pairs ({now - t0:.0f} s)", self.quiet)
        return out

    @staticmethod
    def score(rec: dict[str, Any]) -> float:
        """The checker's pair score (:attr:`Verification.score`): inliers and
        scale/orientation-consistent matches fused, whether or not the pair verified."""
        return pair_score(rec["inliers"], rec.get("consistent", 0))

    def support(self, rec: dict[str, Any]) -> float:
        """The support of the checker's vote for the neighbour's label: a function of the
        verified inlier count; 0 when the pair does not verify (no positive vote)."""
        return SpatialChecker.support_for(rec["inliers"], self.cfg) if rec["verified"] else 0.0

    def evidence(self, rec: dict[str, Any]) -> float:
        """The log-odds the vote adds to its label in the default aggregation (checker
        weight 1): ``confidence * logit(support)``, where the confidence also counts how
        widely the inliers spread over the query; 0 when the pair does not verify."""
        if not rec["verified"]:
            return 0.0
        from consist.aggregate import logit

        return SpatialChecker.confidence_for(rec["inliers"], rec["coverage"], self.cfg) * logit(self.support(rec))


def pair_cache_name(pipeline: Pipeline, cfg: SpatialConfig, extractor: Any, matcher: Any, dataset: str) -> str:
    """The pair cache file of a pipeline on a dataset: named by a digest of everything a
    verification's outcome depends on (the extractor's cache kind, the checker's
    matching and fitting options, the deciding code)."""
    options = {k: v for k, v in sorted(vars_cfg(cfg).items()) if k not in VOTE_OPTIONS}
    key = json.dumps({"kind": extractor.kind, "options": options, "code": _code_digest(extractor, matcher)}, sort_keys=True, default=str)
    return f"pairs-{dataset}-{pipeline.name}-{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}.jsonl"


VOTE_OPTIONS = {"min_support", "max_support", "support_scale", "spread_full", "reject_support", "reject_confidence", "k", "cache_queries", "min_in_region"}


def vars_cfg(cfg: SpatialConfig) -> dict[str, Any]:
    import attrs

    return attrs.asdict(cfg)


# ----------------------------------------------------------------------- AUC


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def roc_auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(tie): the Mann-Whitney U
    statistic over ``n_pos * n_neg``, from mid-ranks (no sklearn)."""
    p = np.asarray(pos, dtype=np.float64)
    n = np.asarray(neg, dtype=np.float64)
    if len(p) == 0 or len(n) == 0:
        return math.nan
    ranks = midranks(np.concatenate([p, n]))
    u = ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2.0
    return float(u / (len(p) * len(n)))


def auc_interval(pos: Sequence[float], neg: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval (positives and negatives resampled separately)."""
    p = np.asarray(pos, dtype=np.float64)
    n = np.asarray(neg, dtype=np.float64)
    if len(p) < 2 or len(n) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    vals = [roc_auc(p[rng.integers(0, len(p), len(p))], n[rng.integers(0, len(n), len(n))]) for _ in range(n_boot)]
    return (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5)))


# ---------------------------------------------------------------------- data


@dataclass
class Datasets:
    root: Path
    landmark: list[D.Item]
    ukbench: list[D.Item]
    homography: list[D.HomographyPair]
    wxbs: list[D.WxbsPair]


def load_datasets(root: Path, quick: bool) -> Datasets:
    landmark = D.landmark_items(root)
    ukbench = D.ukbench_items(root)
    homography = D.homography_pairs(root)
    wxbs = D.wxbs_pairs(root)
    if quick:
        keep: dict[str, int] = Counter()
        sub = []
        for it in landmark:
            if it.label in ("sacre_coeur", "reichstag", "st_pauls_cathedral", "tower_bridge_london") and keep[it.label] < 3:
                keep[it.label] += 1
                sub.append(it)
        landmark = sub
        ukbench = [it for it in ukbench if it.label in ("object00", "object01", "object02", "object03")]
        homography = [p for p in homography if p.name in ("oxford_graf/1-2", "oxford_graf/1-4", "evd/adam", "evd/graf")]
        wxbs = wxbs[::8][:4]
    return Datasets(root, landmark, ukbench, homography, wxbs)


def open_store(cache: Path, name: str, items: Sequence[D.Item], embeddings: dict[str, np.ndarray] | None = None) -> Any:
    return D.open_dataset_store(cache / f"{name}.sqlite", items, embeddings)


# --------------------------------------------------------------------- speed


def speed_images(landmark: Sequence[D.Item], n_images: int) -> list[D.Item]:
    """Two photos (long side >= 1024 px) from each of as many landmarks as needed."""
    by_label: dict[str, list[D.Item]] = defaultdict(list)
    for it in landmark:
        if it.size and max(it.size) >= 1024:
            by_label[it.label].append(it)
    out: list[D.Item] = []
    for label in sorted(by_label, key=lambda lb: (-len(by_label[lb]), lb)):
        if len(by_label[label]) >= 2 and len(out) + 2 <= n_images:
            out.extend(by_label[label][:2])
    return out


def bench_speed(pipelines: Sequence[Pipeline], data: Datasets, args: argparse.Namespace) -> dict[str, Any]:
    items = speed_images(data.landmark, args.speed_images)
    decode_s, decoded = [], []
    for it in items:
        t0 = time.perf_counter()
        decoded.append(load_image(it.path))
        decode_s.append(time.perf_counter() - t0)
    out: dict[str, Any] = {
        "images": [it.id for it in items],
        "image_sizes": [list(it.size or ()) for it in items],
        "decode_ms_mean": 1e3 * statistics.fmean(decode_s),
        "extract": [],
        "verify": [],
    }
    feats_by_ext: dict[str, list[LocalFeatures]] = {}
    for ext in dict.fromkeys(p.extractor for p in pipelines):
        n = len(items) if ext == "sift" else min(len(items), args.speed_images_learned)
        extractor = SpatialConfig(extractor=ext).feature_extractor
        log(f"speed: extracting {ext} on {n} images x {args.repeat}", args.quiet)
        extractor.extract(decoded[0])  # warm-up: model load, first-call allocations
        grey = hasattr(extractor, "extract_gray")  # what features_for does: decode straight to grey
        ext_decode_s = decode_s[:n]
        inputs: list[Any] = decoded[:n]
        if grey:
            ext_decode_s, inputs = [], []
            for it in items[:n]:
                t0 = time.perf_counter()
                inputs.append(load_gray(it.path, max_side=extractor.max_side))
                ext_decode_s.append(time.perf_counter() - t0)
        times: list[float] = []
        cpu: list[float] = []
        feats: list[LocalFeatures] = []
        for r in range(args.repeat if ext == "sift" else 1):
            for img in inputs:
                t0, c0 = time.perf_counter(), time.process_time()
                f = extractor.extract_gray(*img) if grey else extractor.extract(img)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                if r == 0:
                    feats.append(f)
        feats_by_ext[ext] = feats
        mean = statistics.fmean(times)
        out["extract"].append(
            {
                "extractor": ext,
                "kind": extractor.kind,
                "images": n,
                "calls": len(times),
                "mean_ms": 1e3 * mean,
                "median_ms": 1e3 * statistics.median(times),
                "images_per_s": 1.0 / mean,
                "cpu_ms": 1e3 * statistics.fmean(cpu),
                "images_per_cpu_s": 1.0 / statistics.fmean(cpu),
                "decode_ms": 1e3 * statistics.fmean(ext_decode_s),
                "decode": "grey, JPEG DCT-reduced" if grey else "RGB",
                "images_per_s_with_decode": 1.0 / (mean + statistics.fmean(ext_decode_s)),
                "keypoints_mean": statistics.fmean(len(f) for f in feats),
                "working_size": list(feats[0].working_size) if feats else None,
            }
        )
    for p in pipelines:
        feats = feats_by_ext[p.extractor]
        cfg = p.config()
        matcher = cfg.feature_matcher
        same = [(i, i + 1) for i in range(0, len(feats) - 1, 2)]
        cross = [(i, j) for i in range(len(feats)) for j in range(i + 1, len(feats)) if j != i + 1 or i % 2]
        random.Random(0).shuffle(cross)
        cap = args.speed_pairs if (p.extractor == "sift" and p.matcher == "nn") else args.speed_pairs_learned
        pairs = [("same", ij) for ij in same[: max(1, cap // 2)]] + [("cross", ij) for ij in cross[: max(1, cap // 2)]]
        verify_pair(feats[0], feats[1], matcher.match(feats[0], feats[1]), model=cfg.model, estimator=cfg.estimator)  # warm-up: LightGlue load, lazy imports
        rows = []
        for kind, (i, j) in pairs:
            for _ in range(args.repeat if cap == args.speed_pairs else 1):
                c0 = time.process_time()
                t0 = time.perf_counter()
                m = matcher.match(feats[i], feats[j])
                t1 = time.perf_counter()
                v = verify_pair(
                    feats[i], feats[j], m, model=cfg.model, estimator=cfg.estimator, threshold=cfg.threshold, max_iters=cfg.max_iters,
                    seed=cfg.seed, min_inliers=cfg.min_inliers, min_area_fraction=cfg.min_area_fraction, max_scale_change=cfg.max_scale_change,
                )  # fmt: skip
                t2 = time.perf_counter()
                rows.append((kind, t1 - t0, t2 - t1, len(m), v.verified, v.inliers, time.process_time() - c0))
        log(f"speed: {p.name} on {len(pairs)} pairs", args.quiet)

        def stats(sel: list[tuple[Any, ...]]) -> dict[str, Any]:
            if not sel:
                return {}
            tot = [r[1] + r[2] for r in sel]
            return {
                "pairs": len(sel),
                "match_ms": 1e3 * statistics.fmean(r[1] for r in sel),
                "ransac_ms": 1e3 * statistics.fmean(r[2] for r in sel),
                "mean_ms": 1e3 * statistics.fmean(tot),
                "p95_ms": 1e3 * float(np.percentile(tot, 95)),
                "pairs_per_s": 1.0 / statistics.fmean(tot),
                "cpu_ms": 1e3 * statistics.fmean(r[6] for r in sel),
                "pairs_per_cpu_s": 1.0 / statistics.fmean(r[6] for r in sel),
                "matches_mean": statistics.fmean(r[3] for r in sel),
                "verified": sum(1 for r in sel if r[4]),
            }

        out["verify"].append(
            {
                "pipeline": p.name,
                "keypoints_mean": statistics.fmean(len(f) for f in feats),
                "all": stats(rows),
                "same": stats([r for r in rows if r[0] == "same"]),
                "cross": stats([r for r in rows if r[0] == "cross"]),
            }
        )
    return out


# ----------------------------------------------------------------------- AUC


def _auc_block(runner: PairRunner, pos: list[dict[str, Any]], neg: list[dict[str, Any]]) -> dict[str, Any]:
    s_pos = [runner.support(r) for r in pos]
    s_neg = [runner.support(r) for r in neg]
    lo, hi = auc_interval(s_pos, s_neg)
    times = [r["t_match"] + r["t_ransac"] for r in pos + neg]
    cpu = [r["t_cpu"] for r in pos + neg if "t_cpu" in r]
    return {
        "pipeline": runner.pipeline.name,
        "n_pos": len(pos),
        "n_neg": len(neg),
        "auc_score": roc_auc([runner.score(r) for r in pos], [runner.score(r) for r in neg]),
        "auc_score_ci": list(auc_interval([runner.score(r) for r in pos], [runner.score(r) for r in neg])),
        "auc_consistent": roc_auc([r.get("consistent", 0) for r in pos], [r.get("consistent", 0) for r in neg]),
        "auc_support": roc_auc(s_pos, s_neg),
        "auc_support_ci": [lo, hi],
        "auc_evidence": roc_auc([runner.evidence(r) for r in pos], [runner.evidence(r) for r in neg]),
        "auc_inliers": roc_auc([r["inliers"] for r in pos], [r["inliers"] for r in neg]),
        "auc_matches": roc_auc([r["matches"] for r in pos], [r["matches"] for r in neg]),
        "verified_pos": sum(r["verified"] for r in pos) / max(1, len(pos)),
        "verified_neg": sum(r["verified"] for r in neg) / max(1, len(neg)),
        "median_inliers_pos": statistics.median(r["inliers"] for r in pos) if pos else math.nan,
        "median_inliers_neg": statistics.median(r["inliers"] for r in neg) if neg else math.nan,
        "pair_ms_mean": 1e3 * statistics.fmean(times) if times else math.nan,
        "pair_cpu_ms_mean": 1e3 * statistics.fmean(cpu) if cpu else math.nan,
        "false_negatives": [{"q": r["q"], "d": r["d"], "inliers": r["inliers"], "matches": r["matches"], "reason": r["reason"]} for r in pos if not r["verified"]],
        "false_positives": [{"q": r["q"], "d": r["d"], "inliers": r["inliers"], "matches": r["matches"], "coverage": r["coverage"]} for r in neg if r["verified"]],
    }


def bench_auc(pipelines: Sequence[Pipeline], data: Datasets, cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, items in (("landmark-multiview", data.landmark), ("ukbench-subset", data.ukbench)):
        store = open_store(cache, name, items)
        pos_ij = D.positive_pairs(items)
        neg_ij = D.negative_pairs(items, None if args.negatives == "all" else len(pos_ij), seed=args.seed)
        out[name] = {"images": len(items), "labels": len({it.label for it in items}), "pipelines": []}
        for p in pipelines:
            runner = PairRunner(p, store, cache, name, quiet=args.quiet)
            log(f"AUC {name}: {p.name}: {len(pos_ij)} positive + {len(neg_ij)} negative pairs", args.quiet)
            pos = runner.verify_many([(items[i], items[j]) for i, j in pos_ij], f"{name} positives")
            neg = runner.verify_many([(items[i], items[j]) for i, j in neg_ij], f"{name} negatives")
            block = _auc_block(runner, pos, neg)
            labels = {it.id: it.label for it in items}
            fn_by_label = Counter(labels[r["q"]] for r in block["false_negatives"])
            pos_by_label = Counter(labels[r["q"]] for r in pos)
            block["verified_by_label"] = {lb: f"{pos_by_label[lb] - fn_by_label[lb]}/{pos_by_label[lb]}" for lb in sorted(pos_by_label)}
            block["cache"] = {"reused": runner.reused, "computed": runner.computed, "file": str(runner.path)}
            out[name]["pipelines"].append(block)
        store.close()
    if data.wxbs:
        items = sorted({it.id: it for p in data.wxbs for it in (p.img1, p.img2)}.values(), key=lambda it: it.id)
        store = open_store(cache, "wxbs-v1.1", items)
        rng = random.Random(args.seed)
        cross = [(a, b) for a in data.wxbs for b in data.wxbs if D.wxbs_scene(a.name) != D.wxbs_scene(b.name)]
        negs = cross if args.negatives == "all" else sorted(rng.sample(cross, min(len(cross), len(data.wxbs))), key=lambda ab: (ab[0].name, ab[1].name))
        out["wxbs-v1.1"] = {"images": len(items), "pairs": len(data.wxbs), "pipelines": []}
        for p in pipelines:
            runner = PairRunner(p, store, cache, "wxbs-v1.1", quiet=args.quiet)
            log(f"AUC wxbs-v1.1: {p.name}: {len(data.wxbs)} positive + {len(negs)} negative pairs", args.quiet)
            pos = runner.verify_many([(w.img1, w.img2) for w in data.wxbs], "wxbs positives")
            neg = runner.verify_many([(a.img1, b.img2) for a, b in negs], "wxbs negatives")
            block = _auc_block(runner, pos, neg)
            block["cache"] = {"reused": runner.reused, "computed": runner.computed, "file": str(runner.path)}
            out["wxbs-v1.1"]["pipelines"].append(block)
        store.close()
    return out


# ---------------------------------------------------------------- homography


def corner_error(H_est: np.ndarray, H_gt: np.ndarray, size: tuple[int, int]) -> float:
    """Mean distance (image-2 pixels) between image 1's four corners mapped by the
    estimated and by the ground-truth homography (inf if a corner maps to infinity)."""
    w, h = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], dtype=np.float64)

    def proj(H: np.ndarray) -> np.ndarray:
        p = corners @ np.asarray(H, dtype=np.float64).T
        with np.errstate(divide="ignore", invalid="ignore"):
            return p[:, :2] / p[:, 2:3]

    err = np.linalg.norm(proj(H_est) - proj(H_gt), axis=1)
    return float(err.mean()) if np.all(np.isfinite(err)) else math.inf


def bench_homography(pipelines: Sequence[Pipeline], data: Datasets, cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    items = sorted({it.id: it for p in data.homography for it in (p.img1, p.img2)}.values(), key=lambda it: it.id)
    store = open_store(cache, "homography-pairs", items)
    out: dict[str, Any] = {"pairs": [p.name for p in data.homography], "pipelines": []}
    for pl in pipelines:
        runner = PairRunner(pl, store, cache, "homography-pairs", quiet=args.quiet)
        rows = []
        for hp in data.homography:
            rec = runner.verify(hp.img1, hp.img2)
            err = math.inf if rec["H"] is None else corner_error(np.array(rec["H"]), hp.H, hp.img1.size)  # type: ignore[arg-type]
            rows.append({"pair": hp.name, "set": hp.set, "verified": rec["verified"], "inliers": rec["inliers"], "matches": rec["matches"], "corner_error": err, "reason": rec["reason"]})
        finite = [r["corner_error"] for r in rows if math.isfinite(r["corner_error"])]
        ok = [r for r in rows if r["verified"] and r["corner_error"] < args.corner_px]

        def share(sel: list[dict[str, Any]], set_: str | None = None) -> str:
            sub = [r for r in rows if set_ is None or r["set"] == set_]  # noqa: B023 -- share() is called only within this iteration
            good = [r for r in sel if set_ is None or r["set"] == set_]
            return f"{len(good)}/{len(sub)}"

        out["pipelines"].append(
            {
                "pipeline": pl.name,
                "rows": rows,
                "with_model": len(finite),
                "mean_corner_error_with_model": statistics.fmean(finite) if finite else math.nan,
                "median_corner_error": statistics.median([r["corner_error"] for r in rows]) if rows else math.nan,
                "share_under": len(ok) / max(1, len(rows)),
                "under": share(ok),
                "under_graf": share(ok, "oxford_graf"),
                "under_evd": share(ok, "evd"),
                "under_any_model": sum(1 for r in rows if r["corner_error"] < args.corner_px) / max(1, len(rows)),
                "failing": [r for r in rows if not (r["verified"] and r["corner_error"] < args.corner_px)],
            }
        )
    store.close()
    return out


# ----------------------------------------------------------------- retrieval


def tiny_embeddings(items: Sequence[D.Item]) -> dict[str, np.ndarray]:
    from consist.embedders import TinyImageEmbedder

    emb = TinyImageEmbedder()
    return {it.id: emb.embed(load_image(it.path)) for it in items}


def _map(rankings: dict[str, list[str]], items: Sequence[D.Item]) -> dict[str, Any]:
    index = {it.id: i for i, it in enumerate(items)}
    aps, p1, p5 = [], [], []
    for it in items:
        ranking = [index[s] for s in rankings[it.id]]
        positives = [index[o.id] for o in items if o.label == it.label and o.id != it.id]
        if not positives:
            continue
        r = evaluate_query(ranking, positives, ks=(1, 5))
        aps.append(r.ap)
        p1.append(r.precision_at_k[1])
        p5.append(r.precision_at_k[5])
    return {"mAP": statistics.fmean(aps), "mP@1": statistics.fmean(p1), "mP@5": statistics.fmean(p5), "queries": len(aps)}


def _rerank(ranking: list[str], q: D.Item, runner: PairRunner, by_id: dict[str, D.Item], order: dict[str, int], depth: int) -> list[str]:
    checked = []
    for rank, sid in enumerate(ranking[:depth]):
        a, b = (q, by_id[sid]) if order[q.id] < order[sid] else (by_id[sid], q)
        rec = runner.verify(a, b)
        checked.append((rank, sid, rec))
    verified = sorted((c for c in checked if c[2]["verified"]), key=lambda c: (-PairRunner.score(c[2]), c[0]))
    rest = [c for c in checked if not c[2]["verified"]]
    return [c[1] for c in verified + rest] + ranking[depth:]


def bench_retrieval(pipelines: Sequence[Pipeline], data: Datasets, cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    from consist.builtin.retrieval import VectorRetriever

    try:
        from consist_spatial.asmk import AsmkIndex, AsmkParams

        asmk_note = None
    except Exception as exc:
        AsmkIndex = AsmkParams = None  # type: ignore[assignment,misc]
        asmk_note = f"not available ({type(exc).__name__}: {exc})"
    out: dict[str, Any] = {"rerank_depth": args.rerank_depth, "asmk": asmk_note or "consist_spatial.asmk", "datasets": {}}
    for name, items in (("landmark-multiview", data.landmark), ("ukbench-subset", data.ukbench)):
        log(f"retrieval {name}: tiny embeddings", args.quiet)
        store = open_store(cache, name, items, tiny_embeddings(items))
        by_id = {it.id: it for it in items}
        order = {it.id: i for i, it in enumerate(items)}
        retriever = VectorRetriever()
        tiny: dict[str, list[str]] = {}
        for it in items:
            emb = store.get(it.id).embedding
            hits = retriever.retrieve(Query(it.id, uri=it.path, embedding=emb), store, len(items) - 1)
            tiny[it.id] = [n.sample.id for n in hits]
        rows: list[dict[str, Any]] = [{"method": "tiny + exact vector search", **_map(tiny, items)}]
        base_rankings: dict[str, dict[str, list[str]]] = {}
        for ext in dict.fromkeys(p.extractor for p in pipelines):
            if AsmkIndex is None:
                rows.append({"method": f"ASMK ({ext})", "note": asmk_note})
                continue
            try:
                runner0 = PairRunner(next(p for p in pipelines if p.extractor == ext), store, cache, name, quiet=args.quiet)
                samples = [Sample(it.id, uri=it.path, label=it.label) for it in items]
                for it in items:  # extract (or read) every image's features first
                    runner0.features(it)
                t0 = time.perf_counter()
                index = AsmkIndex.train(store, runner0.extractor, AsmkParams(seed=args.seed), samples=samples, save=False)
                t_train = time.perf_counter() - t0
                ranks: dict[str, list[str]] = {}
                t0 = time.perf_counter()
                for it in items:
                    hits = index.search(runner0.features(it).descriptors, None, exclude=(it.id,))
                    ranks[it.id] = [sid for sid, _ in hits]
                t_query = (time.perf_counter() - t0) / len(items)
            except Exception as exc:
                rows.append({"method": f"ASMK ({ext})", "note": f"failed: {type(exc).__name__}: {exc}"})
                continue
            base_rankings[f"ASMK ({ext})"] = ranks
            rows.append({"method": f"ASMK ({ext})", **_map(ranks, items), "words": index.size, "train_s": t_train, "query_ms": 1e3 * t_query})
        for p in pipelines:
            runner = PairRunner(p, store, cache, name, quiet=args.quiet)
            bases = []
            if "asmk" in args.rerank_on and f"ASMK ({p.extractor})" in base_rankings:
                bases.append((f"ASMK ({p.extractor})", base_rankings[f"ASMK ({p.extractor})"]))
            if "tiny" in args.rerank_on or (not bases and "asmk" in args.rerank_on):
                bases.append(("tiny", tiny))
            for base_name, base in bases:
                log(f"retrieval {name}: {base_name} + {p.name} re-ranking of the top {args.rerank_depth}", args.quiet)
                reranked = {it.id: _rerank(base[it.id], it, runner, by_id, order, args.rerank_depth) for it in items}
                rows.append({"method": f"{base_name} + {p.name} re-rank top-{args.rerank_depth}", **_map(reranked, items)})
        out["datasets"][name] = {"images": len(items), "rows": rows}
        store.close()
    return out


# --------------------------------------------------------------------- report


def _err(v: float) -> str:
    return "no H" if not math.isfinite(v) else f"{v:.0f} px"


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.0f}%"


def report(result: dict[str, Any], targets: list[C.Target], args: argparse.Namespace) -> None:
    C.print_machine(result["machine"])
    for note in result["notes"]:
        print(f"  note: {note}")
    sp = result.get("speed")
    if sp:
        rows = [
            (
                e["extractor"],
                e["images"],
                e["keypoints_mean"],
                f"{e['working_size'][0]}x{e['working_size'][1]}" if e["working_size"] else "-",
                e["median_ms"],
                e["mean_ms"],
                e["images_per_s"],
                e["cpu_ms"],
                e["images_per_cpu_s"],
                e["images_per_s_with_decode"],
            )
            for e in sp["extract"]
        ]
        C.print_table(
            f"1. extraction at max_side 1024, {THREADS} thread(s) (decode {sp['decode_ms_mean']:.0f} ms/image, not included)",
            ("extractor", "images", "keypoints", "working", "median ms", "mean ms", "images/s", "CPU ms", "images/CPU-s", "images/s incl. decode"),
            rows,
        )
        rows = []
        for v in sp["verify"]:
            for part in ("same", "cross", "all"):
                s = v[part]
                if s:
                    rows.append(
                        (
                            f"{v['pipeline']} [{part}]",
                            s["pairs"],
                            v["keypoints_mean"],
                            s["matches_mean"],
                            s["verified"],
                            s["match_ms"],
                            s["ransac_ms"],
                            s["mean_ms"],
                            s["p95_ms"],
                            s["pairs_per_s"],
                            s["cpu_ms"],
                            s["pairs_per_cpu_s"],
                        )
                    )
        C.print_table(
            f"1. verification from cached features (matching + RANSAC), {THREADS} thread(s)",
            ("pipeline [pairs]", "pairs", "keypoints", "matches", "verified", "match ms", "ransac ms", "mean ms", "p95 ms", "pairs/s", "CPU ms", "pairs/CPU-s"),
            rows,
        )
    auc = result.get("auc")
    if auc:
        for name, block in auc.items():
            rows = [
                (
                    b["pipeline"],
                    f"{b['n_pos']}/{b['n_neg']}",
                    b["auc_score"],
                    f"{b['auc_score_ci'][0]:.2f}-{b['auc_score_ci'][1]:.2f}",
                    b["auc_support"],
                    b["auc_inliers"],
                    b["auc_consistent"],
                    b["auc_matches"],
                    _pct(b["verified_pos"]),
                    _pct(b["verified_neg"]),
                    b["median_inliers_pos"],
                    b["median_inliers_neg"],
                    b["pair_cpu_ms_mean"],
                )
                for b in block["pipelines"]
            ]
            C.print_table(
                f"2. verification ROC-AUC, {name} ({block['images']} images)",
                ("pipeline", "pos/neg", "AUC score", "95% CI", "AUC support", "AUC inliers", "AUC consistent", "AUC matches", "TPR", "FPR", "med inl+", "med inl-", "CPU ms/pair"),
                rows,
            )
            for b in block["pipelines"]:
                if "verified_by_label" in b:
                    print(f"  {b['pipeline']}: positives verified per label: " + ", ".join(f"{k} {v}" for k, v in b["verified_by_label"].items()))
                if b["false_positives"]:
                    fps = "; ".join(f"{r['q']} ~ {r['d']} ({r['inliers']} inl)" for r in b["false_positives"][: args.list_limit])
                    more = len(b["false_positives"]) - args.list_limit
                    print(f"  {b['pipeline']}: negatives verified: {fps}" + (f" (+{more} more)" if more > 0 else ""))
                if name == "wxbs-v1.1" and b["false_negatives"]:
                    print(f"  {b['pipeline']}: positives not verified: " + ", ".join(f"{r['q'].rsplit('/', 1)[0]} ({r['inliers']})" for r in b["false_negatives"]))
    hom = result.get("homography")
    if hom:
        rows = [
            (b["pipeline"], f"{b['with_model']}/{len(b['rows'])}", b["mean_corner_error_with_model"], b["median_corner_error"], _pct(b["share_under"]), b["under_graf"], b["under_evd"])
            for b in hom["pipelines"]
        ]
        C.print_table(
            f"3. homography accuracy, homography-pairs ({len(hom['pairs'])} pairs; corner error in image-2 px)",
            ("pipeline", "with H", "mean err (with H)", "median err", f"verified & < {args.corner_px:g} px", "graf", "evd"),
            rows,
        )
        for b in hom["pipelines"]:
            fails = ", ".join(f"{r['pair']} ({_err(r['corner_error'])}, {r['inliers']} inl{'' if r['verified'] else ', rejected'})" for r in b["failing"])
            print(f"  {b['pipeline']} fails: {fails or 'none'}")
    ret = result.get("retrieval")
    if ret:
        for name, block in ret["datasets"].items():
            rows = [(r["method"], r.get("mAP", math.nan), r.get("mP@1", math.nan), r.get("mP@5", math.nan), r.get("note", "")) for r in block["rows"]]
            C.print_table(f"4. retrieval, leave-one-out, {name} ({block['images']} queries)", ("method", "mAP", "mP@1", "mP@5", "note"), rows)
    C.print_targets(targets)


def build_targets(result: dict[str, Any]) -> list[C.Target]:
    targets: list[C.Target] = []
    sp = result.get("speed")
    if sp:
        # required: per CPU-second of the (single-threaded) process, which is what one
        # core delivers whatever else the machine runs; wall clock: informational
        note = "" if THREADS == 1 else f"measured with {THREADS} threads, not 1 core"
        for e in sp["extract"]:
            req = e["extractor"] == "sift"
            targets.append(C.Target(f"{e['extractor']} extraction, 1024 px, CPU time", e["images_per_cpu_s"], ">", SIFT_IMAGES_PER_S, "images/s", note if req else "", required=req and THREADS == 1))
            if req:
                targets.append(C.Target(f"{e['extractor']} extraction, 1024 px, wall clock", e["images_per_s"], ">", SIFT_IMAGES_PER_S, "images/s", required=False))
        for v in sp["verify"]:
            req = v["pipeline"] == "sift+nn"
            targets.append(
                C.Target(f"{v['pipeline']} verification, ~2k features, CPU time", v["all"]["pairs_per_cpu_s"], ">", SIFT_PAIRS_PER_S, "pairs/s", note if req else "", required=req and THREADS == 1)
            )
            if req:
                targets.append(C.Target(f"{v['pipeline']} verification, ~2k features, wall clock", v["all"]["pairs_per_s"], ">", SIFT_PAIRS_PER_S, "pairs/s", required=False))
    auc = result.get("auc") or {}
    for name in ("landmark-multiview", "wxbs-v1.1"):
        for b in auc.get(name, {}).get("pipelines", []):
            targets.append(C.Target(f"{b['pipeline']} ROC-AUC {name}", b["auc_score"], ">", HARD_SET_AUC, "", "the hidden hard-set target, as a reference", required=False))
    return targets


# ----------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractors", default=None, help=f"comma list among {','.join(ALL_EXTRACTORS)} (and aliked-n16rot, aliked-n32, aliked-t16); default: all four, sift only with --quick")
    ap.add_argument(
        "--matchers",
        default="all",
        choices=("all", "default", "nn", "lightglue"),
        help="all: nn for every extractor plus lightglue where it has weights (default); default: lightglue for learned features, nn for sift",
    )
    ap.add_argument("--threads", type=int, default=1, help="threads for BLAS/OpenMP/OpenCV/torch (default 1: the one-core figures)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: speed,auc,homography,retrieval")
    ap.add_argument("--data", default=None, help="the shared data folder (default $CONSIST_SHARED_DATA or ../shared/data)")
    ap.add_argument("--cache", default=None, help="feature/pair cache folder (default: <tmp>/consist-bench-spatial; reused across runs)")
    ap.add_argument("--negatives", default="equal", choices=("equal", "all"), help="cross-instance pairs: as many as positives, fixed seed (default), or all")
    ap.add_argument("--seed", type=int, default=0, help="seed of the negative sample and of the ASMK codebook training (0)")
    ap.add_argument("--rerank-depth", type=int, default=10, help="retrieval results verified for re-ranking (10)")
    ap.add_argument("--rerank-on", default="asmk", help="comma list: asmk (default), tiny")
    ap.add_argument("--corner-px", type=float, default=5.0, help="corner error under which a homography is correct (5)")
    ap.add_argument("--speed-images", type=int, default=24, help="images for the SIFT speed figures (24)")
    ap.add_argument("--speed-images-learned", type=int, default=4, help="images for the learned extractors' speed figures (4)")
    ap.add_argument("--speed-pairs", type=int, default=24, help="pairs for the nn speed figures, half same-landmark (24)")
    ap.add_argument("--speed-pairs-learned", type=int, default=4, help="pairs for the learned matchers' speed figures (4)")
    ap.add_argument("-r", "--repeat", type=int, default=3, help="repetitions of the SIFT/nn timing loops (3)")
    ap.add_argument("--list-limit", type=int, default=12, help="false positives listed per table (12; all in --json)")
    ap.add_argument("--quick", action="store_true", help="smoke run (< 60 s): SIFT only unless --extractors, small subsets")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    ap.add_argument("--json-out", metavar="PATH", help="also write the JSON object to PATH")
    ap.add_argument("--strict", action="store_true", help="exit with status 1 when a required target is missed")
    args = ap.parse_args(argv)
    if args.threads != THREADS:  # main() called with argv other than sys.argv
        print(f"[bench] warning: --threads {args.threads} given to main(), but {THREADS} was set at import", file=sys.stderr)
    extractors = [e.strip() for e in (args.extractors or ("sift" if args.quick else ",".join(ALL_EXTRACTORS))).split(",") if e.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.rerank_on = {s.strip() for s in args.rerank_on.split(",") if s.strip()}
    if args.quick:
        args.speed_images = min(args.speed_images, 4)
        args.speed_images_learned = min(args.speed_images_learned, 2)
        args.speed_pairs = min(args.speed_pairs, 6)
        args.speed_pairs_learned = min(args.speed_pairs_learned, 2)
        args.repeat = 1
        args.rerank_depth = min(args.rerank_depth, 5)

    root = D.data_root(args.data)
    if root is None:
        print("bench_spatial: the shared data folder was not found (give --data or set $CONSIST_SHARED_DATA)", file=sys.stderr)
        return 2
    cache = Path(args.cache) if args.cache else Path(tempfile.gettempdir()) / "consist-bench-spatial"
    cache.mkdir(parents=True, exist_ok=True)
    pipelines, notes = select_pipelines(extractors, args.matchers)
    torch_version = _set_torch_threads(pipelines)
    if args.quick and any(p.extractor != "sift" for p in pipelines):
        notes.append("--quick with learned extractors: over 60 s unless their features are cached")
    if not pipelines:
        print("bench_spatial: no pipeline to run: " + "; ".join(notes), file=sys.stderr)
        return 2
    import consist_spatial

    info = C.machine_info(
        {
            "threads": THREADS,
            "opencv": cv2.__version__,
            "torch": torch_version,
            "consist_spatial": consist_spatial.__version__,
            "data": str(root),
            "cache": str(cache),
            "pipelines": [p.name for p in pipelines],
        }
    )
    data = load_datasets(root, args.quick)
    result: dict[str, Any] = {"machine": info, "notes": notes, "quick": args.quick}
    t_start = time.perf_counter()
    if "speed" not in skip:
        with C.progress("speed", args.quiet):
            result["speed"] = bench_speed(pipelines, data, args)
    if "auc" not in skip:
        with C.progress("verification ROC-AUC", args.quiet):
            result["auc"] = bench_auc(pipelines, data, cache, args)
    if "homography" not in skip:
        with C.progress("homography accuracy", args.quiet):
            result["homography"] = bench_homography(pipelines, data, cache, args)
    if "retrieval" not in skip:
        with C.progress("retrieval", args.quiet):
            result["retrieval"] = bench_retrieval(pipelines, data, cache, args)
    result["machine"]["loadavg_at_end"] = C.loadavg()
    result["machine"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    targets = build_targets(result)
    return C.finish(result, targets, args, lambda: report(result, targets, args))


if __name__ == "__main__":
    sys.exit(main())
