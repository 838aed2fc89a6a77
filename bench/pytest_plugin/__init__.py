"""The pytest plugin: benchmark fine-tuning strategies as pytest tests, timed through pytest-benchmark.

Installed with finetune-bench (entry point ``pytest11: finetune_bench``); it stays idle in test runs
that do not use its fixture. A test asks for ``finetune_bench`` and calls it::

    @pytest.mark.bench_strategy("all-layers", options={"epochs": 1})
    def test_all_layers(finetune_bench):
        result = finetune_bench()          # a bench.results.RunResult
        assert result.metrics["test_accuracy"] > 0.5

The call runs the strategy through the same runner as ``bench run`` (plugins, config file, presets,
options, one isolated process per run unless ``--bench-no-isolate``), then hands the durations of
its **timed training steps** (warm-up and profiled steps excluded) to pytest-benchmark's
``benchmark.pedantic``: one round per timed step. It does so through pytest-benchmark's supported
per-test timer (``@pytest.mark.benchmark(timer=...)``, set on the test by this plugin): a clock that
replays the measured steps, so each round's duration *is* one measured step and pytest-benchmark's
stats, ``--benchmark-json``, ``--benchmark-autosave``, ``--benchmark-compare``,
``--benchmark-compare-fail=median:10%`` and ``pytest-benchmark compare`` work unchanged on the real
per-step durations. ``extra_info`` holds accuracy and the task metrics, samples/s, real tokens/s, peak
memory, parameter counts and the strategy config.

What runs: the strategies named by the test's ``bench_strategy`` marker, else by ``--bench-strategy``
(repeatable), else the built-in classification strategies; the test is parametrized by strategy name
(``test_x[all-layers]``). Model, dataset, preset and options come from the call's arguments, else the
marker's keywords, else ``--bench-model``, ``--bench-dataset``, ``--bench-preset``, ``--bench-option``,
else the ``bench`` config file in the invocation folder, else the defaults of ``bench run``.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

FIXTURE = "finetune_bench"
MARKER = "bench_strategy"
MARKER_KEYWORDS = ("model", "dataset", "preset", "options")
_RESERVED_OPTIONS = ("strategies", "out", "overrides")


# -------------------------------------------------------------------------------------------------
# The replay clock: pytest-benchmark's timer for tests that use the fixture.
# -------------------------------------------------------------------------------------------------


class StepClock:
    """A timer for pytest-benchmark that replays measured step durations.

    pytest-benchmark times a round as ``end - start`` of two timer reads around the target. While
    :meth:`replaying`, the first read of each pair returns the clock's current value and the second
    advances it by the next measured duration; outside it, it is ``time.perf_counter``.
    """

    def __init__(self) -> None:
        self.__name__ = "finetune_bench.step_clock"  # what pytest-benchmark records as the timer
        self._durations: Sequence[float] | None = None
        self._now = 0.0
        self._open = False
        self.consumed = 0

    def __call__(self) -> float:
        if self._durations is None:
            return time.perf_counter()
        if self._open:
            if self.consumed >= len(self._durations):
                raise RuntimeError("finetune_bench: pytest-benchmark asked for more rounds than measured steps")
            self._now += self._durations[self.consumed]
            self.consumed += 1
        self._open = not self._open
        return self._now

    @contextmanager
    def replaying(self, durations: Sequence[float]) -> Iterator[StepClock]:
        self._durations, self._now, self._open, self.consumed = tuple(durations), 0.0, False, 0
        try:
            yield self
        finally:
            self._durations = None


STEP_CLOCK = StepClock()


# -------------------------------------------------------------------------------------------------
# pytest hooks.
# -------------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("finetune-bench", "finetune-bench (the finetune_bench fixture)")
    group.addoption("--bench-strategy", action="append", default=[], metavar="NAME",
                    help="strategy for finetune_bench tests without one in their bench_strategy marker (repeatable)")
    group.addoption("--bench-model", default=None, metavar="MODEL", help="model folder or hub id (bench run --model)")
    group.addoption("--bench-dataset", default=None, metavar="DATASET",
                    help="CSV/JSONL file or hub dataset id (bench run --dataset)")
    group.addoption("--bench-preset", default=None, metavar="PRESET", help="smoke, default or full (bench run --preset)")
    group.addoption("--bench-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a strategy or bench run option for every run, e.g. epochs=1, max_length=64, device=cpu "
                         "(repeatable)")
    group.addoption("--bench-plugin", action="append", default=[], metavar="NAME",
                    help="bench plugin module to load; no:NAME blocks one (bench -p)")
    group.addoption("--bench-plugins-dir", default=None, metavar="DIR", help="bench --plugins-dir")
    group.addoption("--bench-no-isolate", action="store_true", default=False,
                    help="run strategies in the pytest process instead of one child process each")
    group.addoption("--bench-out", default=None, metavar="DIR",
                    help="keep each test's bench results folder under DIR (default: pytest's temporary folder)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*strategies, model=None, dataset=None, preset=None, options=None): what the "
        f"{FIXTURE} fixture runs (several strategies parametrize the test)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if FIXTURE not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is not None:
        unknown = sorted(set(marker.kwargs) - set(MARKER_KEYWORDS))
        if unknown:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: @pytest.mark.{MARKER} has no keyword "
                                    f"{unknown[0]!r} (it takes: {', '.join(MARKER_KEYWORDS)})")
    names = list(marker.args) if marker is not None and marker.args else \
        list(metafunc.config.getoption("bench_strategy") or ())
    if not names:
        names = _harness(metafunc.config)[0].registry.default_selection()
    metafunc.parametrize("bench_strategy_name", names, ids=names)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test that uses the fixture the replay clock as its pytest-benchmark timer."""
    for item in items:
        if FIXTURE not in getattr(item, "fixturenames", ()):
            continue
        existing = item.get_closest_marker("benchmark")
        kwargs = dict(existing.kwargs) if existing is not None else {}
        kwargs["timer"] = STEP_CLOCK
        item.add_marker(pytest.mark.benchmark(**kwargs), append=False)


