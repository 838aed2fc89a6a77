"""Plugin discovery and the plugin host: a thin, typed facade over one ``pluggy.PluginManager``.

Discovery order (fixed; pluggy calls the plugins registered later first, except for ``tryfirst`` /
``trylast`` implementations):

1. built-in host plugins (``config``, ``runner``, ``machine``, ``report``, ``profiler``, ``baseline``);
2. the ``finetune_bench`` entry-point group: the built-in strategies (this distribution registers them
   there, like any third party) and every installed third-party plugin;
3. ``-p module`` (a module to import and register) and ``-p no:name`` (block a plugin by name);
4. every ``*.py`` file in ``--plugins-dir DIR``;
5. modules named in ``BENCH_PLUGINS`` (comma-separated).

``BENCH_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party entry points (finetune-bench's own built-in
strategies still load). No plugin manager exists until :meth:`PluginHost.load` is called.

A plugin that fails to import stops the command with one line naming it and saying how to skip it
(``-p no:NAME``); with ``debug`` (``bench --debug``) its traceback is printed first.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType, ModuleType
from typing import Any

import pluggy

from bench.core.config import PluginSpec
from bench.core.errors import PluginError
from bench.core.markers import ENTRY_POINT_GROUP, PROJECT_NAME
from bench.core.text import did_you_mean
from bench.host import hookspecs

OWN_DISTRIBUTION = "finetune-bench"
ENV_PLUGINS = "BENCH_PLUGINS"
ENV_DISABLE_AUTOLOAD = "BENCH_DISABLE_PLUGIN_AUTOLOAD"

# name -> module; "config" and "runner" cannot be blocked: the host needs them to work at all.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("config", "bench.host.config"),
    ("runner", "bench.host.worker"),
    ("machine", "bench.measure.machine"),
    ("report", "bench.results.report"),
    ("profiler", "bench.measure.profiler"),
    ("tensorboard", "bench.measure.tensorboard"),
    ("baseline", "bench.compare.baseline"),
)
ESSENTIAL_PLUGINS = frozenset({"config", "runner"})


@dataclass(frozen=True)
class PluginInfo:
    """Where a loaded plugin came from, for ``bench list --plugins`` and result provenance."""

    name: str
    source: str  # builtin | entry-point | -p | plugins-dir | env
    module: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]


class PluginHost:
    """Loads plugins in the documented order and exposes ``hook`` and provenance."""

    def __init__(self, *, debug: bool = False) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.debug = debug
        self._infos: dict[str, PluginInfo] = {}

    @property
    def hook(self) -> Any:
        return self.pm.hook

    # -- calling hooks --------------------------------------------------------------------------------

    def call_each(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Callable[[], Any]]]:
        """For each plugin with a plain implementation of ``hook_name``: its name and a call of the hook
        through pluggy that reaches that implementation alone (and every wrapper), in pluggy's order.

        The registry uses it to know which plugin gave which strategy; ``bench_run_finished`` to keep
        one failing observer from stopping the others."""
        caller = getattr(self.pm.hook, hook_name)
        impls = caller.get_hookimpls()
        plain = [impl for impl in impls if not (impl.wrapper or impl.hookwrapper)]
        # pluggy calls tryfirst, then the others, then trylast; each group last registered first
        ordered = [i for i in reversed(plain) if i.tryfirst] + \
                  [i for i in reversed(plain) if not i.tryfirst and not i.trylast] + \
                  [i for i in reversed(plain) if i.trylast]
        for impl in ordered:
            others = [i.plugin for i in plain if i.plugin is not impl.plugin]
            sub = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
            yield impl.plugin_name, functools.partial(sub, **kwargs)

    def owner_of_caller(self, hook_name: str, frame: FrameType | None) -> str:
        """The name of the plugin whose ``hook_name`` implementation is on the call stack at ``frame``
        (e.g. which plugin's ``bench_addoption`` is declaring an option), else ``""``."""
        codes: dict[int, str] = {}  # by identity: two plugins' identical functions have equal code objects
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            code: CodeType | None = getattr(impl.function, "__code__", None)
            if code is not None:
                codes[id(code)] = impl.plugin_name
        while frame is not None:
            if id(frame.f_code) in codes:
                return codes[id(frame.f_code)]
            frame = frame.f_back
        return ""

    # -- loading ------------------------------------------------------------------------------------

    def load(self, spec: PluginSpec | None = None) -> PluginHost:
        """Discover and register plugins in the documented order, then check for unknown hooks."""
        spec = spec or PluginSpec()
        own_version = _own_version()
        for name in spec.disable:
            if name in ESSENTIAL_PLUGINS:
                raise PluginError(f"-p no:{name}: the {name!r} plugin is essential and cannot be disabled")
            self.pm.set_blocked(name)
        for name, module in BUILTIN_PLUGINS:
            if not self.pm.is_blocked(name):
                self.register(importlib.import_module(module), name, "builtin", OWN_DISTRIBUTION, own_version)
        autoload = spec.autoload and os.environ.get(ENV_DISABLE_AUTOLOAD, "") in ("", "0")
        for ep, dist, version in _entry_points():
            if not autoload and dist != OWN_DISTRIBUTION:
                continue
            if self.pm.is_blocked(ep.name) or self.pm.get_plugin(ep.name) is not None:
                continue
            plugin = self._import(lambda ep=ep: ep.load(), ep.name, ep.value, dist, version)
            self.register(plugin, ep.name, "entry-point", dist, version)
        for module in spec.enable:
            name = module
            if not self.pm.is_blocked(name) and self.pm.get_plugin(name) is None:
                plugin = self._import(lambda m=module: importlib.import_module(m), name, module, None, None)
                self.register(plugin, name, "-p", *_distribution_of(plugin))
        if spec.plugins_dir:
            for path in _plugin_files(Path(spec.plugins_dir)):
                name = path.stem
                if not self.pm.is_blocked(name):
                    plugin = self._import(lambda p=path: _import_file(p), name, str(path), None, None)
                    self.register(plugin, name, "plugins-dir", None, None)
        for module in filter(None, (m.strip() for m in os.environ.get(ENV_PLUGINS, "").split(","))):
            if not self.pm.is_blocked(module) and self.pm.get_plugin(module) is None:
                plugin = self._import(lambda m=module: importlib.import_module(m), module, module, None, None)
                self.register(plugin, module, "env", *_distribution_of(plugin))
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            info = self._infos.get(self.pm.get_name(exc.plugin) or "")
            raise PluginError(f"{_describe(info) if info else 'a plugin'}: {exc}; every hook must be one of "
                              f"the bench_* hooks in bench/hookspecs.py (check the spelling"
                              f"{_unknown_hook_hint(self.pm, exc)})") from None
        return self

    def register(self, plugin: object, name: str, source: str = "-p",
                 distribution: str | None = None, version: str | None = None) -> None:
        """Register one plugin object (a module or an instance) under ``name``."""
        module = getattr(plugin, "__name__", type(plugin).__module__)
        info = PluginInfo(name, source, module, distribution, version, ())
        try:
            registered = self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{_describe(info)} does not match the hookspecs: {_hook_mismatch(self.pm, plugin, exc)}"
                              ) from None
        except ValueError as exc:  # already registered
            raise PluginError(f"{_describe(info)}: {exc}") from None
        if registered is None:
            return  # blocked
        hooks = tuple(sorted(c.name for c in (self.pm.get_hookcallers(plugin) or [])))
        self._infos[name] = PluginInfo(name, source, module, distribution, version, hooks)

    def _import(self, load: Any, name: str, target: str, dist: str | None, version: str | None) -> Any:
        info = PluginInfo(name, "", target, dist, version, ())
        try:
            return load()
        except Exception:
            if self.debug:
                print(f"bench: traceback of plugin {name!r} ({target}) failing to import:", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
            self._raise_import_error(info, name, target)

    def _raise_import_error(self, info: PluginInfo, name: str, target: str) -> Any:
        exc = sys.exc_info()[1]
        hint = "" if self.debug else "; bench --debug shows its traceback"
        if isinstance(exc, ModuleNotFoundError):
            raise PluginError(
                f"{_describe(info)} failed to import {target!r}: it needs the missing module {exc.name!r} "
                f"(pip install it, or skip this plugin with -p no:{name}{hint})"
            ) from None
        first = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
        raise PluginError(
            f"{_describe(info)} failed to import {target!r}: {type(exc).__name__}: {first} "
            f"(fix the plugin, or skip it with -p no:{name}{hint})"
        ) from None

    # -- queries ------------------------------------------------------------------------------------

    def info(self, name: str) -> PluginInfo | None:
        return self._infos.get(name)

    def plugin_infos(self) -> list[PluginInfo]:
        return list(self._infos.values())

    def plugin_name(self, plugin: object) -> str:
        return self.pm.get_name(plugin) or repr(plugin)


def _describe(info: PluginInfo | None) -> str:
    if info is None:
        return "plugin"
    where = f"distribution {info.distribution} {info.version or ''}".strip() if info.distribution else info.module
    return f"plugin {info.name!r} ({where})"


def _hook_mismatch(pm: pluggy.PluginManager, plugin: object, exc: Exception) -> str:
    """One line: which hook implementation asks for an argument its hook does not provide, and what the
    hook provides; else pluggy's message on one line."""
    import inspect

    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        caller = getattr(pm.hook, (opts or {}).get("specname") or attr, None) if opts is not None else None
        if caller is None or caller.spec is None:
            continue
        args = [a for a in inspect.signature(getattr(plugin, attr)).parameters if a != "self"]
        unknown = [a for a in args if a not in caller.spec.argnames]
        if unknown:
            accepted = ", ".join(caller.spec.argnames) or "no arguments"
            return (f"{attr}({', '.join(args)}) asks for {', '.join(map(repr, unknown))}, which {caller.name} does not "
                    f"provide; it accepts {accepted} (any subset, by exactly these names; see docs/hooks.md)")
    return " ".join(str(exc).split())


def _unknown_hook_hint(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> str:
    """``"; did you mean 'bench_x'?"`` for the first unknown hook of the plugin that failed the check."""
    known = [name for name in dir(hookspecs) if name.startswith("bench_")]
    for attr in dir(exc.plugin):
        if attr.startswith("bench_") and attr not in known and pm.parse_hookimpl_opts(exc.plugin, attr) is not None:
            return did_you_mean(attr, known)
    return ""


def _own_version() -> str:
    from bench import __version__

    return __version__


def _entry_points() -> Iterator[tuple[importlib.metadata.EntryPoint, str | None, str | None]]:
    """Entry points of the group, deduplicated by name, each with its distribution and version:
    finetune-bench's own first, then the other distributions by name."""
    seen: set[str] = set()
    dists = sorted(importlib.metadata.distributions(),
                   key=lambda d: (d.metadata["Name"] != OWN_DISTRIBUTION, str(d.metadata["Name"]).lower()))
    for dist in dists:
        for ep in sorted(dist.entry_points, key=lambda e: e.name):
            if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                continue
            seen.add(ep.name)
            yield ep, dist.metadata["Name"], dist.version


def _distribution_of(plugin: object) -> tuple[str | None, str | None]:
    """The installed distribution that holds ``plugin``'s top-level package, if any."""
    top = getattr(plugin, "__name__", "").split(".")[0]
    for dist_name in importlib.metadata.packages_distributions().get(top, []):
        try:
            return dist_name, importlib.metadata.version(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, None


def _plugin_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PluginError(f"--plugins-dir {folder}: not a folder")
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def _import_file(path: Path) -> ModuleType:
    module_name = f"bench_plugins_dir.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
