"""Entry point of the ``consist`` command.

Exit codes: 0 success; 1 the command ran and found problems (only where a command
documents it, e.g. ``--fail-on-issues``); 2 bad invocation or bad input (one-line
``error:`` message on stderr).
"""

from __future__ import annotations

import sys

import click

from consist import __version__
from consist.errors import ConsistError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="consist")
@click.option("--log-json", is_flag=True, help="Log as JSON lines on stderr (for log collectors).")
@click.option("--log-level", default="WARNING", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False), help="Minimum level of log events.")
@click.option("-v", "--verbose", count=True, help="Shortcut: -v for INFO, -vv for DEBUG.")
def cli(log_json: bool, log_level: str, verbose: int) -> None:
    """consist: self-correcting visual recognition.

    Checkers (geometric, topological, semantic) verify a recognizer's predictions
    against the neighbours in a store, correct them, and feed verified samples back.
    """
    from consist.logs import configure_logging

    level = {0: log_level, 1: "INFO"}.get(verbose, "DEBUG") if verbose else log_level
    configure_logging(level, json=log_json)


def _add_commands(group: click.Group) -> None:
    from consist.cli import audit_cmd, demo, export_cmd, feedback, history, plugins_cmd, review_cmd, store_cmd

    for mod in (plugins_cmd, history, feedback, store_cmd, export_cmd, audit_cmd, review_cmd, demo):
        mod.register(group)


_add_commands(cli)
_plugin_commands_added = False


def _add_plugin_commands() -> None:
    global _plugin_commands_added
    if _plugin_commands_added:
        return
    _plugin_commands_added = True
    from consist.plugins import get_plugin_manager

    get_plugin_manager().hook.consist_register_commands(cli=cli)


def _early_logging(args: list[str]) -> None:
    """Apply the global log options before plugin discovery, which may already log;
    the group callback applies them again, validated, once click has parsed them."""
    from consist.logs import configure_logging

    head = args[: next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))]
    verbose = sum(a.count("v") for a in head if a.startswith("-v") and set(a[1:]) == {"v"}) + head.count("--verbose")
    level = "WARNING"
    for i, a in enumerate(head):
        if a == "--log-level" and i + 1 < len(args):
            level = args[i + 1]
        elif a.startswith("--log-level="):
            level = a.split("=", 1)[1]
    level = {0: level, 1: "INFO"}.get(verbose, "DEBUG")
    try:
        configure_logging(level, json="--log-json" in head)
    except ValueError:
        configure_logging("WARNING", json="--log-json" in head)


def _exit_interrupted() -> None:
    """Exit 130 at once after Ctrl-C / SIGTERM. What must survive is on disk already
    (the journal is fsynced per record, stores are closed by the commands' own
    ``finally``); interpreter finalisation with native libraries' threads (faiss,
    OpenCV, torch) still winding down crashed once in CI ("corrupted double-linked
    list", SIGABRT instead of 130), so it is skipped."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: errors become one line and exit code 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    _early_logging(args)
    from consist.audit.executors import sigterm_as_interrupt

    sigterm_as_interrupt()  # kill -TERM stops like Ctrl-C: workers stopped, exit 130
    try:
        _add_plugin_commands()
        cli.main(args=args, prog_name="consist", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        _exit_interrupted()
    except ConsistError as exc:
        from consist.cli.common import safe

        click.echo(f"error: {safe(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        _exit_interrupted()
    except OSError as exc:  # a full disk, a read-only file system, a vanished file: one line naming the file
        import errno

        from consist.cli.common import safe

        where = f"{exc.filename}: " if exc.filename else ""
        what = "the disk is full (no space left on device)" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        click.echo(f"error: {safe(where + what)}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
