"""Plugin discovery through entry points, the kill switch, registration and hookspecs."""

from __future__ import annotations

import pytest

import consist
from consist import plugins

CHECKER_PLUGIN = """
import consist

class Always(consist.BaseChecker):
    name = "always-dog"
    cost = 0.01
    def check(self, prediction, neighbours, context):
        return [self.vote("dog", 0.99, 1.0, why="test")]

@consist.hookimpl
def consist_register_checkers(register):
    register(Always())
"""


def test_builtin_defaults_always_load(monkeypatch):
    monkeypatch.setenv("CONSIST_PLUGINS", "none")
    names = [i.name for i in plugins.plugin_infos()]
    assert "consist.builtin.defaults" in names
    assert "knn" in plugins.checkers()
    assert {"sqlite", "memory"} <= set(plugins.store_openers())


def test_entry_point_plugin_is_discovered_and_votes(install_plugin):
    install_plugin("consist_test_dog", CHECKER_PLUGIN)
    infos = {i.name: i for i in plugins.plugin_infos()}
    assert "consist_test_dog" in infos
    info = infos["consist_test_dog"]
    assert info.version == "1.0" and info.distribution == "consist-test-dog"
    assert info.hooks == ("consist_register_checkers",)
    assert info.checkers == ("always-dog",)
    # its votes change a decision
    q = consist.Query("q")
    p = consist.Prediction(q, [consist.Candidate("cat", 0.6), consist.Candidate("dog", 0.3)])
    d = consist.Engine(["always-dog"]).verify(p, [])
    assert d.label == "dog" and d.changed


@pytest.mark.parametrize("value", ["", "none", "0"])
def test_kill_switch_none(install_plugin, monkeypatch, value):
    install_plugin("consist_test_dog", CHECKER_PLUGIN)
    monkeypatch.setenv("CONSIST_PLUGINS", value)
    assert "always-dog" not in plugins.checkers()
    assert "consist_test_dog" not in [i.name for i in plugins.plugin_infos()]


def test_kill_switch_allow_list(install_plugin, monkeypatch):
    install_plugin("consist_test_dog", CHECKER_PLUGIN)
    install_plugin("consist_test_other", CHECKER_PLUGIN.replace("always-dog", "always-other").replace("Always", "Other"))
    monkeypatch.setenv("CONSIST_PLUGINS", "consist-test-other")  # distribution name works too
    found = plugins.checkers()
    assert "always-other" in found and "always-dog" not in found


def test_misspelt_hook_fails_loudly(install_plugin):
    install_plugin(
        "consist_test_typo",
        """
import consist
@consist.hookimpl
def consist_register_checker(register):  # missing "s"
    pass
""",
    )
    with pytest.raises(consist.PluginError, match=r"plugin 'consist_test_typo' .*consist_register_checker.*CONSIST_PLUGINS") as err:
        plugins.get_plugin_manager()
    assert "<module" not in str(err.value)  # named by its entry point, not a module repr


def test_broken_import_names_the_plugin(install_plugin):
    install_plugin("consist_test_broken", "raise RuntimeError('boom at import')\n")
    with pytest.raises(consist.PluginError, match=r"consist_test_broken.*boom at import"):
        plugins.get_plugin_manager()


def test_duplicate_checker_names_are_refused(install_plugin):
    install_plugin("consist_test_dup", CHECKER_PLUGIN.replace("always-dog", "knn"))
    with pytest.raises(consist.PluginError, match="two checkers are registered as 'knn'"):
        plugins.checkers()


def test_plugin_adds_its_own_hookspecs(install_plugin):
    install_plugin(
        "consist_test_spec",
        """
import sys, types
import consist

specs = types.ModuleType("consist_test_spec_specs")
@consist.hookspec
def consist_test_backends(register):
    "Register test backends."
specs.consist_test_backends = consist_test_backends

@consist.hookimpl
def consist_addhookspecs(pluginmanager):
    pluginmanager.add_hookspecs(specs)

@consist.hookimpl
def consist_test_backends(register):
    register("from-spec-plugin")
""",
    )
    pm = plugins.get_plugin_manager()
    got = []
    pm.hook.consist_test_backends(register=got.append)
    assert got == ["from-spec-plugin"]


def test_store_scheme_registered_by_plugin(install_plugin, tmp_path):
    install_plugin(
        "consist_test_store",
        f"""
import consist
from consist.stores.sqlite import SQLiteStore

@consist.hookimpl
def consist_register_stores(register):
    register("teststore", lambda uri, **kw: SQLiteStore({str(tmp_path / "x.db")!r}, uri=uri))
""",
    )
    s = consist.open_store("teststore://anything")
    assert s.uri == "teststore://anything"
    with pytest.raises(consist.StoreError, match="no store for the URI scheme 'nosuch'"):
        consist.open_store("nosuch://x")


def test_every_hookspec_is_typed_and_has_a_docstring():
    import inspect

    from consist.contracts import hookspecs

    specs = [f for name, f in vars(hookspecs).items() if name.startswith("consist_") and callable(f)]
    assert len(specs) >= 10
    for f in specs:
        assert (f.__doc__ or "").strip(), f"{f.__name__} has no docstring"
        sig = inspect.signature(f)
        for p in sig.parameters.values():
            assert p.annotation is not inspect.Parameter.empty, f"{f.__name__}({p.name}) is untyped"


def test_unknown_names_in_kill_switch_are_reported(install_plugin, monkeypatch):
    from structlog.testing import capture_logs

    install_plugin("consist_test_dog", CHECKER_PLUGIN)
    monkeypatch.setenv("CONSIST_PLUGINS", "colour")
    with capture_logs() as logs:
        plugins.get_plugin_manager()
    warned = [e for e in logs if e["event"] == "unknown_plugin_names"]
    assert warned and warned[0]["unknown"] == ["colour"] and "consist_test_dog" in warned[0]["installed"]
    with pytest.raises(consist.ConsistError, match="CONSIST_PLUGINS='colour' limits which plugins load"):
        consist.Engine(["always-dog"])
