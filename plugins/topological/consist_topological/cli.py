"""Commands of the topological plugin: ``consist eval retrieval`` and
``consist topology build``.

Heavy imports happen inside the command bodies so that ``consist --help`` stays fast.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from consist.cli.common import emit_json, fail, json_option, open_store_or_fail, store_option

__all__ = ["eval_group", "register", "retrieval_command", "topology_group"]


class _Bars:
    """One tqdm bar per phase (asmk, graph, queries); none when stderr is not a terminal."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, phase: str, n: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(phase)
        if bar is None:
            bar = self.bars[phase] = tqdm(desc=phase, unit="img", disable=None, file=sys.stderr, leave=False)
        bar.update(n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _methods(text: str) -> list[str]:
    from consist_topological.evaluation import METHODS

    got = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in got if m not in METHODS]
    if bad or not got:
        raise click.BadParameter(f"unknown method(s) {', '.join(bad) or '(none)'}; choose among {', '.join(METHODS)}", param_hint="--methods")
    return got


def _spatial_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("model=fundamental", "min_inliers=12")`` -> options, checked by the registered
    pair verifier (the spatial checker's ``SpatialConfig`` fields)."""
    import json

    from consist.errors import ConsistError
    from consist_topological.hypergraph import GraphConfig

    out: dict[str, Any] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint="--spatial")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    try:
        GraphConfig(spatial=out).validate()
    except (TypeError, ValueError, ConsistError) as exc:
        raise click.BadParameter(str(exc), param_hint="--spatial") from exc
    return out


@click.group("eval")
def eval_group() -> None:
    """Evaluate consist's components on a dataset with ground truth."""


@eval_group.command("retrieval")
@click.argument("dataset", type=click.Path(path_type=Path))
@store_option
@click.option(
    "--gnd",
    "gnd_file",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PKL",
    help="revisitop ground truth (gnd_*.pkl); DATASET is then the folder of its jpg images. Default: DATASET is labelled folders (or a CSV), evaluated leave-one-out.",
)
@click.option("--labels", "labels_csv", type=click.Path(path_type=Path), default=None, metavar="CSV", help="CSV path,label (labelled datasets only).")
@click.option(
    "--methods", default="asmk,spatial,hp,cs", show_default=True, help="Rankings to compare: asmk, spatial (re-ranking by inliers), hp (hypergraph propagation), cs (HP with community selection)."
)
@click.option("--k", "k", type=click.IntRange(1), default=200, show_default=True, help="Neighbours verified per database image in the matching graph (the paper's 200).")
@click.option("--depth", type=click.IntRange(1), default=100, show_default=True, help="Short-list verified at query time for revisitop queries.")
@click.option("--hops", type=click.IntRange(0), default=3, show_default=True, help="Propagation hops.")
@click.option(
    "--verifier",
    type=click.Choice(["homography", "tr"]),
    default="homography",
    show_default=True,
    help="What makes a pair a hyperedge: DEGENSAC homography inliers, or topological RANSAC's largest region.",
)
@click.option(
    "--spatial",
    "spatial_opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Spatial verification option for the graph and the query (SpatialConfig field), e.g. model=fundamental, min_inliers=12; repeatable.",
)
@json_option
def retrieval_command(
    dataset: Path, store_uri: str, gnd_file: Path | None, labels_csv: Path | None, methods: str, k: int, depth: int, hops: int, verifier: str, spatial_opts: tuple[str, ...], as_json: bool
) -> None:
    """Retrieval mAP with the revisitop protocol (Easy/Medium/Hard with junk for a
    gnd file; leave-one-out for labelled folders): ASMK, spatial re-ranking, HP, CS.

    The store caches features, the ASMK index and the matching graph: a second
    run only evaluates.
    """
    from consist.errors import ConsistError
    from consist_topological.evaluation import evaluate_gnd, evaluate_labelled, load_gnd
    from consist_topological.rerank import HpConfig

    chosen = _methods(methods)
    hp = HpConfig(max_hops=hops)
    spatial = _spatial_options(spatial_opts)
    if gnd_file is not None and labels_csv is not None:
        raise click.UsageError("--gnd and --labels contradict each other")
    if gnd_file is not None:
        try:
            gnd = load_gnd(gnd_file)
        except ConsistError as exc:
            fail(str(exc))
        if not dataset.is_dir():
            fail(f"{dataset}: not a folder of the ground truth's images")
    else:
        from consist.datasets import DatasetError, read_dataset

        try:
            ds = read_dataset(dataset, labels_csv)
        except DatasetError as exc:
            fail(str(exc))
        for problem in ds.problems:
            click.echo(f"warning: {problem.message}", err=True)
    store = open_store_or_fail(store_uri, create=True)
    bars = _Bars()
    try:
        if gnd_file is not None:
            result = evaluate_gnd(store, gnd, dataset, methods=chosen, k=k, depth=depth, hp=hp, progress=bars, name=gnd_file.name, spatial=spatial, verifier=verifier)
        else:
            result = evaluate_labelled(store, list(ds.items), methods=chosen, k=k, depth=depth, hp=hp, progress=bars, name=str(dataset), spatial=spatial, verifier=verifier)
    except ConsistError as exc:
        fail(str(exc))
    finally:
        bars.close()
        store.close()
    report = result.to_dict()
    if as_json:
        emit_json(report)
    else:
        _print_eval(report)


