"""``consist demo``: consist end to end on real photos that scikit-image ships.

By default, a label audit (``consist audit``) of a small dataset with some labels
deliberately wrong and one broken file; ``--recognize`` runs the recognition demo
instead (a recognizer's predictions verified, corrected, and written back).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click

from consist.cli.common import emit_json, json_option


def _short(path: str | None, root: Path) -> str:
    if path is None:
        return "-"
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def run_demo(out: Path, *, say: Any = None) -> dict[str, Any]:
    """Build the demo data and store, recognise the queries, return a JSON-able report."""
    import consist
    from consist import plugins
    from consist.demo import build_demo_data
    from consist.plugins import checkers as registered_checkers

    say = say or (lambda _msg: None)
    data = build_demo_data(out, progress=say)
    store_path = out / "store.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
    store = consist.open_store(f"sqlite:///{store_path}")
    embedder = plugins.embedders()["tiny"]
    with store.transaction():
        store.put(
            [consist.Sample(id=_short(str(p), out), uri=str(p), label=label, provenance="import", embedding=embedder.embed(p)) for p, label in data.references],
            reason="demo references",
        )
    names = sorted(registered_checkers(), key=lambda n: n)
    say(f"store {store.uri}: {len(store)} reference views of {len(store.labels())} objects; checkers: {', '.join(names)}")
    if "spatial" not in names:
        say("note: consist-spatial is not installed, so only the neighbour vote checks predictions (pip install -e plugins/spatial)")
    recognizer = consist.wrap(None, store, embedder=embedder, k=6)
    results = []
    for path, truth in data.queries:
        decision = recognizer.predict(str(path))
        prediction_top = decision.predicted_label
        results.append(
            {"query": _short(str(path), out), "truth": truth, "decision": consist.records.to_dict(decision), "recognizer_correct": prediction_top == truth, "final_correct": decision.label == truth}
        )
    summary = {
        "queries": len(results),
        "recognizer_correct": sum(r["recognizer_correct"] for r in results),
        "final_correct": sum(r["final_correct"] for r in results),
        "corrected": sum(r["decision"]["changed"] for r in results),
        "adapted": sum(1 for r in results if (r["decision"]["adapted"] or "").startswith(("added", "updated"))),
        "store_after": len(store),
    }
    store.close()
    return {"root": str(out), "store": f"sqlite:///{store_path}", "checkers": names, "results": results, "summary": summary}


def _print_human(report: dict[str, Any]) -> None:
    root = Path(report["root"])
    for r in report["results"]:
        d = r["decision"]
        click.echo("")
        click.echo(click.style(f"query {r['query']}", bold=True) + f"   (true label: {r['truth']})")
        click.echo(f"  recognizer says  {d['predicted_label']}")
        verdict = f"CORRECTED {d['predicted_label']} -> {d['label']}" if d["changed"] else "kept"
        color = "green" if r["final_correct"] else "red"
        click.echo("  decision         " + click.style(f"{d['label']}  (confidence {d['confidence']:.3f}, {verdict})", fg=color))
        click.echo("  evidence:")
        for v in sorted(d["votes"], key=lambda v: (v["checker"], -v["support"])):
            ev = v["evidence"]
            detail = ", ".join(f"{k}={ev[k]}" for k in ("inliers", "inlier_ratio", "neighbours") if k in ev)
            where = f" vs {_short(v['neighbour_id'], root)}" if v["neighbour_id"] else ""
            click.echo(f"    {v['checker']:<8} {v['label']:<11} support {v['support']:.2f}  confidence {v['confidence']:.2f}  {detail}{where}")
        for run in d["runs"]:
            if run["status"] != "ran":
                click.echo(f"    {run['checker']:<8} {run['status']}: {run['reason']}")
        for loc in d["localisations"][:2]:
            pts = loc["region"]["polygon"] or []
            click.echo(f"  localised in {_short(loc['sample_id'], root)}: " + " ".join(f"({x:.0f},{y:.0f})" for x, y in pts[:6]))
        click.echo(f"  store            {d['adapted']}")
    s = report["summary"]
    click.echo("")
    click.echo(
        f"{s['queries']} queries: the recognizer alone was right {s['recognizer_correct']}/{s['queries']}, "
        f"after verification {s['final_correct']}/{s['queries']} ({s['corrected']} corrected); "
        f"{s['adapted']} verified queries were added to the store ({s['store_after']} samples now)."
    )
    click.echo(f"store: {report['store']}  (try: consist history --store {report['store']})")


#: Neighbours verified per image in the audit demo (each object has 4 other views).
DEMO_K = 6
#: Keypoints per image in the audit demo (the images are ~400 px).
DEMO_KEYPOINTS = 1024


def run_audit_demo(out: Path, *, say: Any = None, workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Build the audit demo dataset and audit it; a JSON-able report."""
    import consist
    from consist.demo import build_audit_demo

    say = say or (lambda _msg: None)
    data = build_audit_demo(out)
    n = len(data.truth) + len(data.broken)
    say(f"demo dataset: {n} images of {len(set(data.truth.values()))} objects in {data.images} ({len(data.planted)} in the wrong class folder, {len(data.broken)} broken file)")
    # each object has four other views: six neighbours and 1024 keypoints per image
    # are plenty here, and keep the demo well under a minute on two cores
    result = consist.audit.audit(data.images, out / "audit", workers=workers, progress=progress, say=lambda m: say(m) if m.startswith("warning") else None, k=DEMO_K, max_keypoints=DEMO_KEYPOINTS)
    rows = {r.sample: r for r in result.rows}
    found = [sid for sid in data.planted if rows[sid].flagged]
    right = [sid for sid in found if rows[sid].suggested_label == data.truth[sid]]
    false_flags = [r.sample for r in result.flagged if r.sample not in data.planted]
    return {
        "root": str(out),
        "dataset": str(data.images),
        "audit": str(out / "audit"),
        "summary": result.summary,
        "flagged": [r for r in result.to_records() if r["flagged"]],
        "planted": {
            "errors": len(data.planted),
            "truth": {sid: data.truth[sid] for sid in data.planted},
            "found": len(found),
            "suggestion_right": len(right),
            "false_flags": false_flags,
            "broken": list(data.broken),
        },
        "_result": result,
    }


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("consist-demo"), show_default=True, help="Folder for the demo's images and results.")
@click.option("--clean", is_flag=True, help="Delete the folder first.")
@click.option("--recognize", is_flag=True, help="Run the recognition demo (verify and correct a recognizer's predictions) instead of the label audit.")
@json_option
def demo_command(out: Path, clean: bool, recognize: bool, as_json: bool) -> None:
    """Audit a small labelled dataset of real photos (some labels deliberately
    wrong) and show what was found, and where the report is. No download."""
    if clean and out.exists():
        shutil.rmtree(out)
    if not recognize:
        from consist.cli.audit_cmd import print_audit

        rep = run_audit_demo(out, say=None if as_json else (lambda m: click.echo(m, err=m.startswith("warning"))), progress=not as_json)
        result = rep.pop("_result")
        if as_json:
            emit_json(rep)
            return
        print_audit(result, out / "audit")
        p = rep["planted"]
        click.echo("")
        click.echo(
            f"planted label errors: {p['errors']}; flagged {p['found']} of them, with the right label suggested for {p['suggestion_right']}; "
            f"{len(p['false_flags'])} correct labels flagged; the broken file was reported, not fatal."
        )
        click.echo(f"open the report: {(out / 'audit' / 'report.html').resolve()}")
        click.echo(f"review and fix the labels in your browser: consist review {out / 'audit'}   (docs/review.md)")
        click.echo("audit your own images: consist audit PATH/TO/FOLDER --out audit-out   (docs/audit.md)")
        return
    report = run_demo(out, say=None if as_json else (lambda m: click.echo(m)))
    if as_json:
        emit_json(report)
    else:
        _print_human(report)


def register(group: click.Group) -> None:
    group.add_command(demo_command)
