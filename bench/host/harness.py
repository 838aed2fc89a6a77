"""The object that owns setup and the lifecycle of one invocation (pytest's ``Config`` is the model).

A :class:`Harness` builds, in order, the plugin host (discovery in the documented order), the
strategy registry, the declared options, and from arguments the frozen :class:`BenchConfig`. The
three front ends use it alike: the ``bench`` command line (:mod:`bench.host.cli`), the pytest plugin
(:mod:`bench.pytest_plugin`) and the test kit (:func:`bench.testing.check_strategy`); and so does
every run process (:func:`child_main`), which rebuilds a harness from the config it was handed.

Lifecycle: :meth:`Harness.configured` calls ``bench_configure`` and, in a ``finally``,
``bench_unconfigure``, in the host and in every run process, whatever happens in between. Quiet mode
is applied there from the config. :meth:`Harness.run` runs strategies one after another, each in a
run folder of its own (:func:`bench.host.runfolders.allocate`), isolated in a ``spawn`` process
unless ``--no-isolate``, and saves the results file after every one.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from bench.core import progress
from bench.core.config import BenchConfig, PluginSpec
from bench.core.errors import BenchError, UsageError
from bench.core.fields import field_help, field_types
from bench.core.plain import to_data
from bench.host import estimate, runfolders
from bench.host.config import make_config, strategy_config, unknown_override_strategies
from bench.host.options import OptionParser
from bench.host.plugins import PluginHost
from bench.host.registry import StrategyRegistry
from bench.host.session import Session
from bench.host.worker import execute, failed_result
from bench.measure.peak import Peak, machine_peak, peak_data
from bench.results.schema import RunResult
from bench.results.store import result_from_data, write_json_atomic


class StrategyField(NamedTuple):
    """A strategy config field offered as a common ``bench run`` option: its type, help and owners."""

    type: Any
    help: str
    strategies: list[str]


class Harness:
    """Plugin host, registry, options and config of one invocation, and its lifecycle."""

    def __init__(self, plugins: PluginSpec | None = None, *, debug: bool = False) -> None:
        self.spec = plugins or PluginSpec()
        self.debug = debug
        self.host = PluginHost(debug=debug).load(self.spec)
        self.registry = StrategyRegistry.from_host(self.host)
        self.parser = OptionParser(owner=self._declaring_plugin)
        self.host.hook.bench_addoption.call_historic(kwargs={"parser": self.parser, "pluginmanager": self.host})
        self.strategy_fields = strategy_fields(self.registry, self.parser)
        self._config: BenchConfig | None = None
        self.session: Session | None = None

    def register(self, plugin: object, name: str) -> None:
        """Register one more plugin object (its historic hooks catch up) and rebuild the registry."""
        self.host.register(plugin, name, "-p")
        self.registry = StrategyRegistry.from_host(self.host)
        self.strategy_fields = strategy_fields(self.registry, self.parser)

    def _declaring_plugin(self) -> str:
        return self.host.owner_of_caller("bench_addoption", sys._getframe(1))

    @property
    def hook(self) -> Any:
        return self.host.hook

    @property
    def config(self) -> BenchConfig:
        if self._config is None:
            raise RuntimeError("Harness.config used before Harness.configured(config)")
        return self._config

    # -- configuration --------------------------------------------------------------------------------

    def make_config(self, cli_values: Mapping[str, Any], file_values: Mapping[str, Any] | None = None, *,
                    config_file: Path | None = None, resolve_device: bool = True,
                    quiet: bool = False) -> BenchConfig:
        """Resolve option defaults < config file < command-line values into a frozen config."""
        return make_config(self.parser, cli_values, file_values or {},
                           strategy_fields={k: f.type for k, f in self.strategy_fields.items()},
                           plugins=self.spec, config_file=config_file, resolve_device=resolve_device,
                           quiet=quiet, debug=self.debug)

    def known_option_names(self) -> list[str]:
        """Every option name a run accepts: declared options and strategy config fields."""
        return [o.dest for o in self.parser.options] + list(self.strategy_fields)

    def selection(self, config: BenchConfig) -> list[tuple[str, Any]]:
        """The strategies a run of ``config`` runs, in order (a name given twice runs twice), each with its
        resolved config; bad names, options and values fail here, before any work."""
        names = list(config.strategies) or self.registry.default_selection()
        if not names:
            raise UsageError("no strategy selected and no built-in strategy found; `bench list` shows what is "
                             "installed")
        for name in names:
            self.registry.get(name)  # unknown names fail here, with a suggestion
        unknown_override_strategies(config, self.registry.names())
        return [(name, strategy_config(self.registry.get(name).strategy, config)) for name in names]

    @contextmanager
    def configured(self, config: BenchConfig) -> Iterator[BenchConfig]:
        """``bench_configure`` now, ``bench_unconfigure`` when the block ends, whatever ends it."""
        self._config = config
        previous_quiet = progress.quiet()
        progress.configure(quiet=config.quiet)
        try:
            self.hook.bench_configure.call_historic(kwargs={"config": config})
            yield config
        finally:
            try:
                self.hook.bench_unconfigure(config=config)
            finally:
                progress.configure(quiet=previous_quiet)

    def peak(self) -> Peak:
        """The device's peak FLOP/s for this run, settled once: every row's MFU is against it."""
        from bench.data.assets import cache_dir

        config = self.config
        return machine_peak(config.device, config.precision, cache_dir(),
                            remeasure=bool(config.getoption("remeasure_peak", False)))

    def machine_info(self) -> dict[str, Any]:
        machine: dict[str, Any] = self.hook.bench_generate_machine_info() or {}
        self.hook.bench_update_machine_info(config=self.config, machine_info=machine)
        return machine

    # -- running --------------------------------------------------------------------------------------

    def run(self, names: Sequence[str], on_start: Callable[[str], None] | None = None,
            say: Callable[[str], None] | None = None) -> Session:
        """Run each strategy in turn, each in its own run folder; the results file is saved after each.
        Ctrl-C stops after saving, with the interrupted row marked (the session stays in ``self.session``)."""
        config = self.config
        machine = self.machine_info()
        if config.peak_flops is None:
            peak = self.peak()
            config = dataclasses.replace(config, peak_flops=peak.flops, peak_source=peak.source)
        else:
            peak = Peak(config.peak_flops, config.peak_source, config.device, config.precision)
        machine["peak"] = peak_data(peak)
        if say is not None:
            theory = (f"; theoretical {peak.theoretical_flops / 1e9:,.1f} GFLOP/s ({peak.theoretical_source})"
                      if peak.theoretical_flops else "")
            say(f"peak: {peak.flops / 1e9:,.1f} GFLOP/s ({peak.source}){theory}")
        self.session = session = Session(config.out_dir, machine,
                                         lambda r: self.hook.bench_result_ready(config=config, result=r))
        session.save()
        keys = {name: self._run_key(name, config) for name in names}
        record = self._runtime_record(peak)
        if say is not None:
            guess = estimate.estimate([(n, keys[n]) for n in names], estimate.read_record(record) if record else {},
                                      preset=config.preset, device=config.device, peak_flops=peak.flops,
                                      custom=_custom_sizes(config), repeats=config.repeats)
            say(guess.line(peak.flops))
        for repeat in range(config.repeats):  # interleaved: A B C, A B C, ... so a slow minute hits no one alone
            run_config = dataclasses.replace(config, seed=config.seed + repeat)
            for name in names:
                if on_start is not None:
                    on_start(name if config.repeats == 1 else f"{name} (repeat {repeat + 1}/{config.repeats}, "
                                                              f"seed {run_config.seed})")
                run_dir = runfolders.allocate(config.out_dir, name)
                started = time.perf_counter()
                try:
                    result = run_isolated(run_config, name, run_dir) if config.isolate else \
                        execute(self, name, run_dir, run_config)
                except KeyboardInterrupt:
                    session.add(failed_result(run_config, name, "interrupted by the user (Ctrl-C)",
                                              "KeyboardInterrupt", time.perf_counter() - started, run_dir=run_dir))
                    raise
                session.add(dataclasses.replace(result, repeat=repeat))
                if record is not None and result.passed and keys[name]:
                    estimate.add_to_record(record, keys[name], time.perf_counter() - started)
        return session

    def _run_key(self, name: str, config: BenchConfig) -> str:
        try:
            cfg = strategy_config(self.registry.get(name).strategy, config)
        except BenchError:
            return ""  # the run fails with this error in its row; nothing to estimate or record
        return estimate.run_key(name, cfg, config.settings())

    def _runtime_record(self, peak: Peak) -> Path | None:
        """This machine's record of run times (None: no fingerprint to file it under)."""
        from bench.data.assets import cache_dir

        return estimate.record_path(cache_dir(), peak.fingerprint) if peak.fingerprint else None


