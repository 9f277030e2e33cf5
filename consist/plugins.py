"""Plugin discovery, the kill switch, and the registries built from registration hooks.

consist's own defaults (``consist.builtin``) are plugins too and always load; third
party and first-party plugins come from the entry-point group ``consist``. The
environment variable ``CONSIST_PLUGINS`` limits which entry points load:

* unset: all installed plugins;
* empty, ``none`` or ``0``: none (only the built-in defaults);
* ``spatial,my-plugin``: only those (matched against the entry-point name and the
  distribution name).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from consist.contracts import hookspecs
from consist.errors import PluginError

if TYPE_CHECKING:
    from consist.contracts.checker import Checker
    from consist.contracts.features import ExtractorFactory, FeatureExtractor, FeatureSpec
    from consist.contracts.feedback import FeedbackInterpreter
    from consist.contracts.reporter import Reporter
    from consist.contracts.retrieval import Embedder, Reranker, Retriever
    from consist.contracts.store import StoreOpener

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "PluginInfo",
    "checkers",
    "embedders",
    "extractors",
    "get_plugin_manager",
    "interpreters",
    "make_extractor",
    "plugin_infos",
    "reporters",
    "rerankers",
    "reset_plugins",
    "retrievers",
    "store_openers",
]

ENTRY_POINT_GROUP = "consist"
ENV_VAR = "CONSIST_PLUGINS"
BUILTIN_PLUGINS = (
    "consist.builtin.defaults",
    "consist.builtin.stores",
    "consist.builtin.checkers",
    "consist.builtin.retrieval",
    "consist.builtin.reporters",
)

_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
#: entry-point name -> (distribution, version) of the loaded plugins
_dists: dict[str, tuple[str, str | None]] = {}


@attrs.frozen
class PluginInfo:
    """What ``consist plugins`` shows about one loaded plugin."""

    name: str
    version: str | None
    distribution: str | None
    builtin: bool
    hooks: tuple[str, ...]
    checkers: tuple[str, ...] = ()
    retrievers: tuple[str, ...] = ()
    embedders: tuple[str, ...] = ()
    reporters: tuple[str, ...] = ()
    rerankers: tuple[str, ...] = ()
    extractors: tuple[str, ...] = ()
    #: checker name -> its one-line ``description``
    descriptions: tuple[tuple[str, str], ...] = ()


def _allowed_names() -> set[str] | None:
    """Names the kill switch allows, or ``None`` for all."""
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    raw = raw.strip()
    if raw.lower() in ("", "none", "0", "false"):
        return set()
    return {part.strip() for part in raw.split(",") if part.strip()}


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def _make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("consist")
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
    allowed = _allowed_names()
    eps = list(_entry_points())
    if allowed:
        known = {ep.name for ep in eps} | {ep.dist.name for ep in eps if ep.dist is not None}
        unknown = sorted(allowed - known)
        if unknown:
            import structlog

            structlog.get_logger("consist.plugins").warning("unknown_plugin_names", env=ENV_VAR, unknown=unknown, installed=sorted(ep.name for ep in eps))
    for ep in eps:
        dist = ep.dist.name if ep.dist is not None else None
        if allowed is not None and ep.name not in allowed and (dist is None or dist not in allowed):
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # one broken plugin must be named, not a traceback
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc} (set {ENV_VAR} to load only the plugins you need)") from exc
        pm.register(plugin, name=ep.name)
        if ep.dist is not None:
            _dists[ep.name] = (ep.dist.name, ep.dist.version)
    pm.hook.consist_addhookspecs.call_historic(kwargs={"pluginmanager": pm})
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) if getattr(exc, "plugin", None) is not None else None
        who = f"plugin {name!r}" + (f" (distribution {_dists[name][0]})" if name in _dists else "") if name else "a plugin"
        detail = str(exc).split(" in plugin ")[0]
        raise PluginError(f"{who} implements a hook that does not exist: {detail} (a typo? set {ENV_VAR} to leave the plugin out)") from exc
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created (and plugins discovered) on first use."""
    global _pm
    with _lock:
        if _pm is None:
            _pm = _make_manager()
        return _pm


def reset_plugins() -> None:
    """Forget the plugin manager: the next use rediscovers plugins (tests, notebooks)."""
    global _pm
    with _lock:
        _pm = None


# -------------------------------------------------------------------- registries


