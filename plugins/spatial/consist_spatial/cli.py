"""``consist index`` and ``consist query``: build a store from a labelled image
folder (features, embeddings, ASMK), and ask it where an object appears.

Heavy imports (OpenCV, faiss, asmk) happen inside the command bodies, so that
``consist --help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consist.cli.common import emit_json, fail, json_option, open_store_or_fail, store_option

if TYPE_CHECKING:
    from consist.contracts import Store

__all__ = ["draw_overlay", "index_command", "query_command", "register"]

#: Result tiles drawn by ``--overlay``.
OVERLAY_TILES = 5
#: Inlier matches drawn per result in ``--overlay`` (evenly chosen).
OVERLAY_MATCHES = 40


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def _progress(desc: str, total: int | None) -> Any:
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI, tests)
    return tqdm(total=total, desc=desc, unit="img", disable=None, file=sys.stderr, leave=False)


def _extractor_names() -> list[str]:
    try:
        from consist_spatial.extractors.registry import EXTRACTORS
    except ImportError:  # pragma: no cover - the learned module ships with the plugin
        return ["sift"]
    return list(EXTRACTORS)


def _extractor(name: str, max_side: int, max_keypoints: int) -> Any:
    from consist_spatial.features import SiftExtractor

    if name == "sift":
        return SiftExtractor(max_side=max_side or None, max_keypoints=max_keypoints)
    from consist_spatial.availability import check_available
    from consist_spatial.extractors.registry import make_extractor

    check_available(name)  # the learned extra and its weights, or a one-line error
    return make_extractor(name, max_side=max_side or None, max_keypoints=max_keypoints)


def _embedder(name: str) -> Any:
    if name.lower() == "none":
        return None
    from consist import plugins

    found = plugins.embedders()
    if name not in found:
        raise click.BadParameter(f"unknown embedder {name!r} (registered: {', '.join(sorted(found)) or 'none'}, or 'none')", param_hint="--embedder")
    return found[name]


# ------------------------------------------------------------------------ index


@click.command("index")
@click.argument("dataset", type=click.Path(path_type=Path))
@store_option
@click.option("--labels", "labels_csv", type=click.Path(path_type=Path), default=None, metavar="CSV", help="CSV path,label[,...] (paths relative to DATASET); default: DATASET's class sub-folders.")
@click.option("--embedder", default="tiny", show_default=True, help="Registered embedder for the store's vectors ('none' to skip).")
@click.option(
    "--extractor", type=click.Choice(_extractor_names()), default="sift", show_default=True, help="Local features cached per sample: sift (RootSIFT, CPU) or a learned one (the learned extra)."
)
@click.option("--max-side", type=click.IntRange(0), default=1024, show_default=True, help="Long side features are extracted at (0: full size).")
@click.option("--max-keypoints", type=click.IntRange(1), default=2048, show_default=True, help="Strongest keypoints kept per image.")
@click.option("--no-asmk", is_flag=True, help="Do not build or update the ASMK retrieval index.")
@click.option(
    "--codebook", "codebook_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None, metavar="FILE", help="Use these ASMK centroids (.npy/.npz, K x 128) instead of training."
)
@click.option("--codebook-size", type=click.IntRange(1), default=None, help="Visual words when training (default min(1024, descriptors/50)).")
@click.option("--retrain", is_flag=True, help="Retrain the ASMK codebook even if the store has one.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Samples written per transaction.")
@click.option("--id-prefix", default="", help="Prefix of the sample ids (to index several datasets into one store).")
@json_option
def index_command(
    dataset: Path,
    store_uri: str,
    labels_csv: Path | None,
    embedder: str,
    extractor: str,
    max_side: int,
    max_keypoints: int,
    no_asmk: bool,
    codebook_file: Path | None,
    codebook_size: int | None,
    retrain: bool,
    batch_size: int,
    id_prefix: str,
    as_json: bool,
) -> None:
    """Index the labelled images of DATASET into the store.

    DATASET is a folder of class sub-folders (DATASET/<label>/<image>), or any folder
    with --labels CSV (or a CSV file itself). Each image's local features are
    extracted and cached, its embedding computed, and it is stored with `import`
    provenance under its path relative to DATASET; then the ASMK index is trained or
    updated. Re-running skips images already indexed (resumable). Unreadable images
    are reported and skipped (exit 0); a missing or empty dataset exits 2.
    """
    from consist.datasets import DatasetError, read_dataset

    t0 = time.perf_counter()
    if codebook_file is not None and no_asmk:
        raise click.UsageError("--codebook and --no-asmk contradict each other")
    try:
        ds = read_dataset(dataset, labels_csv)
    except DatasetError as exc:
        fail(str(exc))
    for problem in ds.problems:
        _warn(problem.message)
    ext = _extractor(extractor, max_side, max_keypoints)
    emb = _embedder(embedder)
    store = open_store_or_fail(store_uri, create=True)
    try:
        counts, failed = _index_items(store, ds, ext, emb, id_prefix, batch_size)
        asmk_report = None
        if not no_asmk and len(store):
            from consist_spatial.asmk import AsmkParams, update_asmk_index

            bar = _progress("asmk", None)
            try:
                _index, asmk_report = update_asmk_index(store, ext, AsmkParams(codebook_size=codebook_size), codebook=codebook_file, retrain=retrain, progress=bar.update)
            finally:
                bar.close()
        summary = {
            "dataset": ds.summary(),
            "store": store.uri,
            "extractor": ext.kind,
            "embedder": None if emb is None else emb.name,
            **counts,
            "failed": failed,
            "problems": [p.message for p in ds.problems],
            "asmk": asmk_report,
            "elapsed_s": round(time.perf_counter() - t0, 2),
        }
    finally:
        store.close()
    if as_json:
        emit_json(summary)
    else:
        _print_index_summary(summary)
    if failed and not (counts["indexed"] or counts["updated"] or counts["unchanged"]):
        fail(f"{dataset}: none of the {len(failed)} images could be read")


def _index_items(store: Store, ds: Any, ext: Any, emb: Any, prefix: str, batch_size: int) -> tuple[dict[str, int], list[dict[str, str]]]:
    """Write the dataset's samples in batches; ``(counts, failed images)``."""
    import attrs

    from consist.features import cache_features
    from consist.images import load_image
    from consist.records import TRUST, Provenance, Sample

    kind = ext.kind
    counts = {"indexed": 0, "updated": 0, "unchanged": 0, "kept_user_labels": 0, "kept_deleted": 0}
    failed: list[dict[str, str]] = []
    bar = _progress("index", len(ds))
    reason = f"consist index {ds.csv or ds.root}"
    try:
        items = list(ds.items)
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            ids = [prefix + it.id for it in batch]
            existing = store.get_many(ids)
            new: list[tuple[Sample, Any]] = []
            relabel: list[Sample] = []
            for item, sid, old in zip(batch, ids, existing):
                bar.update(1)
                if old is not None and old.uri == item.uri and (emb is None or old.embedding is not None) and store.get_artefact(sid, kind) is not None:
                    if old.label == item.label and dict(old.meta) == dict(item.meta):
                        counts["unchanged"] += 1
                    elif old.label != item.label and TRUST[old.provenance] > TRUST[Provenance.IMPORT]:
                        counts["kept_user_labels"] += 1  # a person's label wins over the import
                    else:
                        relabel.append(attrs.evolve(old, label=item.label, meta=item.meta, provenance=Provenance.IMPORT))
                    continue
                if old is None and _was_deleted(store, sid):
                    counts["kept_deleted"] += 1  # a person hid it: re-running does not bring it back
                    continue
                try:
                    pixels = load_image(item.uri)
                    feats = ext.extract(pixels)
                    vector = None if emb is None else emb.embed(pixels)
                except Exception as exc:  # ImageError, or a decoder/extractor failure on odd pixels
                    msg = str(exc) if exc.__class__.__name__ == "ImageError" else f"{item.uri}: cannot process ({type(exc).__name__}: {exc})"
                    _warn(msg)
                    failed.append({"id": sid, "path": item.uri, "error": msg})
                    continue
                new.append((Sample(id=sid, uri=item.uri, label=item.label, provenance=Provenance.IMPORT, embedding=vector, meta=item.meta), feats))
            if not new and not relabel:
                continue
            with store.transaction():
                entries = store.put([s for s, _ in new] + relabel, reason=reason, on_conflict="skip")
                for sample, feats in new:
                    cache_features(sample, store, kind, feats)
            for e in entries:
                if e.action == "add":
                    counts["indexed"] += 1
                elif e.action == "update":
                    counts["updated"] += 1
                elif e.action == "conflict":
                    counts["kept_user_labels"] += 1
            # a sample re-put unchanged (its features were missing) has no history entry
            counts["unchanged"] += len(new) + len(relabel) - len(entries)
    finally:
        bar.close()
    return counts, failed