def _custom_sizes(config: BenchConfig) -> bool:
    """True when the run's work is not a preset's own (options, another model or data, shape-only)."""
    return bool(config.strategy_values or config.strategy_overrides or config.model or config.dataset
                or config.random_weights or config.seq_len)


def strategy_fields(registry: StrategyRegistry, parser: OptionParser) -> dict[str, StrategyField]:
    """Every strategy config field (the union over strategies) not shadowed by a declared option."""
    fields: dict[str, StrategyField] = {}
    for entry in registry:
        types = field_types(entry.strategy.config_class)
        helps = field_help(entry.strategy.config_class)
        for name, typ in types.items():
            if parser.get(name) is not None:
                continue
            if name in fields:
                fields[name].strategies.append(entry.name)
            else:
                fields[name] = StrategyField(typ, helps.get(name, ""), [entry.name])
    return fields


# -------------------------------------------------------------------------------------------------
# The isolated run process.
# -------------------------------------------------------------------------------------------------


def run_isolated(config: BenchConfig, name: str, run_dir: Path) -> RunResult:
    """Run one strategy in a fresh ``spawn`` process; its peak memory and any crash stay its own."""
    result_file = runfolders.result_path(run_dir)
    result_file.unlink(missing_ok=True)
    ctx = multiprocessing.get_context("spawn")
    alive = ctx.Event()  # set by the run process once it reports its own progress
    proc = ctx.Process(target=child_main, args=(config, name, str(run_dir), alive), name=f"bench-{name}")
    started = time.perf_counter()
    proc.start()
    try:
        _starting(proc, alive, name)
        proc.join()
    except KeyboardInterrupt:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        raise
    wall = time.perf_counter() - started
    if result_file.exists():
        result = result_from_data(json.loads(result_file.read_text(encoding="utf-8")))
        return dataclasses.replace(result, base_dir=str(config.out_dir.resolve()))
    return failed_result(config, name, _death(proc.exitcode), "ProcessDied", wall, run_dir=run_dir)