def _gather(pm: pluggy.PluginManager | None, what: str, hook_name: str, named: bool) -> dict[str, Any]:
    """Call a registration hook of every plugin (built-ins first) and collect what they
    register, by name; two of one name is an error naming both plugins. ``named``:
    the hook registers ``(name, factory)`` pairs (stores, extractors), else objects
    with a ``name``."""
    pm = pm or get_plugin_manager()
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    current = ""

    def register(*args: Any) -> None:
        if named:
            name, obj = str(args[0]), args[1]
            name = name.lower().rstrip(":/") if what == "store" else name
        else:
            obj = args[0]
            name = getattr(obj, "name", "")
        if not name:
            raise PluginError(f"plugin {current!r} registered a {what} without a name: {obj!r}")
        if name in found:
            raise PluginError(f"two {what}s are registered as {name!r}: {found[name]!r} (plugin {owners[name]!r}) and {obj!r} (plugin {current!r})")
        found[name] = obj
        owners[name] = current

    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # registration order, built-ins first
        current = impl.plugin_name
        impl.function(register=register)
    _owners[what] = owners
    return found


def _collect(pm: pluggy.PluginManager | None, what: str) -> dict[str, Any]:
    """Call ``consist_register_<what>s`` of every plugin; name -> object, names unique."""
    return _gather(pm, what, f"consist_register_{what}s", named=False)


_owners: dict[str, dict[str, str]] = {}


def checkers(pm: pluggy.PluginManager | None = None) -> dict[str, Checker]:
    """All registered checkers by name."""
    return _collect(pm, "checker")


def retrievers(pm: pluggy.PluginManager | None = None) -> dict[str, Retriever]:
    """All registered retrievers by name."""
    return _collect(pm, "retriever")


def rerankers(pm: pluggy.PluginManager | None = None) -> dict[str, Reranker]:
    """All registered re-rankers by name."""
    return _collect(pm, "reranker")


def embedders(pm: pluggy.PluginManager | None = None) -> dict[str, Embedder]:
    """All registered embedders by name."""
    return _collect(pm, "embedder")


def reporters(pm: pluggy.PluginManager | None = None) -> dict[str, Reporter]:
    """All registered reporters by name."""
    return _collect(pm, "reporter")


def interpreters(pm: pluggy.PluginManager | None = None) -> dict[str, FeedbackInterpreter]:
    """All registered sentence interpreters by name (consist-semantic's ``tell``)."""
    return _collect(pm, "interpreter")


def extractors(pm: pluggy.PluginManager | None = None) -> dict[str, ExtractorFactory]:
    """Local-feature extractor factories by name (``"sift"``, ...)."""
    return _gather(pm, "extractor", "consist_register_extractors", named=True)


def make_extractor(spec: FeatureSpec, pm: pluggy.PluginManager | None = None) -> FeatureExtractor:
    """The configured extractor a :class:`~consist.contracts.features.FeatureSpec` names
    (``PluginError`` naming the registered ones when it is unknown)."""
    found = extractors(pm)
    if spec.extractor not in found:
        known = ", ".join(sorted(found)) or "none: install consist-spatial or a feature plugin"
        raise PluginError(f"unknown feature extractor {spec.extractor!r} (registered: {known})")
    return found[spec.extractor](**dict(spec.options))


def store_openers(pm: pluggy.PluginManager | None = None) -> dict[str, StoreOpener]:
    """URI scheme -> opener."""
    return _gather(pm, "store", "consist_register_stores", named=True)


def plugin_infos(pm: pluggy.PluginManager | None = None) -> list[PluginInfo]:
    """Name, version, hooks and checkers of every loaded plugin (``consist plugins``)."""
    pm = pm or get_plugin_manager()
    registered: dict[str, dict[str, Any]] = {what: _collect(pm, what) for what in ("checker", "retriever", "reranker", "embedder", "reporter")}  # fills _owners
    registered["extractor"] = extractors(pm)
    by_owner: dict[str, dict[str, list[str]]] = {}
    for what in registered:
        for oname, owner in _owners.get(what, {}).items():
            by_owner.setdefault(owner, {}).setdefault(what, []).append(oname)
    dists = _dists
    from consist._version import __version__

    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        builtin = name in BUILTIN_PLUGINS
        dist, version = dists.get(name, ("consist", __version__) if builtin else (None, None))
        own = by_owner.get(name, {})
        checker_names = tuple(sorted(own.get("checker", [])))
        infos.append(
            PluginInfo(
                name=name,
                version=version,
                distribution=dist,
                builtin=builtin,
                hooks=hooks,
                checkers=checker_names,
                retrievers=tuple(sorted(own.get("retriever", []))),
                embedders=tuple(sorted(own.get("embedder", []))),
                reporters=tuple(sorted(own.get("reporter", []))),
                rerankers=tuple(sorted(own.get("reranker", []))),
                extractors=tuple(sorted(own.get("extractor", []))),
                descriptions=tuple((c, str(getattr(registered["checker"][c], "description", "") or "")) for c in checker_names),
            )
        )
    return infos
