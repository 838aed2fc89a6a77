"""The contract check: :func:`check_strategy` runs a strategy through bench's own setup and runner on a
tiny model and checks the result against :data:`CHECKS`."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.markers import hookimpl

if TYPE_CHECKING:
    from bench.core.strategy import Strategy
    from bench.results.schema import RunResult
from bench.testing.tiny import default_assets
from bench.testing.watch import PLUGIN_MODULE, REPORT_FILENAME, FrozenCheck, _unserialisable

ENV_ISOLATE = "BENCH_CHECK_ISOLATE"

CHECKS = (
    "the strategy is registered and its config resolves from the given options",
    "isolated (default): the run process finds the strategy by name and its result survives JSON",
    "status is 'passed'",
    "metrics is not empty; every value is a finite float; primary_metric is one of them",
    "params: 0 <= trainable <= total, total > 0, every byte count >= 0",
    "phases: at least one; wall_s finite and >= 0; memory figures None or >= 0",
    "steps: at least one (wrap each step in run.meter.step); every step took seconds > 0, "
    "with samples and tokens >= 0",
    "extra is JSON-serialisable",
    "every parameter of a model the strategy called that is not in trained_parameters is bit-identical "
    "after the run",
)


# -------------------------------------------------------------------------------------------------
# The contract check.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractReport:
    """What :func:`check_strategy` ran and found. ``problems`` is empty when the contract holds."""

    strategy: str
    result: RunResult
    frozen: FrozenCheck | None
    out_dir: Path
    model: str
    dataset: str
    isolated: bool
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


class ContractError(AssertionError):
    """A strategy broke the contract; the message lists each problem and what to fix."""

    def __init__(self, strategy: str, problems: Sequence[str], report: ContractReport | None = None) -> None:
        self.strategy = strategy
        self.problems = tuple(problems)
        self.report = report
        where = f" (run folder: {report.out_dir})" if report is not None else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"strategy {strategy!r} breaks the bench strategy contract{where}:\n{lines}")


def check_strategy(
    strategy_or_name: str | Strategy,
    *,
    model: str | Path | None = None,
    dataset: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    tmp_path: str | Path | None = None,
    isolate: bool | None = None,
    preset: str | None = None,
    plugins: Sequence[str] = (),
    plugin_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    profile: bool = False,
) -> ContractReport:
    """Run one strategy through bench's runner on a tiny model and check the result against :data:`CHECKS`.

    :param strategy_or_name: a registered strategy name, or a strategy object (its module is loaded
        with ``-p`` when no installed plugin provides that name; it must then be importable by name).
    :param model: ``--model``; default: :func:`tiny_bert` (classification) or :func:`tiny_llama`
        (causal-lm), built once per process (:func:`default_assets`).
    :param dataset: ``--dataset``; default: :func:`tiny_sentiment_csv` or :func:`tiny_alpaca_jsonl`.
    :param options: the strategy's config fields (``{"epochs": 1}``), as ``-o NAME.field=value`` would.
    :param tmp_path: where the run folder goes (default: a new temporary folder).
    :param isolate: run in a child process as ``bench run`` does, or in this process (faster, but it
        does not prove the strategy survives isolation). Default: isolated, unless the environment
        variable ``BENCH_CHECK_ISOLATE`` is ``0``.
    :param preset: default: ``smoke`` when the strategy has that preset, else the plain defaults.
    :param plugins: more plugin modules to load (``-p``), e.g. one that is not installed.
    :param plugin_options: values of options declared with ``bench_addoption`` (by dest name).
    :param profile: keep the ``profiler`` plugin on (default: off, as ``-p no:profiler``).
    :return: the report; raises :class:`ContractError` listing the problems when any check fails.
    """
    from bench.host.config import plugin_spec

    if isolate is None:
        isolate = os.environ.get(ENV_ISOLATE, "1") != "0"
    root = Path(tmp_path) if tmp_path is not None else Path(tempfile.mkdtemp(prefix="bench-check-"))
    root.mkdir(parents=True, exist_ok=True)
    blocked = () if profile else ("no:profiler",)
    spec = plugin_spec([*plugins, PLUGIN_MODULE, *blocked], None)
    harness, strategy = _find_strategy(strategy_or_name, spec, isolate)
    name = strategy.name
    if preset is None:
        preset = "smoke" if "smoke" in (getattr(strategy, "presets", None) or {}) else "default"
    devices = tuple(getattr(strategy, "devices", None) or ("cpu", "cuda"))
    if device not in devices:
        raise ContractError(name, [f"the strategy declares devices {devices!r}, so it cannot be checked on "
                                   f"{device!r}; pass device=... (one it supports), or add {device!r} to its devices"])
    out_dir = root / f"run-{name}"
    n = 1
    while out_dir.exists():
        n += 1
        out_dir = root / f"run-{name}-{n}"
    values: dict[str, Any] = {**dict(plugin_options or {}), "strategies": [name], "device": device,
                              "precision": "fp32", "seed": seed, "preset": preset, "no_isolate": not isolate,
                              "warmup_steps": 1, "out": str(out_dir)}
    config = dataclasses.replace(harness.make_config(values), strategy_overrides={name: dict(options or {})})
    harness.selection(config)  # option errors surface here, before any work, as the CLI reports them
    if model is None or dataset is None:
        default_model, default_data = default_assets(strategy.task)
        model = default_model if model is None else model
        dataset = default_data if dataset is None else dataset
    config = dataclasses.replace(config, model=str(model), dataset=str(dataset))
    with harness.configured(config):
        (result,) = harness.run([name]).results
    folder = result.artifacts_dir()
    frozen = _read_frozen(folder / REPORT_FILENAME) if folder is not None else None
    report = ContractReport(name, result, frozen, out_dir, str(model), str(dataset), isolate)
    problems = check_result(result, frozen=frozen, isolated=isolate)
    if problems:
        report = dataclasses.replace(report, problems=tuple(problems))
        raise ContractError(name, problems, report)
    return report


def _find_strategy(obj: Any, spec: Any, isolate: bool) -> tuple[Any, Any]:
    """The harness (plugins loaded so that a run process finds the strategy by name) and the strategy."""
    from bench.host.harness import Harness

    harness = Harness(spec)
    registry = harness.registry
    if isinstance(obj, str):
        return harness, registry.get(obj).strategy
    name = getattr(obj, "name", None)
    if not isinstance(name, str):
        from bench.core.strategy import protocol_problems

        raise ContractError(repr(obj), protocol_problems(obj) or ["it has no string attribute 'name'"])
    if name in registry.names():
        found = registry.get(name).strategy
        if type(found) is not type(obj):
            raise ContractError(name, [f"another strategy named {name!r} is already registered (by plugin "
                                       f"{registry.get(name).plugin!r}, class {type(found).__qualname__}); "
                                       "rename yours or block that plugin"])
        return harness, found
    module = type(obj).__module__
    if module == "__main__" or not _module_importable(module):
        if not isolate:  # in this process the object itself can be registered
            harness.register(_Provides(obj), f"{PLUGIN_MODULE}:{name}")
            return harness, obj
        raise ContractError(name, [
            f"no loaded plugin registers strategy {name!r}, and its class {type(obj).__qualname__} lives in "
            f"{module!r}, which a run process cannot import by name; register it through the "
            "'finetune_bench' entry point of an installed distribution, or define it in an importable "
            "module that has a bench_register_strategies hook (and pass plugins=['that.module']); "
            "isolate=False skips the isolation check"])
    spec = dataclasses.replace(spec, enable=(module, *spec.enable))
    harness = Harness(spec)
    if name not in harness.registry.names():
        raise ContractError(name, [f"module {module!r} was loaded as a plugin (-p {module}) but registers no "
                                   f"strategy named {name!r}; return it from its bench_register_strategies hook"])
    return harness, harness.registry.get(name).strategy


class _Provides:
    """A plugin object registering one strategy object (in-process checks of unimportable strategies)."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy

    @hookimpl
    def bench_register_strategies(self) -> list[Any]:
        return [self.strategy]


