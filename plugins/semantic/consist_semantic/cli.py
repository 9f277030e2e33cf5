"""``consist tell`` and ``consist ask`` (registered through ``consist_register_commands``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consist.cli.common import emit_json, fail, json_option, open_store_or_fail, store_option
from consist.errors import ConsistError
from consist.records import to_dict

if TYPE_CHECKING:
    from consist import Store


def _backend(use_lmm: bool) -> Any:
    """The configured LMM, or ``None`` (not configured, or ``--no-lmm``)."""
    if not use_lmm:
        return None
    from consist_semantic.backends import LMMUnavailable, backend_from_env, configured_in_env

    try:
        return backend_from_env()
    except LMMUnavailable as exc:
        if configured_in_env():  # configured, but wrongly: say so rather than ignore it
            fail(f"{exc} (or use --no-lmm)")
        return None


def _target_for_image(store: Store, path: str, embedder: str) -> tuple[str, str | None]:
    """The sample id of an image file: the stored sample with that file, or a new id
    (the pixels' hash) with the file's path to add it with."""
    from consist.images import image_id, load_image

    p = Path(path)
    if not p.is_file():
        fail(f"{path}: no such file")
    uri = str(p.resolve())
    for s in store.samples():
        if s.uri in (uri, path):
            return s.id, None
    try:
        return image_id(load_image(uri)), uri
    except ConsistError as exc:
        fail(str(exc))
    raise AssertionError  # pragma: no cover


@click.command("tell")
@click.argument("sentence")
@store_option
@click.option("--sample", "sample_id", default=None, help="The sample the sentence is about.")
@click.option("--image", "image_path", default=None, type=click.Path(), help="Or the image file it is about (added to the store when new).")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Apply without asking.")
@click.option("--dry-run", is_flag=True, help="Show the actions only.")
@click.option("--lmm/--no-lmm", "use_lmm", default=True, show_default=True, help="Let the configured LMM parse free text (else: the grammar).")
@click.option("--embedder", default="tiny", show_default=True, help="Embedder for an image added to the store.")
@json_option
def tell_command(sentence: str, store_uri: str, sample_id: str | None, image_path: str | None, assume_yes: bool, dry_run: bool, use_lmm: bool, embedder: str, as_json: bool) -> None:
    """Tell consist something about an image, in words.

    "this is my mug", "that's the Radcliffe Camera, not the Bodleian", "call the blue
    one Bluey", "note: taken from the roof", "its colour is blue". The actions
    (relabel, alias, note, attribute; user provenance) are shown before they are
    applied; each is undoable with `consist undo`.
    """
    from consist_semantic.conversation import FeedbackError, apply_plan, understand

    if sample_id and image_path:
        raise click.UsageError("give --sample or --image, not both")
    store = open_store_or_fail(store_uri)
    new_image: tuple[str, str] | None = None  # (sample id, file) of an image not in the store yet
    if image_path:
        sample_id, uri = _target_for_image(store, image_path, embedder)
        if uri is not None:
            new_image = (sample_id, uri)
    target = store.get(sample_id) if sample_id else None
    if sample_id and target is None and new_image is None:
        fail(f"{store.uri}: no sample {sample_id!r}")
    backend = _backend(use_lmm)
    if new_image is not None:  # a new image: the plan is made about an unlabelled sample
        from consist.records import Sample

        target = Sample(new_image[0], uri=new_image[1])
    try:
        plan = understand(sentence, store, target, backend=backend)
    except FeedbackError as exc:
        fail(str(exc))
        return
    if not as_json:
        click.echo(f"understood ({plan.parser}):")
        for line in plan.describe():
            click.echo(f"  {line}")
        for w in plan.warnings:
            click.echo(f"  warning: {w}")
    applied: list[Any] = []
    # --json never prompts: without --yes it is a dry run
    if not dry_run and plan.actions and (assume_yes or (not as_json and click.confirm("apply?", default=True))):
        with store.transaction():  # the new image and the actions: all or nothing
            if new_image is not None:
                _add_image(store, new_image[0], new_image[1], embedder)
            applied = apply_plan(store, plan)
    if as_json:
        emit_json({"plan": plan.to_dict(), "applied": [to_dict(e) for e in applied], "dry_run": dry_run or not assume_yes})
        return
    for e in applied:
        click.echo(f"#{e.seq} {e.action} {e.sample_id} (undo with: consist undo {e.seq})")
    if not applied:
        click.echo("nothing applied")


def _add_image(store: Store, sample_id: str, uri: str, embedder: str) -> None:
    from consist import plugins
    from consist.images import load_image
    from consist.records import Provenance, Sample

    emb = plugins.embedders()[embedder].embed(load_image(uri)) if embedder else None
    store.put([Sample(sample_id, uri=uri, provenance=Provenance.USER, embedding=emb)], reason="told about a new image")


@click.command("ask")
@click.argument("image", type=click.Path())
@click.argument("question")
@store_option
@click.option("--k", default=8, show_default=True, help="Neighbours to retrieve and verify.")
@click.option("--embedder", default="tiny", show_default=True, help="Embedder used to retrieve the neighbours.")
@click.option("--context-only", is_flag=True, help="Show the verified context and the prompt; do not call the LMM.")
@click.option("--time-limit", default=10.0, show_default=True, type=float, help="Seconds each checker may take to verify the neighbours (a slower one is left out of the context).")
@json_option
def ask_command(image: str, question: str, store_uri: str, k: int, embedder: str, context_only: bool, time_limit: float, as_json: bool) -> None:
    """Ask a question about IMAGE, answered with what the store verifiably knows.

    Neighbours are retrieved and verified by the cheaper checkers; the LMM gets the
    image, their labels, aliases, notes and provenance, and the question. The
    answer lists the neighbours it relied on.
    """
    from consist_semantic.backends import LMMUnavailable, backend_from_env
    from consist_semantic.grounded import ask

    if not Path(image).is_file():
        fail(f"{image}: no such file")
    if not (math.isfinite(time_limit) and time_limit > 0):
        fail(f"--time-limit must be a positive number of seconds, got {time_limit!r}")
    store = open_store_or_fail(store_uri)
    backend = None
    if not context_only:
        try:
            backend = backend_from_env()
        except LMMUnavailable as exc:
            fail(f"{exc} (or use --context-only)")
    result = ask(store, image, question, backend=backend, k=k, embedder=embedder, time_limit=time_limit)
    if as_json:
        emit_json(result.to_dict())
        return
    if result.answer is not None:
        click.echo(result.answer)
        click.echo("")
    click.echo(f"most likely {result.label!r} ({result.confidence:.2f}); relied on:")
    for c in result.context:
        click.echo(f"  {c.line()[2:]}")
    if not result.context:
        click.echo("  (no matching image in the store)")
    if result.incomplete:
        click.echo("note: verification incomplete: " + "; ".join(result.incomplete))
    if context_only:
        click.echo("\nprompt:\n" + result.prompt)


def register(cli: click.Group) -> None:
    cli.add_command(tell_command)
    cli.add_command(ask_command)
