"""``consist history`` and ``consist undo``: every change of the store, reversible."""

from __future__ import annotations

import datetime as _dt

import click

from consist.cli.common import emit_json, json_option, open_store_or_fail, safe, store_option
from consist.records import HistoryEntry, to_dict


def _describe(e: HistoryEntry) -> str:
    b = e.before or {}
    a = e.after or {}
    if e.action in ("add",):
        what = f"label {a.get('label')!r}"
    elif e.action in ("relabel", "update", "undo"):
        what = f"{b.get('label')!r} -> {a.get('label')!r}" if b.get("label") != a.get("label") else "fields updated"
        if e.action == "undo":
            what = f"undo of #{e.undoes}: " + what
    elif e.action == "region":
        what = "region set" if a.get("region") else "region cleared"
    elif e.action == "delete":
        what = "deleted"
    elif e.action == "conflict":
        what = "refused (higher-trust label kept)"
    elif e.action == "alias":
        what = f"{a.get('name')!r} -> {a.get('label')!r}" if a else f"alias {b.get('name')!r} removed"
    else:
        what = e.action
    return what


@click.command("history")
@store_option
@click.option("--sample", "sample_id", default=None, help="Only this sample's changes.")
@click.option("--limit", default=50, show_default=True, help="How many entries (0: all).")
@click.option("--oldest-first", is_flag=True, help="Chronological order.")
@json_option
def history_command(store_uri: str, sample_id: str | None, limit: int, oldest_first: bool, as_json: bool) -> None:
    """Show the store's changes, newest first: what changed, who said so, why."""
    store = open_store_or_fail(store_uri)
    entries = store.history(sample_id=sample_id, limit=limit or None, newest_first=not oldest_first)
    if as_json:
        emit_json([to_dict(e) for e in entries])
        return
    if not entries:
        click.echo("no changes recorded")
        return
    for e in entries:
        when = _dt.datetime.fromtimestamp(e.ts, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        flag = f"  [undone by #{e.undone_by}]" if e.undone_by else ""
        click.echo(f"#{e.seq:<6} {when}  {e.action:<8} {e.provenance.value:<6} {safe(e.sample_id)}  {safe(_describe(e))}{flag}")
        if e.reason:
            click.echo(f"        {safe(e.reason)}")


def last_undoable(entries: list[HistoryEntry]) -> int | None:
    """The entry ``undo --last`` reverts: it steps back through history.

    The newest change (not an undo, not a refused ``conflict``) that is still in
    effect is reverted; undo entries are skipped, so repeating ``--last`` goes on
    back instead of redoing what the previous ``--last`` undid. A change that was
    undone and redone (its undo undone) is in effect: the newest undo of its chain
    is the one reverted. ``None`` when nothing is left.
    """
    by_seq = {e.seq: e for e in entries}

    def in_effect(e: HistoryEntry) -> bool:
        depth = 0  # undone, redone, undone, ...: in effect after an even number of undos
        while e.undone_by is not None and e.undone_by in by_seq:
            e = by_seq[e.undone_by]
            depth += 1
        return depth % 2 == 0

    for e in sorted(entries, key=lambda x: -x.seq):
        if e.action in ("undo", "conflict") or not in_effect(e):
            continue
        tail = e
        while tail.undone_by is not None and tail.undone_by in by_seq:
            tail = by_seq[tail.undone_by]
        return tail.seq
    return None


@click.command("undo")
@click.argument("seq", type=int, required=False)
@store_option
@click.option("--last", is_flag=True, help="Undo the newest change that is still in effect.")
@click.option("--force", is_flag=True, help="Undo even if the sample changed again later.")
@json_option
def undo_command(seq: int | None, store_uri: str, last: bool, force: bool, as_json: bool) -> None:
    """Revert history entry SEQ (see `consist history`); the undo is itself recorded."""
    store = open_store_or_fail(store_uri)
    if seq is None:
        if not last:
            raise click.UsageError("give a history entry number, or --last")
        seq = last_undoable(store.history(limit=None))
        if seq is None:
            raise click.UsageError("nothing to undo")
    entry = store.undo(seq, force=force)
    if as_json:
        emit_json(to_dict(entry))
    else:
        click.echo(f"#{entry.seq} undid #{seq}: {safe(entry.sample_id)} {safe(_describe(entry))}")


def register(group: click.Group) -> None:
    group.add_command(history_command)
    group.add_command(undo_command)