def _module_importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _read_frozen(path: Path) -> FrozenCheck | None:
    if not path.is_file():
        return None
    from bench.results.schema import from_data

    return from_data(FrozenCheck, json.loads(path.read_text(encoding="utf-8")))


def check_result(result: RunResult, *, frozen: FrozenCheck | None = None, isolated: bool = False) -> list[str]:
    """The contract problems of one result (and of the frozen watch's findings), each saying what to fix."""
    problems: list[str] = []
    if not result.passed:
        error = result.error
        summary = error.summary if error is not None else "no error recorded"
        hint = ""
        if isolated and error is not None and "unknown strategy" in error.message:
            hint = (" -- the run process (a fresh interpreter) could not find the strategy by name: register it "
                    "through an entry point or a module importable by name, not a class defined in a test")
        elif isolated and error is not None and error.type == "ProcessDied":
            hint = (" -- the run process died without writing its result; if its stderr shows a TypeError from "
                    "json, a value in metrics or extra is not JSON-serialisable")
        tail = "\n".join(error.traceback.strip().splitlines()[-6:]) if error is not None and error.traceback else ""
        problems.append(f"the run failed: {summary}{hint}" + (f"\n{tail}" if tail else ""))
        if frozen is not None:
            problems += _frozen_problems(frozen)
        return problems
    if not result.metrics:
        problems.append("metrics is empty; return at least the primary metric in StrategyOutput.metrics")
    for key, value in result.metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(float(value)):
            problems.append(f"metric {key!r} is {value!r}; every metric must be a finite float (NaN and inf "
                            "become null in the results file): leave out a metric that was not measured")
    if result.primary_metric not in result.metrics:
        problems.append(f"primary_metric {result.primary_metric!r} is not among the metrics "
                        f"({', '.join(result.metrics) or 'none'}); set StrategyOutput.primary_metric to one of them")
    problems += _param_problems(result)
    if not result.phases:
        problems.append("no phase was measured; wrap setup, training and evaluation in run.meter.phase(name)")
    for p in result.phases:
        if not math.isfinite(p.wall_s) or p.wall_s < 0:
            problems.append(f"phase {p.name!r} has wall_s {p.wall_s!r}; it must be finite and >= 0")
        for attr in ("cpu_peak_rss_bytes", "gpu_peak_allocated_bytes", "gpu_peak_reserved_bytes"):
            value = getattr(p, attr)
            if value is not None and value < 0:
                problems.append(f"phase {p.name!r} has {attr} {value}; memory is None or >= 0")
    if not result.steps:
        problems.append("no step was measured; wrap each optimizer step (or inference batch) in "
                        "run.meter.step(samples=..., tokens=...) inside a run.meter.phase(...)")
    for i, s in enumerate(result.steps):
        if not s.seconds > 0:
            problems.append(f"step {i} of phase {s.phase!r} took {s.seconds!r} s; a measured step must do its "
                            "work inside the run.meter.step(...) block")
            break
        if s.samples < 0 or s.tokens < 0:
            problems.append(f"step {i} of phase {s.phase!r} counts samples={s.samples}, tokens={s.tokens}; "
                            "both must be >= 0")
            break
    if not isolated:
        problems += _unserialisable(dict(result.extra), "extra")
    if frozen is not None:
        problems += _frozen_problems(frozen)
    return problems