def _was_deleted(store: Store, sample_id: str) -> bool:
    """The sample exists in the store's history but is deleted (or its add undone)."""
    history = getattr(store, "history", None)
    if history is None:
        return False
    last = history(sample_id=sample_id, limit=1)
    return bool(last and last[0].after is not None and last[0].after.get("deleted"))


def _print_index_summary(s: dict[str, Any]) -> None:
    ds = s["dataset"]
    click.echo(f"{ds['items']} images of {ds['labels']} labels in {ds['csv'] or ds['root']}")
    click.echo(f"indexed {s['indexed']} new, {s['updated']} updated, {s['unchanged']} already indexed -> {s['store']}")
    if s["kept_deleted"]:
        click.echo(f"left {s['kept_deleted']} deleted samples deleted (undo the deletion to index them again)")
    if s["kept_user_labels"]:
        click.echo(f"kept {s['kept_user_labels']} labels a person had given (user labels win over the import)")
    if s["problems"]:
        click.echo(f"{len(s['problems'])} dataset entries skipped:")
        for p in s["problems"]:
            click.echo(f"  {p}")
    if s["failed"]:
        click.echo(f"{len(s['failed'])} images could not be read (skipped):")
        for f in s["failed"]:
            click.echo(f"  {f['error']}")
    a = s["asmk"]
    if a:
        how = {"trained": "trained a codebook", "retrained": "retrained the codebook", "loaded": "loaded the codebook", "updated": "updated", "unchanged": "up to date"}[a["action"]]
        why = f" ({a['reason']})" if a.get("reason") else ""
        click.echo(f"ASMK: {how}{why}: {a['words']} words, {a['images']} images in the inverted file")
    click.echo(f"done in {s['elapsed_s']:.1f} s")