# -------------------------------------------------------------------------------------------------
# Fixtures.
# -------------------------------------------------------------------------------------------------


@pytest.fixture
def bench_strategy_name() -> str:
    """The strategy of this test (the parametrization by pytest_generate_tests replaces this value)."""
    return "all-layers"


@pytest.fixture
def finetune_bench(request: pytest.FixtureRequest, benchmark: Any, bench_strategy_name: str,
                   tmp_path_factory: pytest.TempPathFactory) -> StrategyBenchmark:
    """Call it to run the test's strategy and time its steps through pytest-benchmark (once per test)."""
    return StrategyBenchmark(request, benchmark, bench_strategy_name, tmp_path_factory)


class StrategyBenchmark:
    """What ``finetune_bench`` gives a test: call it once; it returns the run's ``RunResult``."""

    def __init__(self, request: pytest.FixtureRequest, benchmark: Any, strategy: str,
                 tmp_path_factory: pytest.TempPathFactory) -> None:
        self.request = request
        self.benchmark = benchmark
        self.strategy = strategy
        self._tmp = tmp_path_factory
        self.result: Any = None
        self.results_path: Path | None = None

    def __call__(self, strategy: str | None = None, *, model: str | None = None, dataset: str | None = None,
                 preset: str | None = None, options: Mapping[str, Any] | None = None) -> Any:
        from bench.core.errors import BenchError

        name = strategy or self.strategy
        marker = self.request.node.get_closest_marker(MARKER)
        mk: Mapping[str, Any] = marker.kwargs if marker is not None else {}
        opts = self.request.config.getoption
        values: dict[str, Any] = {}
        for key, value in _parse_options(opts("bench_option") or ()).items():
            values[key] = value
        for key, value in dict(mk.get("options") or {}).items():
            values[key.replace("-", "_")] = value
        for key, value in dict(options or {}).items():
            values[key.replace("-", "_")] = value
        for key, call_value, cli_value in (("model", model, opts("bench_model")),
                                           ("dataset", dataset, opts("bench_dataset")),
                                           ("preset", preset, opts("bench_preset"))):
            chosen = call_value if call_value is not None else mk.get(key, cli_value)
            if chosen is not None:
                values[key] = str(chosen)
        if opts("bench_no_isolate"):
            values.setdefault("no_isolate", True)
        try:
            result, path = self._run(name, values)
        except BenchError as exc:
            pytest.fail(f"finetune_bench({name!r}): {exc}", pytrace=False)
        self.result, self.results_path = result, path
        if not result.passed:
            error = result.error
            if error is None:
                detail = "no error recorded"
            elif getattr(error, "usage", False):  # bad input (option, file, model): the message says it all
                detail = error.summary
            else:
                detail = f"{error.summary}\n{error.traceback}"
            pytest.fail(f"strategy {name!r} failed: {detail}", pytrace=False)
        self._feed(result, path)
        return result

    def _out_dir(self) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.request.node.nodeid).strip("_")[-120:]
        root = self.request.config.getoption("bench_out")
        if root:  # a folder of its own: a run never writes into (nor empties) an earlier one's
            folder, n = (Path(root) / slug).resolve(), 1
            while folder.exists() and any(folder.iterdir()):
                n += 1
                folder = (Path(root) / f"{slug}-{n}").resolve()
            return folder
        return self._tmp.mktemp(slug[-60:] or "bench", numbered=True)

    def _run(self, name: str, values: dict[str, Any]) -> tuple[Any, Path]:
        from bench.core.errors import UsageError
        from bench.core.text import did_you_mean

        harness, settings = _harness(self.request.config)
        harness.registry.get(name)  # an unknown strategy fails here, with a suggestion
        known = [k for k in harness.known_option_names() if k not in _RESERVED_OPTIONS]
        for key in values:
            if key in _RESERVED_OPTIONS or (key not in known and key not in ("model", "dataset", "preset")):
                raise UsageError(f"option {key!r}: not a strategy or bench run option{did_you_mean(key, known)}")
        cli_values = {**values, "strategies": [name], "out": str(self._out_dir())}
        config = harness.make_config(cli_values, settings.values, config_file=settings.path)
        harness.selection(config)  # bad options fail here, before a process starts
        with harness.configured(config):
            session = harness.run([name])
        return session.results[-1], session.path

    def _feed(self, result: Any, path: Path) -> None:
        main = result.main_throughput()
        if main is None:
            pytest.fail(f"strategy {result.strategy!r} measured no steps; nothing to benchmark", pytrace=False)
        phase, tp = main
        timed = [s for s in result.steps if s.phase == phase and s.kind == "timed"]
        if not timed:
            pytest.fail(f"strategy {result.strategy!r}: no timed steps in phase {phase!r} (all were warm-up or "
                        f"profiled); train longer or lower --warmup-steps", pytrace=False)
        self.benchmark.extra_info.update(extra_info(result, phase, tp, timed, path))
        durations = [s.seconds for s in timed]
        with STEP_CLOCK.replaying(durations) as clock:
            self.benchmark.pedantic(lambda: result, rounds=len(durations), iterations=1, warmup_rounds=0)
        if self.benchmark.enabled and clock.consumed != len(durations):
            raise RuntimeError(
                f"finetune_bench: pytest-benchmark timed {clock.consumed} of {len(durations)} steps with the replay "
                f"clock; was the timer overridden (--benchmark-timer is ignored for these tests)?"
            )


