"""``consist correct``: a person's correction of a sample (label and/or region)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from consist.cli.common import emit_json, fail, json_option, open_store_or_fail, safe, store_option
from consist.records import Region, to_dict


def parse_box(text: str) -> Region:
    try:
        parts = [float(p) for p in text.split(",")]
        return Region(box=tuple(parts))  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(f"{text!r}: expected x0,y0,x1,y1 with x1 > x0 and y1 > y0 ({exc})") from exc


def parse_polygon_file(path: str) -> Region:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise click.BadParameter(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{path}: not a JSON polygon ({exc})") from exc
    pts = data.get("polygon", data) if isinstance(data, dict) else data
    try:
        return Region(polygon=tuple((float(x), float(y)) for x, y in pts))
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(f"{path}: expected [[x, y], ...] with at least 3 points ({exc})") from exc


@click.command("correct")
@click.argument("sample_id")
@click.argument("label", required=False)
@store_option
@click.option("--box", default=None, metavar="x0,y0,x1,y1", help="Region of the object, in pixels.")
@click.option("--polygon", "polygon_file", default=None, metavar="FILE", help="JSON file [[x,y],...] outlining the object.")
@click.option("--image", "uri", default=None, help="Image path, when the sample is not in the store yet.")
@click.option("--reason", default="user feedback", show_default=True)
@json_option
def correct_command(sample_id: str, label: str | None, store_uri: str, box: str | None, polygon_file: str | None, uri: str | None, reason: str, as_json: bool) -> None:
    """Correct SAMPLE_ID: set its LABEL and/or the region showing the object.

    User corrections have the highest trust: no automatic change overwrites them.
    """
    from consist.adapt import correct

    if box and polygon_file:
        raise click.UsageError("give --box or --polygon, not both")
    try:
        region = parse_box(box) if box else parse_polygon_file(polygon_file) if polygon_file else None
    except click.BadParameter as exc:
        fail(f"{'--box' if box else '--polygon'}: {exc.message}")
    if label is None and region is None:
        raise click.UsageError("give a LABEL, a --box/--polygon, or both")
    store = open_store_or_fail(store_uri)
    if uri is not None:
        from consist.errors import ImageError
        from consist.images import load_image

        try:
            load_image(uri)  # a folder, a device, a text file or a broken image is refused here
        except ImageError as exc:
            fail(f"--image {exc}")
    entries = correct(store, sample_id, label, region=region, uri=uri, reason=reason)
    if as_json:
        emit_json([to_dict(e) for e in entries])
    elif not entries:
        click.echo(f"{safe(sample_id)}: nothing changed")
    else:
        for e in entries:
            click.echo(f"#{e.seq} {e.action} {safe(e.sample_id)} (user)")


def register(group: click.Group) -> None:
    group.add_command(correct_command)
