"""``consist plugins``: what is loaded, from where, implementing which hooks."""

from __future__ import annotations

import click

from consist.cli.common import emit_json, json_option


@click.command("plugins")
@json_option
@click.option("--all", "show_all", is_flag=True, help="Include consist's built-in default plugins.")
def plugins_command(as_json: bool, show_all: bool) -> None:
    """List loaded plugins: name, version, hooks, and what they register.

    Set CONSIST_PLUGINS to limit which plugins load ("" or "none" for none).
    """
    from consist.plugins import plugin_infos

    infos = [i for i in plugin_infos() if show_all or not i.builtin]
    if as_json:
        emit_json(
            [
                {
                    "name": i.name,
                    "version": i.version,
                    "distribution": i.distribution,
                    "builtin": i.builtin,
                    "hooks": list(i.hooks),
                    "checkers": list(i.checkers),
                    "checker_descriptions": dict(i.descriptions),
                    "retrievers": list(i.retrievers),
                    "embedders": list(i.embedders),
                    "reporters": list(i.reporters),
                }
                for i in infos
            ]
        )
        return
    if not infos:
        click.echo("no plugins loaded (use --all to see the built-in defaults)")
        return
    for i in infos:
        click.echo(f"{i.name} {i.version or ''}".rstrip() + (f"  ({i.distribution})" if i.distribution and i.distribution != i.name else ""))
        click.echo(f"  hooks:      {', '.join(i.hooks) or '-'}")
        descriptions = dict(i.descriptions)
        for c in i.checkers:
            click.echo(f"  checker:    {c}" + (f" - {descriptions[c]}" if descriptions.get(c) else ""))
        for kind, names in (("retriever", i.retrievers), ("embedder", i.embedders), ("reporter", i.reporters)):
            if names:
                click.echo(f"  {kind + 's:':<12}{', '.join(names)}")


def register(group: click.Group) -> None:
    group.add_command(plugins_command)
