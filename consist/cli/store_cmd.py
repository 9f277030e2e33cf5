"""``consist store``: look inside a store."""

from __future__ import annotations

import click

from consist.cli.common import emit_json, json_option, open_store_or_fail, store_option


@click.group("store")
def store_group() -> None:
    """Inspect a store."""


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


def register(group: click.Group) -> None:
    group.add_command(store_group)