def extra_info(result: Any, phase: str, tp: Any, timed: Sequence[Any], path: Path) -> dict[str, Any]:
    """What a finetune_bench test records next to pytest-benchmark's timing stats."""
    from bench.compare.metrics import memory_metrics

    prov = result.provenance
    settings = prov.settings or {}
    memory = memory_metrics(result.phases)
    primary = result.primary_metric
    info: dict[str, Any] = {
        "strategy": result.strategy,
        "model": settings.get("model"),
        "dataset": settings.get("dataset"),
        "preset": settings.get("preset"),
        "device": prov.device,
        "device_name": prov.device_name,
        "precision": prov.precision,
        "primary_metric": primary,
        "accuracy": result.metrics.get(primary),
        "metrics": dict(result.metrics),
        "phase": phase,
        "samples_per_s": tp.samples_per_s,
        "real_tokens_per_s": tp.real_tokens_per_s,
        "samples_per_step": statistics.fmean(s.samples for s in timed),
        "tokens_per_step": statistics.fmean(s.tokens for s in timed),
        "timed_steps": len(timed),
        "warmup_steps": tp.warmup_steps,
        "profiled_steps": tp.profiled_steps,
        "peak_memory_bytes": memory.get("peak_memory"),
        "cpu_peak_rss_bytes": memory.get("cpu_peak_rss"),
        "gpu_peak_allocated_bytes": memory.get("gpu_peak_allocated"),
        "gpu_peak_reserved_bytes": memory.get("gpu_peak_reserved"),
        "params_total": result.params.total if result.params else None,
        "params_trainable": result.params.trainable if result.params else None,
        "mfu": result.mfu,
        "git_commit": prov.git_commit,
        "config": dict(prov.config or {}),
        "results_file": str(path),
    }
    info.update(comparable_info(result, path))
    return _json_safe(info)


