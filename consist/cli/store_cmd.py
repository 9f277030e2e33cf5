"""``consist store``: look inside a store, copy it to another back-end."""

from __future__ import annotations

import time

import attrs
import click

from consist.cli.common import emit_json, fail, json_option, open_store_or_fail, safe, store_option
from consist.errors import ConsistError


@click.group("store")
def store_group() -> None:
    """Inspect a store, or copy it to another back-end."""


@store_group.command("info")
@store_option
@json_option
def info_command(store_uri: str, as_json: bool) -> None:
    """Counts of samples, labels, embeddings, history and cached artefacts."""
    store = open_store_or_fail(store_uri)
    stats = store.stats() if hasattr(store, "stats") else {"uri": store.uri, "samples": len(store)}
    labels = store.labels()
    if as_json:
        emit_json({**stats, "per_label": labels})
        return
    for key, value in stats.items():
        click.echo(f"{key:<11} {value}")
    if labels:
        click.echo("per label:")
        for label, n in labels.items():
            click.echo(f"  {label:<30} {n}")


class _Progress:
    """Progress on stderr, at most once per ``every_s`` seconds (default 1), so that
    a long copy shows it is alive without flooding a log."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def __call__(self, what: str, n: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            click.echo(f"copying: {n} {what}", err=True)


@store_group.command("copy")
@click.argument("src", metavar="SRC")
@click.argument("dst", metavar="DST")
@json_option
def copy_command(src: str, dst: str, as_json: bool) -> None:
    """Copy everything from store SRC into the new or empty store DST, between any
    back-ends (sqlite:///a.db -> postgresql://user@host/db and back): samples with
    their deleted flags, embeddings, regions and meta, artefacts, aliases, and the
    whole history with its sequence numbers (``consist undo N`` works in the copy).
    A non-empty DST is refused."""
    from consist.stores.copy import copy_store
    from consist.stores.uri import open_store

    source = open_store_or_fail(src)
    try:
        target = open_store(dst, create=True)
    except ConsistError as exc:
        source.close()
        fail(str(exc))
    try:
        result = copy_store(source, target, progress=_Progress())
    except ConsistError as exc:
        fail(str(exc))
    finally:
        source.close()
        target.close()
    if as_json:
        emit_json(attrs.asdict(result))
        return
    click.echo(
        f"copied {result.samples} samples (+{result.deleted} deleted, {result.embeddings} embeddings), "
        f"{result.history} history entries (last #{result.last_seq}), {result.artefacts} artefacts, {result.aliases} aliases "
        f"from {safe(result.source)} to {safe(result.destination)} in {result.seconds:.1f} s"
    )


def register(group: click.Group) -> None:
    group.add_command(store_group)