# ------------------------------------------------------------------------ query


@click.command("query")
@click.argument("image", type=click.Path(path_type=Path))
@store_option
@click.option("--region", default=None, metavar="x0,y0,x1,y1", help="Look only at this box of the query, in pixels.")
@click.option("--polygon", "polygon_file", default=None, metavar="FILE", help="JSON [[x,y],...] outlining the object in the query.")
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="Results shown.")
@click.option("--retriever", default="asmk", show_default=True, help="asmk, vector, or any registered retriever.")
@click.option(
    "--rerank",
    type=click.Choice(["spatial", "none", "hp"]),
    default="spatial",
    show_default=True,
    help="Verify the short-list geometrically and re-rank by inliers; hp: then propagate through the store's matching graph (topological plugin).",
)
@click.option("--depth", type=click.IntRange(1), default=100, show_default=True, help="Retrieved results verified when re-ranking.")
@click.option("--embedder", default="tiny", show_default=True, help="Embeds the query for --retriever vector.")
@click.option("--overlay", type=click.Path(path_type=Path), default=None, metavar="OUT.png", help="Draw the query and the top results with outlines and inlier matches.")
@json_option
def query_command(
    image: Path, store_uri: str, region: str | None, polygon_file: str | None, top: int, retriever: str, rerank: str, depth: int, embedder: str, overlay: Path | None, as_json: bool
) -> None:
    """Find the stored images that show the object in IMAGE, and where.

    Ranked results: sample id, label, retrieval score, inliers, whether the match
    verified, and the query (region) localised in the result's pixels.
    """
    import attrs

    from consist import plugins
    from consist.cli.feedback import parse_box, parse_polygon_file
    from consist.errors import ImageError
    from consist.images import image_id, load_image
    from consist.records import Neighbour, Query

    if region and polygon_file:
        raise click.UsageError("give --region or --polygon, not both")
    reg = parse_box(region) if region else parse_polygon_file(polygon_file) if polygon_file else None
    if overlay is not None and overlay.parent and not overlay.parent.exists():
        fail(f"{overlay.parent}: no such folder for --overlay")
    store = open_store_or_fail(store_uri, create=False)
    try:
        try:
            pixels = load_image(str(image))
        except ImageError as exc:
            fail(str(exc))
        if reg is not None:
            _check_region(reg, pixels, region or polygon_file or "")

        from consist_spatial.asmk import AsmkRetriever, Reranked, detect_extractor, spatial_config_for, spatial_rerank
        from consist_spatial.features import SiftExtractor

        ext = detect_extractor(store) or SiftExtractor()
        query = Query(id=image_id(pixels), uri=str(image.resolve()), image=pixels, region=reg)
        feats = None
        if rerank == "hp" and "hp" not in plugins.rerankers():
            raise click.BadParameter("hp needs a re-ranker registered as 'hp' (pip install consist-topological)", param_hint="--rerank")
        k = max(top, depth) if rerank in ("spatial", "hp") else top
        if retriever == "asmk":
            from consist_spatial.asmk import query_features

            feats = query_features(query, None, ext)
            neighbours = AsmkRetriever(extractor=ext).index_for(store).retrieve(query, store, k, features=feats) if len(store) else []
        else:
            found = plugins.retrievers()
            if retriever not in found:
                raise click.BadParameter(f"unknown retriever {retriever!r} (registered: {', '.join(sorted(found))})", param_hint="--retriever")
            emb = _embedder(embedder)
            if emb is not None:
                query = attrs.evolve(query, embedding=emb.embed(pixels))
            neighbours = found[retriever].retrieve(query, store, k)
        hp = None
        if rerank in ("spatial", "hp"):
            results = spatial_rerank(query, neighbours, store, depth=depth, config=spatial_config_for(ext), features=feats)
        else:
            results = [Reranked(n, n.rank) for n in neighbours]
        if rerank == "hp":
            from consist_spatial.rerankers import to_reranking

            hp = plugins.rerankers()["hp"].rerank(query, to_reranking(results).neighbours, store, k=depth)
            by_id = {r.neighbour.sample.id: r for r in results}
            for n in hp.neighbours:
                if n.sample.id not in by_id:  # beyond the short-list: found by propagation only
                    by_id[n.sample.id] = Reranked(Neighbour(sample=n.sample, similarity=0.0, source="propagation"), -1)
            results = [attrs.evolve(by_id[n.sample.id], neighbour=attrs.evolve(by_id[n.sample.id].neighbour, rank=i)) for i, n in enumerate(hp.neighbours)]
        results = results[:top]
        rows = [r.to_dict() for r in results]
        if hp is not None:
            hop_of = {n.sample.id: n.evidence for n in hp.neighbours}
            for row in rows:
                ev = hop_of.get(row["id"], {})
                row.update(hop=ev.get("hop"), active_region=ev.get("active_region"))
        report = {
            "query": str(image),
            "region": None if reg is None else list(reg.vertices),
            "store": store.uri,
            "retriever": retriever,
            "rerank": rerank,
            "extractor": ext.kind,
            "results": rows,
            "overlay": None,
        }
        if hp is not None:
            report.update(hp.details)
        if overlay is not None:
            png = draw_overlay(pixels, reg, results, store, title=image.name)
            overlay.write_bytes(png)
            report["overlay"] = str(overlay)
    finally:
        store.close()
    if as_json:
        emit_json(report)
    else:
        _print_query(report)


