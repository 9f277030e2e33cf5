"""``consist audit``: find and fix label errors in a labelled image dataset.

Exit codes: 0 the audit ran (whatever it found); 1 it found issues (flagged
samples, near-duplicates with different labels, unreadable images) and
``--fail-on-issues`` was given; 2 bad invocation or unusable input (one line on
stderr); 130 interrupted (the finished samples are kept: re-run with ``--resume``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from consist.cli.common import emit_json, fail, json_option, safe

__all__ = ["audit_command", "print_audit", "register"]

#: Flagged samples listed on the terminal (all of them are in audit.csv / report.html).
SHOWN = 15


def _checker_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [c.strip() for c in value.split(",") if c.strip()]


@click.command("audit")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True, metavar="DIR", help="Folder for audit.csv, audit.jsonl, summary.json, report.html (and the feature cache)."
)
@click.option(
    "--labels",
    "labels_csv",
    type=click.Path(path_type=Path),
    default=None,
    metavar="CSV",
    help="CSV path,label[,...] (paths relative to DATASET; extra columns kept); default: DATASET's class sub-folders.",
)
@click.option("--path-column", default=None, metavar="NAME", help="CSV column of the image paths (default: path or file).")
@click.option("--label-column", default=None, metavar="NAME", help="CSV column of the labels (default: label).")
@click.option("--labels-from-names", is_flag=True, help="Label each image by its file name (Abyssinian_12.jpg -> Abyssinian: the name without a trailing number), images anywhere under DATASET.")
@click.option("--name-pattern", default=None, metavar="REGEX", help="With --labels-from-names: a regular expression whose first group, matched against the file name without extension, is the label.")
@click.option("--store", "store_uri", default=None, metavar="URI", help="Store for the feature cache and the history of --apply (default: sqlite:///DIR/store.db).")
@click.option("--checkers", default=None, metavar="A,B", help="Registered checkers that vote (default: every enabled one; see consist plugins).")
@click.option("--executor", default="local", show_default=True, metavar="local|dask://HOST:PORT", help="Where verification runs: local worker processes, or a Dask distributed scheduler.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Local worker processes (default: one per core).")
@click.option("-k", "--k", "k", type=click.IntRange(1), default=None, help="Neighbours verified per sample (default 10).")
@click.option("--chunk-size", type=click.IntRange(1), default=None, help="Samples per task (default 16); smaller loses less work when interrupted.")
@click.option("--resume", is_flag=True, help="Continue an interrupted audit in DIR (no sample is verified twice or lost).")
@click.option("--apply", "apply_", is_flag=True, help="Write DIR/labels.corrected.csv and record the relabels in the store's history (the input is never modified).")
@click.option("--fail-on-issues", is_flag=True, help="Exit 1 when the audit finds issues.")
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
@click.option(
    "--features",
    default=None,
    metavar="EXTRACTOR[+MATCHER]",
    help="Local features, by registered name: sift (default), aliked-n16+lightglue, disk+lightglue, xfeat+lightglue, ... (see consist plugins).",
)
@click.option("--retriever", default=None, metavar="NAME", help="Registered retriever (default: asmk when installed, else vector).")
@click.option("--device", default=None, metavar="cpu|cuda|auto", help="Where learned features run (default cpu).")
@click.option(
    "--generic-label",
    "generic_labels",
    multiple=True,
    metavar="LABEL",
    help="A label that names no particular object (a city, 'misc'): never suggested; its images get specific labels. Repeatable; such labels are also detected.",
)
@click.option("--no-generic-detection", is_flag=True, help="Do not detect generic labels from the verified graph (only those given with --generic-label).")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=None, help="--apply relabels only flags whose P(wrong) and suggestion posterior reach this (default 0.9).")
@click.option("--min-witnesses", type=click.IntRange(0), default=None, help="--apply relabels only flags whose suggestion at least this many other verified views carry (default 2).")
@click.option("--reporters", default=None, metavar="A,B", help="Reporters to run besides those enabled by default (see consist plugins).")
@click.option("--allow-outside", is_flag=True, help="Read CSV rows naming files outside DATASET too (../x.jpg, /abs/x.jpg); by default they are reported and skipped.")
@json_option
def audit_command(
    dataset: Path,
    out: Path,
    labels_csv: Path | None,
    path_column: str | None,
    label_column: str | None,
    labels_from_names: bool,
    name_pattern: str | None,
    store_uri: str | None,
    checkers: str | None,
    executor: str,
    workers: int | None,
    k: int | None,
    chunk_size: int | None,
    resume: bool,
    apply_: bool,
    fail_on_issues: bool,
    no_report: bool,
    features: str | None,
    retriever: str | None,
    device: str | None,
    generic_labels: tuple[str, ...],
    no_generic_detection: bool,
    min_confidence: float | None,
    min_witnesses: int | None,
    reporters: str | None,
    allow_outside: bool,
    as_json: bool,
) -> None:
    """Audit the labels of DATASET: flag the samples whose label the evidence
    contradicts, suggest the right one, and say how sure and why.

    DATASET is a folder of class sub-folders (DATASET/<label>/<image>), or any
    folder with --labels CSV, or any folder of images labelled by their file
    names (--labels-from-names). Leave-one-out: each image is verified against its
    retrieved neighbours by the installed checkers; images nothing can verify are
    reported as unverifiable, not as wrong. Unreadable images and bad CSV rows are
    reported (one line each, and in summary.json) and skipped.
    """
    from consist.audit import AuditConfig, audit
    from consist.datasets import NAME_PATTERN, DatasetError
    from consist.errors import ConsistError

    if name_pattern is not None and not labels_from_names:
        raise click.UsageError("--name-pattern needs --labels-from-names")
    if labels_from_names and labels_csv is not None:
        raise click.UsageError("give --labels CSV or --labels-from-names, not both")
    cfg = AuditConfig()
    if k is not None:
        cfg = cfg.with_options(k=k)
    if chunk_size is not None:
        cfg = cfg.with_options(chunk_size=chunk_size)
    if generic_labels:
        cfg = cfg.with_options(generic_labels=generic_labels)
    if no_generic_detection:
        cfg = cfg.with_options(detect_generic=False)
    if min_confidence is not None:
        cfg = cfg.with_options(min_confidence=min_confidence)
    if min_witnesses is not None:
        cfg = cfg.with_options(min_witnesses=min_witnesses)
    for name, value in (("features", features), ("retriever", retriever), ("device", device)):
        if value is not None:
            cfg = cfg.with_options(**{name: value})
    say = (lambda m: click.echo(safe(m), err=True)) if not as_json else (lambda m: click.echo(safe(m), err=True) if m.startswith("warning") else None)
    try:
        result = audit(
            dataset,
            out,
            labels=labels_csv,
            path_column=path_column,
            label_column=label_column,
            name_pattern=(name_pattern or NAME_PATTERN) if labels_from_names else None,
            store=store_uri,
            checkers=_checker_list(checkers),
            executor=executor,
            workers=workers,
            resume=resume,
            apply=apply_,
            config=cfg,
            report=not no_report,
            reporters=_checker_list(reporters),
            progress=True,
            say=say,
            allow_outside=allow_outside,
        )
    except (DatasetError, ConsistError) as exc:
        fail(str(exc))
    s = result.summary
    if as_json:
        emit_json({"summary": s, "flagged": [r for r in result.to_records() if r["flagged"]], "files": _files(out, s)})
    else:
        print_audit(result, out)
    c = s["counts"]
    if fail_on_issues and (c["flagged"] or c["suspect"] or c["near_duplicate_pairs"] or c["unreadable"]):
        sys.exit(1)


def _files(out: Path, s: dict[str, Any]) -> dict[str, str]:
    files = {name: str(out / name) for name in ("audit.csv", "audit.jsonl", "summary.json", "report.html") if (out / name).exists()}
    if s.get("applied"):
        files["labels.corrected.csv"] = s["applied"]["corrected_csv"]
    return files


def print_audit(result: Any, out: Path) -> None:
    """The human summary: counts, the most confident flags, where the files are."""
    s = result.summary
    c = s["counts"]
    ds = s["dataset"]
    click.echo(
        f"audited {c['samples']} images of {ds['labels']} labels in {safe(ds['csv'] or ds['root'])} in {s['timings']['total_s']:.1f} s ({s['executor']['kind']}, {s['executor']['workers']} workers; checkers: {', '.join(s['checkers'])})"
    )
    n_flagged = c["flagged"] + c["suspect"]
    click.echo(
        f"  {click.style(str(n_flagged) + ' flagged', fg='red' if n_flagged else 'green', bold=True)} ({c['flagged']} on verified evidence, {c['suspect']} suspect from retrieval only), "
        f"{c['ok']} confirmed, {c['plausible']} plausible (retrieval only), {c['unverifiable']} without neighbours, {c['unreadable']} unreadable"
    )
    for label, info in s["labels"]["generic"].items():
        where = ", ".join(f"{safe(k)} ({v})" for k, v in list(info["communities"].items())[:4])
        click.echo(
            f"  generic label {click.style(safe(label), fg='yellow')}: names no particular object ({info['connected']} of its images verify with others, {info['agreeing']} with its own label){'; its images show ' + where if where else ''}"
        )
    for pair in s["labels"]["same_object"]:
        a, b = pair["labels"]
        click.echo(f"  labels {safe(repr(a))} and {safe(repr(b))} look like one object: {pair['cross_links']} verified links between them")
    flagged = sorted(result.flagged, key=lambda r: (-(r.confidence or 0), r.sample))
    for r in flagged[:SHOWN]:
        sc = "" if r.suggestion_confidence is None else f", suggestion {r.suggestion_confidence:.2f}"
        click.echo(f"  {safe(r.sample)}: {click.style(safe(r.given_label), fg='red')} -> {click.style(safe(r.suggested_label), fg='green')}  (P(wrong) {r.confidence:.2f}{sc})  {safe(r.reason)}")
    if len(flagged) > SHOWN:
        click.echo(f"  ... and {len(flagged) - SHOWN} more in audit.csv")
    for a, b in s["near_duplicates"][:SHOWN]:
        click.echo(f"  near-duplicates with different labels: {safe(a)} and {safe(b)}")
    if s["singleton_labels"]:
        names = ", ".join(safe(n) for n in s["singleton_labels"][:10]) + (" ..." if len(s["singleton_labels"]) > 10 else "")
        click.echo(f"  {len(s['singleton_labels'])} labels have a single image (nothing of the same label can confirm it): {names}")
    if s["failures"]:
        click.echo(f"  {len(s['failures'])} problems with the input (listed in summary.json):")
        for f in s["failures"][:SHOWN]:
            click.echo(f"    {safe(f['message'])}")
    if s.get("applied"):
        a = s["applied"]
        click.echo(f"applied {a['changed']} corrections -> {safe(a['corrected_csv'])} (changes: {safe(a['changes_csv'])}; undo any with consist undo SEQ --store {safe(s['store'])})")
        if a.get("flagged_below_min_confidence"):
            click.echo(
                f"  {a['flagged_below_min_confidence']} flagged labels were left for review: P(wrong) or the suggestion's posterior is below --min-confidence {a['min_confidence']}, or fewer than {a['min_witnesses']} verified views carry the suggestion (--min-witnesses)"
            )
    report = out / "report.html"
    click.echo(f"report: {safe(report.resolve()) if report.exists() else '(not written)'}   table: {safe((out / 'audit.csv').resolve())}")


def register(group: click.Group) -> None:
    group.add_command(audit_command)
