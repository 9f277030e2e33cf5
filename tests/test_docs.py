"""Documentation cannot drift: hooks, commands and the README commands are checked."""

from __future__ import annotations

import re
from pathlib import Path

import click

from consist.cli.main import _add_plugin_commands, cli
from consist.contracts import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def _hookspec_names() -> list[str]:
    return sorted(n for n, f in vars(hookspecs).items() if n.startswith("consist_") and callable(f))


def test_every_hookspec_is_documented_in_plugins_md():
    text = (ROOT / "docs" / "plugins.md").read_text()
    headings = set(re.findall(r"^### (consist_\w+)\s*$", text, flags=re.M))
    missing = [n for n in _hookspec_names() if n not in headings]
    assert not missing, f"hookspecs without a '### name' section in docs/plugins.md: {missing}"
    stale = headings - set(_hookspec_names())
    assert not stale, f"docs/plugins.md documents hooks that do not exist: {stale}"


def test_contract_reference_in_plugins_md_is_generated_from_the_contracts():
    """docs/plugins.md's reference block lists every protocol member with its real
    signature: a changed signature without regenerated docs fails here."""
    from consist.contracts.reference import END, START, render

    text = (ROOT / "docs" / "plugins.md").read_text()
    assert START in text and END in text
    block = START + text.split(START, 1)[1].split(END, 1)[0] + END
    assert block == render(), "run: python -m consist.contracts.reference docs/plugins.md"


def test_every_contract_export_is_in_the_reference_or_a_hook():
    import consist.contracts as contracts
    from consist.contracts.reference import render

    ref = render()
    documented = {name for name in contracts.__all__ if f".{name}`" in ref}
    helpers = {"DEFAULT_TIMEOUT_S", "MAX_DRAWN_MATCHES", "PAIRS_KEY", "Abstain", "Progress", "hookimpl", "hookspec", "pairs_in_votes"}
    text = (ROOT / "docs" / "plugins.md").read_text()
    missing = [n for n in contracts.__all__ if n not in documented and not (n in helpers and n in text)]
    assert not missing, f"contract names documented nowhere in docs/plugins.md: {missing}"


def _commands(group: click.Group, prefix: str = "consist") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            out += _commands(cmd, full)
        else:
            out.append(full)
    return out


def test_every_cli_command_is_documented_in_cli_md():
    _add_plugin_commands()
    text = (ROOT / "docs" / "cli.md").read_text()
    headings = set(re.findall(r"^## (consist [\w ]+?)\s*$", text, flags=re.M))
    missing = [c for c in _commands(cli) if c not in headings]
    assert not missing, f"commands without a '## consist ...' section in docs/cli.md: {missing}"


def test_commands_that_print_results_offer_json():
    _add_plugin_commands()

    def walk(group):
        for cmd in group.commands.values():
            if isinstance(cmd, click.Group):
                yield from walk(cmd)
            else:
                yield cmd

    for cmd in walk(cli):
        assert "as_json" in {p.name for p in cmd.params}, f"{cmd.name} has no --json"


def _quick_start_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:sh|bash|shell|console)\n(.*?)```", section, flags=re.S)


def test_readme_quick_start_has_two_one_line_commands_and_ci_runs_the_test_one():
    assert (ROOT / "README.md").read_text().lstrip().startswith("# consist")
    blocks = _quick_start_blocks()
    assert len(blocks) == 2
    assert all(len(b.strip().splitlines()) == 1 for b in blocks)
    demo, tests = (b.strip() for b in blocks)
    assert demo.endswith("consist demo") and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci


def test_every_image_the_docs_show_exists():
    """docs/review.md's screenshots are taken by tests/test_review_browser.py; a page
    that is renamed or removed must not leave a broken picture."""
    missing = []
    for md in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text()):
            if "://" not in target and not (md.parent / target).is_file():
                missing.append(f"{md.name}: {target}")
    assert not missing, missing
    assert "img/review-queue.png" in (ROOT / "docs" / "review.md").read_text()