def _starting(proc: Any, alive: Any, name: str) -> None:
    """While a run process starts (interpreter, imports: a minute on a busy 2-core machine) and before it
    reports for itself, the host keeps the log alive: a line every heartbeat interval, where lines are on."""
    activity = progress.Activity()
    activity.label = name
    while proc.is_alive() and not alive.wait(1.0):
        activity.tick()


def child_main(config: BenchConfig, name: str, run_dir: str, alive: Any = None) -> None:
    """Entry point of a run process: set up as the host did, run one strategy, write its result."""
    config = dataclasses.replace(config, in_run_process=True)
    folder = Path(run_dir)
    try:
        progress.configure(quiet=config.quiet)
        with progress.tracking(name):  # plugin loading and setup are covered too
            if alive is not None:
                alive.set()
            harness = Harness(config.plugins, debug=config.debug)
            with harness.configured(config):
                result = execute(harness, name, folder)
                write_json_atomic(runfolders.result_path(folder), to_data(result))
        return
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:  # plugin loading or configuration failed in the child: still leave a row
        if runfolders.result_path(folder).exists():
            print(f"bench: {name}: bench_unconfigure failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        import traceback

        result = failed_result(config, name, str(exc), type(exc).__name__, usage=isinstance(exc, BenchError),
                               run_dir=folder, traceback_text=traceback.format_exc())
    write_json_atomic(runfolders.result_path(folder), to_data(result))


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        hint = " (SIGKILL: often the kernel's out-of-memory killer)" if sig == "SIGKILL" else ""
        return f"run process was killed by {sig}{hint} before it wrote a result"
    return f"run process exited with code {exitcode} before it wrote a result"
