"""The frozen-parameter watch: a bench plugin (``-p bench.testing.watch``, which :func:`check_strategy`
adds) run inside the run process; see :mod:`bench.testing` for what it checks."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.markers import hookimpl

if TYPE_CHECKING:
    from bench.core.context import RunContext

REPORT_FILENAME = "bench-testing.json"
PLUGIN_MODULE = "bench.testing.watch"


# -------------------------------------------------------------------------------------------------
# The frozen-parameter watch: a bench plugin (``-p bench.testing``) run inside the run process.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchedModel:
    """One model the strategy called: how many parameter tensors it has, how many were declared
    trained, which undeclared ones changed (each must be empty to pass) and how many declared ones did."""

    type: str
    parameters: int
    declared_trained: int
    changed_undeclared: tuple[str, ...] = ()
    changed_trained: int = 0

    @property
    def frozen(self) -> int:
        return self.parameters - self.declared_trained


@dataclass(frozen=True)
class FrozenCheck:
    """What the watch saw: the models called, and declared names that match none of their parameters."""

    models: tuple[WatchedModel, ...] = ()
    unmatched_trained: tuple[str, ...] = ()
    unserialisable: tuple[str, ...] = ()

    @property
    def checked(self) -> int:
        """Parameter tensors that had to stay bit-identical."""
        return sum(m.frozen for m in self.models)

    @property
    def changed(self) -> tuple[str, ...]:
        return tuple(n for m in self.models for n in m.changed_undeclared)


class ParameterWatch:
    """Context manager: copies the parameters of every model called inside it, at its first call."""

    def __init__(self) -> None:
        self._roots: list[tuple[Any, dict[str, Any]]] = []
        self._known: set[int] = set()
        self._handle: Any = None

    def __enter__(self) -> ParameterWatch:
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._handle = register_module_forward_pre_hook(self._on_call)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_call(self, module: Any, args: Any) -> None:
        if id(module) in self._known or next(module.parameters(), None) is None:
            return  # part of a model already seen, or holds no parameter (a loss module, an activation)
        for root, _ in self._roots:  # a module added to a known model after its first call
            grown = {id(m) for m in root.modules()}
            if id(module) in grown:
                self._known |= grown
                return
        # A new model (it may wrap or share parameters with one seen before: each is checked on its own).
        snapshot = {name: p.detach().to("cpu", copy=True) for name, p in module.named_parameters()}
        self._roots.append((module, snapshot))
        self._known |= {id(m) for m in module.modules()}

    def compare(self, trained: Sequence[str]) -> FrozenCheck:
        import torch

        match = _NameMatcher(trained)
        models = []
        for module, snapshot in self._roots:
            now = dict(module.named_parameters())
            changed, changed_trained, declared = [], 0, 0
            for name, before in snapshot.items():
                current = now.get(name)
                same = current is not None and torch.equal(before, current.detach().cpu())
                if match(name):
                    declared += 1
                    changed_trained += not same
                elif not same:
                    changed.append(name)
            models.append(WatchedModel(type(module).__name__, len(snapshot), declared, tuple(changed),
                                       changed_trained))
        names = [n for _, snapshot in self._roots for n in snapshot]
        unmatched = tuple(d for d in trained if not any(_same_parameter(n, d) for n in names)) if models else ()
        return FrozenCheck(tuple(models), unmatched)


def _suffixes(name: str) -> list[str]:
    """``a.b.c.weight`` -> ``a.b.c.weight``, ``b.c.weight``, ``c.weight`` (two components at least)."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(max(1, len(parts) - 1))]


def _same_parameter(name: str, declared: str) -> bool:
    return name == declared or name.endswith("." + declared) or declared.endswith("." + name) and "." in name


class _NameMatcher:
    """Is a parameter name declared trained? Equal names match, and so do names that differ only by the
    path of a wrapper around the model (``lm.model.x.weight`` and ``model.x.weight``), either way round."""

    def __init__(self, declared: Sequence[str]) -> None:
        self.exact = set(declared)
        self.inner = {s for d in declared for s in _suffixes(d)}

    def __call__(self, name: str) -> bool:
        return name in self.inner or any(s in self.exact for s in _suffixes(name))


@hookimpl(wrapper=True)
def bench_run_strategy(run: RunContext) -> Iterator[None]:
    """Watch the models the strategy calls; after it returns, check undeclared parameters did not
    change and ``extra`` is JSON-serialisable; write the findings to ``<run folder>/bench-testing.json``."""
    from bench.core.plain import to_data
    from bench.results.store import write_json_atomic

    watch = ParameterWatch()
    with watch:
        output = yield
    if output is None:
        return output
    check = watch.compare(tuple(output.trained_parameters))
    bad = tuple(_unserialisable(dict(output.extra), "extra") + _unserialisable(dict(output.metrics), "metrics"))
    check = dataclasses.replace(check, unserialisable=bad)
    write_json_atomic(Path(run.out_dir) / REPORT_FILENAME, to_data(check))
    return output


def _unserialisable(mapping: Mapping[str, Any], where: str) -> list[str]:
    from bench.core.plain import to_data

    out = []
    for key, value in mapping.items():
        try:
            json.dumps(to_data(value), allow_nan=False)
        except (TypeError, ValueError) as exc:
            out.append(f"{where}[{key!r}] ({type(value).__name__}: {exc})")
    return out