def _fmt(v: float) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"


def _print_eval(r: dict[str, Any]) -> None:
    g = r["graph"]
    click.echo(f"{r['dataset']}: {r['kind']}, {r['queries']} queries, {r['database']} database images")
    click.echo(f"matching graph: {g['nodes']} images, {g['edges']} hyperedges (mean degree {g['mean_degree']:.1f}, {g['isolated']} isolated), k={g['k']}")
    if r["kind"] == "revisitop":
        click.echo(f"{'method':<10} {'Easy':>6} {'Medium':>7} {'Hard':>6}   (mAP %)")
        for m, res in r["results"].items():
            click.echo(f"{m:<10} {_fmt(res['easy']['map']):>6} {_fmt(res['medium']['map']):>7} {_fmt(res['hard']['map']):>6}")
    else:
        click.echo(f"{'method':<10} {'mAP':>6} {'mP@1':>6} {'mP@5':>6}   (%)")
        for m, res in r["results"].items():
            p = res["mp_at_k"]
            click.echo(f"{m:<10} {_fmt(res['map']):>6} {_fmt(p.get(1, p.get('1'))):>6} {_fmt(p.get(5, p.get('5'))):>6}")
    t = r["timings"]
    click.echo(f"graph build {t['graph_build_s']:.1f} s, propagation {t['propagation_ms_mean']:.2f} ms per query")


@click.group("topology")
def topology_group() -> None:
    """The matching hypergraph kept in the store (topological plugin)."""


@topology_group.command("build")
@store_option
@click.option("--k", "k", type=click.IntRange(1), default=200, show_default=True, help="Neighbours verified per image (the paper's 200).")
@click.option("--verifier", type=click.Choice(["homography", "tr"]), default="homography", show_default=True, help="What makes a pair a hyperedge.")
@click.option("--spatial", "spatial_opts", multiple=True, metavar="KEY=VALUE", help="Spatial verification option (SpatialConfig field); repeatable.")
@json_option
def build_command(store_uri: str, k: int, verifier: str, spatial_opts: tuple[str, ...], as_json: bool) -> None:
    """Build (or bring up to date) the store's matching graph: each image verified
    against its top-k ASMK neighbours; only new or changed images are verified."""
    from consist_topological.hypergraph import GraphConfig, MatchingHypergraph

    store = open_store_or_fail(store_uri, create=False)
    bars = _Bars()
    try:
        graph = MatchingHypergraph(GraphConfig(k=k, verifier=verifier, spatial=_spatial_options(spatial_opts)))
        report = graph.build(store, progress=lambda n: bars("graph", n))
        stats = {**graph.stats(), "computed": report.added, "verified_pairs": report.verified_pairs, "failed": [{"id": i, "error": e} for i, e in report.failed]}
    finally:
        bars.close()
        store.close()
    if as_json:
        emit_json(stats)
    else:
        click.echo(f"matching graph of {store_uri}: {stats['nodes']} images, {stats['edges']} hyperedges, {stats['components']} components ({stats['isolated']} isolated images)")
        click.echo(f"verified {stats['verified_pairs']} pairs for {stats['computed']} images; {stats['hyperedge_bytes_per_image'] / 1024:.1f} KiB of hyperedges per image")
        for f in stats["failed"]:
            click.echo(f"  unreadable: {f['error']}")


def register(cli: click.Group) -> None:
    """Add ``eval retrieval`` (into an existing ``eval`` group if another plugin made
    one) and ``topology build``."""
    existing = cli.commands.get("eval")
    if isinstance(existing, click.Group):
        existing.add_command(retrieval_command)
    else:
        cli.add_command(eval_group)
    cli.add_command(topology_group)