def _check_region(reg: Any, pixels: Any, text: str) -> None:
    h, w = pixels.shape[:2]
    x0, y0, x1, y1 = reg.bounds
    if x1 <= -0.5 or y1 <= -0.5 or x0 >= w - 0.5 or y0 >= h - 0.5:
        raise click.BadParameter(f"{text}: region ({x0:g},{y0:g})-({x1:g},{y1:g}) lies outside the {w}x{h} query image")


def _print_query(r: dict[str, Any]) -> None:
    how = {"spatial": " + spatial re-ranking", "hp": " + spatial re-ranking + hypergraph propagation"}.get(r["rerank"], "")
    click.echo(f"query {r['query']}  ({r['retriever']}{how}, {r['store']})")
    if "community_uncertainty" in r:
        click.echo(f"community uncertainty {r['community_uncertainty']:.2f} ({r['communities']} communities in the top results; seeds: {r['seed_rule']})")
    if not r["results"]:
        click.echo("no results (is the store empty?)")
    for x in r["results"]:
        verdict = f"verified, {x['inliers']} inliers" if x["verified"] else ("not verified" if x["matches"] is not None else "not checked")
        where = f", localised ({len(x['polygon'])}-gon, {x['polygon_source'].replace('_', ' ')})" if x["polygon"] else ""
        if x.get("hop") and not x["polygon"] and x.get("active_region"):
            where = f", reached by propagation (hop {x['hop']}), active region {x['active_region']}"
        click.echo(f"{x['rank'] + 1:>3}. {x['label'] or '-':<20} {x['id']}  score {x['score']:.4f}  {verdict}{where}")
    if r["overlay"]:
        click.echo(f"overlay written to {r['overlay']}")


# ---------------------------------------------------------------------- overlay


def _fit(image: Any, max_w: int, max_h: int) -> tuple[Any, float]:
    import cv2

    h, w = image.shape[:2]
    s = min(max_w / w, max_h / h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR), s