def _param_problems(result: RunResult) -> list[str]:
    p = result.params
    if p is None:
        return ["params is missing; return bench.ParamCounts (bench.measure.param_counts(model, optimizer) "
                "counts them)"]
    problems = []
    if p.total <= 0:
        problems.append(f"params.total is {p.total}; count every parameter of the model")
    if not 0 <= p.trainable <= p.total:
        problems.append(f"params.trainable is {p.trainable} with total {p.total}; need 0 <= trainable <= total")
    for attr in ("param_bytes", "grad_bytes", "optimizer_state_bytes"):
        if getattr(p, attr) < 0:
            problems.append(f"params.{attr} is {getattr(p, attr)}; byte counts are >= 0")
    return problems


def _frozen_problems(frozen: FrozenCheck) -> list[str]:
    problems = list(f"{u} is not JSON-serialisable; give plain numbers, strings, lists and dicts"
                    for u in frozen.unserialisable)
    changed = frozen.changed
    if changed:
        shown = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
        hint = ""
        if frozen.unmatched_trained:
            hint = (f"; note that trained_parameters names {', '.join(frozen.unmatched_trained[:3])}, which is not "
                    "a parameter of any model the strategy called: use the names of model.named_parameters() "
                    "of the model you call")
        problems.append(f"{len(changed)} parameter(s) not listed in StrategyOutput.trained_parameters changed "
                        f"during the run: {shown}; list every parameter that trains, or freeze the others "
                        f"(param.requires_grad_(False)){hint}")
    return problems


# -------------------------------------------------------------------------------------------------
# The pytest fixture (``pytest_plugins = ["bench.testing"]``).
# -------------------------------------------------------------------------------------------------


def _bench_check(tmp_path: Path) -> Callable[..., ContractReport]:
    """``bench_check("my-strategy", options={...})``: :func:`check_strategy` under the test's ``tmp_path``."""

    def run_check(strategy_or_name: Any, **kwargs: Any) -> ContractReport:
        kwargs.setdefault("tmp_path", tmp_path)
        return check_strategy(strategy_or_name, **kwargs)

    return run_check


try:
    import pytest as _pytest
except ImportError:  # pragma: no cover - pytest is a dependency of pytest-benchmark
    bench_check: Any = None
else:
    bench_check = _pytest.fixture(name="bench_check")(_bench_check)