def comparable_info(result: Any, path: Path) -> dict[str, Any]:
    """What lets ``bench compare`` pair two pytest-benchmark files as it pairs results files: the timed
    steps in data order with their work and speed index, the per-example outcomes, the counted step's work,
    the profiled window's top operators, and the identity of machine, device, precision, data and model."""
    from bench.compare.sources import entry_from_results, machine_identity
    from bench.core.plain import to_data
    from bench.results.store import load_results

    machine = machine_identity(load_results(path).machine) if path.is_file() else ""
    entry = entry_from_results([result], machine)
    steps = entry.steps
    return {
        "steps": {"seconds": list(steps.seconds), "samples": list(steps.samples), "tokens": list(steps.tokens),
                  "reference": list(steps.reference), "run": list(steps.run), "cpu": list(steps.cpu),
                  "reference_kind": steps.reference_kind},
        "outcomes": dict(result.outcomes),
        "work": to_data(result.work) if result.work is not None else None,
        "identity": dict(entry.identity),
        "top_ops": {op: [calls, us] for op, (calls, us) in entry.top_ops.items()},
        "run_to_run_noise_pct": entry.noise_floor_pct,
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# -------------------------------------------------------------------------------------------------
# Helpers.
# -------------------------------------------------------------------------------------------------


def _parse_options(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"--bench-option {item!r}: expected KEY=VALUE, e.g. --bench-option epochs=1")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def _harness(config: pytest.Config) -> tuple[Any, Any]:
    """A fresh bench harness (a new one per run: historic hooks must not pile up across tests) and the
    config-file settings of the invocation folder; ``--bench-plugin`` and ``--bench-plugins-dir`` as
    ``bench -p`` and ``--plugins-dir`` (``--bench-plugin no:NAME`` blocks a plugin)."""
    from bench.host.config import file_settings, spec_with_config_plugins
    from bench.host.harness import Harness

    settings = file_settings(None, Path(config.invocation_params.dir))
    # pytest runs the folder's conftest.py anyway: its config file's plugins are no new trust
    spec = spec_with_config_plugins(settings, config.getoption("bench_plugin"), config.getoption("bench_plugins_dir"),
                                    trusted=True)
    return Harness(spec), settings