def _poly(points: Sequence[Sequence[float]], scale: float, ox: int, oy: int) -> Any:
    import numpy as np

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.round((pts + 0.5) * scale - 0.5 + [ox, oy]).astype(np.int32).reshape(-1, 1, 2)


def draw_overlay(
    query_pixels: Any, region: Any, results: Sequence[Any], store: Store, *, title: str = "query", tiles: int = OVERLAY_TILES, matches: int = OVERLAY_MATCHES, tile_w: int = 400, tile_h: int = 300
) -> bytes:
    """One PNG: a row per result (up to ``tiles``), each the query (its region in
    yellow) beside the result with the localised outline (green: projected query
    region, orange: inlier hull) and up to ``matches`` inlier matches as lines.
    ``results`` are :class:`~consist_spatial.asmk_index.Reranked`."""
    import cv2
    import numpy as np

    from consist.errors import ImageError
    from consist.images import encode_png, load_image

    font = cv2.FONT_HERSHEY_SIMPLEX
    gap, caption, margin = 48, 26, 10
    shown = list(results[:tiles])
    width = 2 * tile_w + gap + 2 * margin
    height = caption + margin + max(1, len(shown)) * (tile_h + caption + margin)
    canvas = np.full((height, width, 3), 32, dtype=np.uint8)
    cv2.putText(canvas, f"query {title}: top {len(shown)} results", (margin, 18), font, 0.55, (235, 235, 235), 1, cv2.LINE_AA)
    q_img, q_s = _fit(query_pixels, tile_w, tile_h)
    rng_colors = [(0, 220, 255), (255, 120, 220), (120, 255, 120), (255, 200, 80), (160, 160, 255)]
    if not shown:
        y = caption + margin
        canvas[y : y + q_img.shape[0], margin : margin + q_img.shape[1]] = q_img
        cv2.putText(canvas, "no results", (margin + tile_w + gap, y + 20), font, 0.6, (255, 90, 90), 1, cv2.LINE_AA)
    for row, r in enumerate(shown):
        y = caption + margin + row * (tile_h + caption + margin)
        s = r.neighbour.sample
        verdict = f"verified, {r.inliers} inliers" if r.verified else ("not verified" if r.verification is not None else "not checked")
        text = f"#{r.neighbour.rank + 1}  {s.label or '-'}  ({s.id})  score {r.neighbour.similarity:.3f}  {verdict}"
        cv2.putText(canvas, text[:90], (margin, y + 17), font, 0.5, (120, 255, 120) if r.verified else (255, 160, 120), 1, cv2.LINE_AA)
        ty = y + caption
        qx = margin
        canvas[ty : ty + q_img.shape[0], qx : qx + q_img.shape[1]] = q_img
        if region is not None:
            cv2.polylines(canvas, [_poly(region.vertices, q_s, qx, ty)], True, (255, 220, 0), 2, cv2.LINE_AA)
        rx = margin + tile_w + gap
        try:
            n_img, n_s = _fit(load_image(s, store=store), tile_w, tile_h)
        except ImageError as exc:
            cv2.putText(canvas, "unreadable: " + str(exc)[:40], (rx, ty + 20), font, 0.45, (255, 90, 90), 1, cv2.LINE_AA)
            continue
        canvas[ty : ty + n_img.shape[0], rx : rx + n_img.shape[1]] = n_img
        if r.polygon is not None:
            color = (0, 255, 0) if r.polygon_source == "projected_query_region" else (255, 150, 0)
            cv2.polylines(canvas, [_poly(r.polygon, n_s, rx, ty)], True, color, 2, cv2.LINE_AA)
        pts = np.asarray(r.inlier_points, dtype=np.float64).reshape(-1, 4)
        if len(pts):
            pick = np.unique(np.linspace(0, len(pts) - 1, min(matches, len(pts))).round().astype(int))
            for j, (xq, yq, xn, yn) in enumerate(pts[pick]):
                a = (int(round((xq + 0.5) * q_s - 0.5 + qx)), int(round((yq + 0.5) * q_s - 0.5 + ty)))
                b = (int(round((xn + 0.5) * n_s - 0.5 + rx)), int(round((yn + 0.5) * n_s - 0.5 + ty)))
                c = rng_colors[j % len(rng_colors)]
                cv2.line(canvas, a, b, c, 1, cv2.LINE_AA)
                cv2.circle(canvas, a, 2, c, -1, cv2.LINE_AA)
                cv2.circle(canvas, b, 2, c, -1, cv2.LINE_AA)
    return encode_png(canvas)


def register(group: click.Group) -> None:
    group.add_command(index_command)
    group.add_command(query_command)
