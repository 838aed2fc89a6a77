"""The strategy registry: every strategy the loaded plugins provide, with where it came from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bench.core.errors import PluginError, UsageError
from bench.core.strategy import Strategy, protocol_problems
from bench.core.text import did_you_mean
from bench.host.plugins import OWN_DISTRIBUTION, PluginHost


@dataclass(frozen=True)
class Entry:
    """A registered strategy and its provenance."""

    strategy: Strategy
    plugin: str
    distribution: str | None
    version: str | None
    builtin: bool

    @property
    def name(self) -> str:
        return self.strategy.name


class StrategyRegistry:
    """Built by calling each plugin's ``bench_register_strategies`` and remembering the caller."""

    def __init__(self, entries: list[Entry]) -> None:
        self._entries = {e.name: e for e in entries}

    @classmethod
    def from_host(cls, host: PluginHost) -> StrategyRegistry:
        entries: dict[str, Entry] = {}
        for plugin_name, call in host.call_each("bench_register_strategies"):
            info = host.info(plugin_name)
            where = _where(plugin_name, info)
            try:
                provided = [s for group in call() or [] for s in (group or [])]
            except Exception as exc:
                raise PluginError(f"{where}: bench_register_strategies raised {type(exc).__name__}: {exc}") from None
            for strategy in provided:
                problems = protocol_problems(strategy)
                if problems:
                    label = getattr(strategy, "name", repr(strategy))
                    raise PluginError(
                        f"{where}: strategy {label!r} does not satisfy the bench.api.Strategy protocol: "
                        + "; ".join(problems)
                        + " (see 'The strategy protocol' in docs/writing-plugins.md)"
                    )
                if strategy.name in entries:
                    first = entries[strategy.name]
                    raise PluginError(
                        f"strategy name {strategy.name!r} is registered twice: by {where} and by "
                        f"{_where(first.plugin, host.info(first.plugin))}; uninstall or block one "
                        f"(-p no:PLUGIN)"
                    )
                dist = info.distribution if info else None
                entries[strategy.name] = Entry(
                    strategy, plugin_name, dist, info.version if info else None, dist == OWN_DISTRIBUTION
                )
        # listed (and run by default) in plugin registration order: built-ins first, as discovered
        rank = {info.name: i for i, info in enumerate(host.plugin_infos())}
        ordered = sorted(entries.values(), key=lambda e: rank.get(e.plugin, len(rank)))
        return cls(ordered)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "none"
            raise UsageError(
                f"unknown strategy {name!r}{did_you_mean(name, self._entries)} (known: {known}; "
                f"`bench list` shows them)"
            ) from None

    def default_selection(self) -> list[str]:
        """What ``bench run`` runs without ``-s``: the built-in classification strategies."""
        return [e.name for e in self if e.builtin and e.strategy.task == "classification"]


def _where(plugin_name: str, info: object) -> str:
    dist = getattr(info, "distribution", None)
    if not dist:
        return f"plugin {plugin_name!r}"
    return f"plugin {plugin_name!r} (distribution {dist} {getattr(info, 'version', None) or '?'})"
