"""``consist export``: the store's current labels as a CSV (the store is the one truth)."""

from __future__ import annotations

from pathlib import Path

import click

from consist.cli.common import emit_json, fail, json_option, open_store_or_fail, safe, store_option


@click.command("export")
@store_option
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="The CSV to write (path,label,<meta columns>).")
@json_option
def export_command(store_uri: str, out: Path, as_json: bool) -> None:
    """Write the store's current labels to a CSV: path,label and the samples' extra
    columns, one row per live sample (what --apply, consist correct, tell and undo
    left), ready for consist audit --labels."""
    from consist.audit.apply import export_labels

    if out.exists() and out.is_dir():
        fail(f"{out}: is a folder; give the CSV file to write")
    if not out.parent.exists():
        fail(f"{out.parent}: no such folder")
    store = open_store_or_fail(store_uri)
    try:
        result = export_labels(store, out)
    except OSError as exc:
        fail(f"{out}: cannot write ({exc.strerror or exc})")
    finally:
        store.close()
    result["store"] = store_uri
    if as_json:
        emit_json(result)
    else:
        click.echo(f"exported {result['samples']} samples ({result['labels']} labels) -> {safe(out)}")


def register(group: click.Group) -> None:
    group.add_command(export_command)
