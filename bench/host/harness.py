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
import os
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
from bench.host import estimate, launch, processes, runfolders
from bench.host.config import make_config, strategy_config, unknown_override_strategies
from bench.host.options import OptionParser
from bench.host.plugins import PluginHost
from bench.host.registry import StrategyRegistry
from bench.host.session import Session
from bench.host.worker import INTERRUPTED, OUT_OF_MEMORY, TIMEOUT, error_info, execute, failed_result
from bench.measure.peak import Peak, machine_peak, peak_data
from bench.results.schema import RunResult
from bench.results.store import result_from_data, write_json_atomic


class StrategyField(NamedTuple):
    """A strategy config field offered as a common ``bench run`` option: its type, help and owners."""

    type: Any
    help: str
    strategies: list[str]


class Planned(NamedTuple):
    """One strategy run of a ``bench run``: the strategy, which repeat, and its config (the repeat's seed)."""

    name: str
    repeat: int
    config: BenchConfig

    def label(self, what: str) -> str:
        """What the progress line says: ``what``, and the repeat when there are several."""
        repeats = self.config.repeats
        return what if repeats == 1 else f"{what} (repeat {self.repeat + 1}/{repeats}, seed {self.config.seed})"


def peak_threads(device: str) -> int:
    """The intra-op threads a CPU peak was measured with (this process's); 0 for a GPU (a per-device figure)."""
    import torch

    return 0 if device == "cuda" else torch.get_num_threads()


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
        self._claimed_dir: Path | None = None

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

    def check_inputs(self, config: BenchConfig, names: Sequence[str]) -> None:
        """Read what every selected strategy will read, once, before any of them starts: a local
        ``--model`` folder (its safetensors files whole) and a local ``--dataset`` file with the task's
        reader (encoding, columns, labels). A problem is one UsageError naming the file, not one failed
        row per strategy after the first has trained."""
        tasks = list(dict.fromkeys(self.registry.get(name).strategy.task for name in names))
        if config.model:  # a folder is checked whole; a hub id is left to the run (no download here)
            from bench.models.loading import resolve_model

            resolve_model(config.model, tasks[0] if tasks else "classification", synthetic=config.random_weights)
        if config.random_weights or not config.dataset:
            return
        from bench.data.classification import looks_like_path

        path = Path(config.dataset).expanduser()
        if not path.is_file() and looks_like_path(config.dataset):
            from bench.core.errors import DataError

            raise DataError(f"--dataset {config.dataset}: file not found; give an existing CSV or JSONL file, a hub "
                            "dataset id (owner/name), or nothing for the default data")
        if path.is_file():
            if "classification" in tasks:
                from bench.data.classification import load_classification_file

                load_classification_file(path, text_column=config.getoption("text_column", "text"),
                                         label_column=config.getoption("label_column", "label"))
            if "causal-lm" in tasks:
                from bench.data.instructions import load_alpaca_jsonl

                load_alpaca_jsonl(path)

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

    @contextmanager
    def claimed(self, config: BenchConfig, *, resume: bool = False) -> Iterator[Path]:
        """Own the output folder for the block (:func:`bench.host.runfolders.claim`): locked against other
        runs, and empty unless ``resume``. :meth:`run` claims it itself when the caller has not."""
        with runfolders.claim(config.out_dir, resume=resume, command=_command_line(config)) as folder:
            self._claimed_dir = folder
            try:
                yield folder
            finally:
                self._claimed_dir = None

    def run(self, names: Sequence[str], on_start: Callable[[str], None] | None = None,
            kept: Sequence[RunResult] = (), created_utc: str | None = None,
            say: Callable[[str], None] | None = None, jobs: Sequence[tuple[str, int]] | None = None) -> Session:
        """Run each strategy in turn, ``--repeats`` times interleaved (A B C, A B C, ...; repeat ``r`` with
        seed ``seed + r``), each run in its own run folder; the results file is saved after each.
        ``kept``: results a resumed run keeps (they stay first in the file); ``jobs``: the (strategy,
        repeat) runs still to do (a resume's; default: every repeat of every name). A stop (Ctrl-C,
        SIGTERM, SIGHUP) ends the running strategy, saves its row as interrupted with the phase it was
        in, and re-raises (the session stays in ``self.session``).
        With ``--nproc-per-node`` each strategy that has a parallel option runs as a torch.distributed job
        (after a one-process run of it, the scaling reference, when N > 1 on one node); under an outer launcher
        this process runs every strategy as its rank (:mod:`bench.host.launch`); only rank 0 claims the
        output folder and writes the results file."""
        config = self.config
        settings = config.launch
        main = not settings.outer or launch.outer_context().is_main
        if main and (self._claimed_dir is None or self._claimed_dir != config.out_dir):
            with self.claimed(config, resume=bool(kept)):
                return self.run(names, on_start, kept, created_utc, say, jobs)
        machine = self.machine_info()
        if config.peak_flops is None:
            peak = launch.agreed_peak(self.peak) if settings.outer else self.peak()  # outer: rank 0 settles it
            config = dataclasses.replace(config, peak_flops=peak.flops, peak_source=peak.source,
                                         peak_threads=peak_threads(config.device))
        else:
            peak = Peak(config.peak_flops, config.peak_source, config.device, config.precision)
        machine["peak"] = peak_data(peak)
        if say is not None:
            theory = (f"; theoretical {peak.theoretical_flops / 1e9:,.1f} GFLOP/s ({peak.theoretical_source})"
                      if peak.theoretical_flops else "")
            say(f"peak: {peak.flops / 1e9:,.1f} GFLOP/s ({peak.source}){theory}")
        self.session = session = Session(config.out_dir, machine,
                                         (lambda r: self.hook.bench_result_ready(config=config, result=r)) if main
                                         else None, write=main, kept=kept, created_utc=created_utc,
                                         invocation={"argv": list(config.argv)} if config.argv else {})
        session.save()
        keys = {name: self._run_key(name, config) for name in names}
        record = self._runtime_record(peak) if main else None
        if say is not None:
            guess = estimate.estimate([(n, keys[n]) for n in names], estimate.read_record(record) if record else {},
                                      preset=config.preset, device=config.device, peak_flops=peak.flops,
                                      custom=_custom_sizes(config), repeats=config.repeats)
            say(guess.line(peak.flops))
        if jobs is None:  # interleaved: A B C, A B C, ... so a slow minute hits no one alone
            jobs = [(name, repeat) for repeat in range(config.repeats) for name in names]
        plan = [Planned(name, repeat, dataclasses.replace(config, seed=config.seed + repeat)) for name, repeat in jobs]
        if settings.outer:
            launch.run_as_rank(self, plan, session, on_start, self.parallel_capable)
            return session
        for item in plan:
            name = item.name
            if not settings.launches:
                began = time.perf_counter()
                result = self._run_one(session, item, item.label(name), on_start, distributed=False)
                if record is not None and result.passed and keys[name]:
                    estimate.add_to_record(record, keys[name], time.perf_counter() - began)
                continue
            if not self.parallel_capable(name):
                self._run_one(session, item, item.label(f"{name} (no parallel option: one process)"), on_start,
                              distributed=False)
                continue
            world = settings.nproc_per_node * settings.nnodes
            if settings.scaling_reference and settings.nnodes == 1 and settings.nproc_per_node > 1:
                self._run_one(session, item, item.label(f"{name} in one process (the scaling reference)"), on_start,
                              distributed=False)
            self._run_one(session, item,
                          item.label(f"{name} on {world} processes ({launch.backend_for(config.device)})"),
                          on_start, distributed=True)
        return session

    def _run_one(self, session: Session, item: Planned, label: str, on_start: Callable[[str], None] | None, *,
                 distributed: bool) -> RunResult:
        config, name = item.config, item.name
        if on_start is not None:
            on_start(label)
        run_dir = runfolders.allocate(config.out_dir, name)
        started = time.perf_counter()
        try:
            if distributed:
                result = launch.run_job(config, name, run_dir, rank_main)
            else:
                result = run_isolated(config, name, run_dir) if config.isolate else execute(self, name, run_dir, config)
        except KeyboardInterrupt as exc:
            what = getattr(exc, "signal_name", "SIGINT")
            what = "Ctrl-C (SIGINT)" if what == "SIGINT" else what
            session.add(dataclasses.replace(
                failed_result(config, name, f"stopped by {what}{_phase_of(run_dir)}", INTERRUPTED,
                              time.perf_counter() - started, run_dir=run_dir), repeat=item.repeat))
            raise
        result = dataclasses.replace(result, repeat=item.repeat)
        session.add(result)
        return result

    def parallel_capable(self, name: str) -> bool:
        """Whether strategy ``name`` can run as a torch.distributed job: its config has a ``parallel`` option
        (every strategy on the shared training path: it derives from TrainingConfig or SftTrainingConfig)."""
        from bench.training.parallel import is_parallel_config

        return is_parallel_config(self.registry.get(name).strategy.config_class)

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
    """Run one strategy in a fresh ``spawn`` process of its own process group; its peak memory and any
    crash stay its own. ``--timeout`` ends it (and all it started) with a ``timeout`` row; a stop
    signal in the host ends it and re-raises; a death under ``--max-memory`` is an ``out of memory`` row."""
    result_file = runfolders.result_path(run_dir)
    result_file.unlink(missing_ok=True)
    ctx = multiprocessing.get_context("spawn")
    heard = ctx.Value("d", 0.0)  # stamped by the run process with each progress line it writes
    proc = ctx.Process(target=child_main, args=(config, name, str(run_dir), os.getpid(), heard), name=f"bench-{name}")
    timeout = float(config.getoption("timeout") or 0) or None
    started = time.perf_counter()
    proc.start()
    try:
        _watch(proc, heard, name, run_dir, None if timeout is None else started + timeout)
        proc.join(None if timeout is None else max(0.0, started + timeout - time.perf_counter()))
    except BaseException:
        processes.stop(proc)
        raise
    wall = time.perf_counter() - started
    if proc.is_alive():
        processes.stop(proc)
        return failed_result(config, name, f"ran longer than --timeout {timeout:g} s{_phase_of(run_dir)}; stopped it "
                             "and every process it started", TIMEOUT, wall, run_dir=run_dir)
    if result_file.exists():
        result = result_from_data(json.loads(result_file.read_text(encoding="utf-8")))
        return dataclasses.replace(result, base_dir=str(config.out_dir.resolve()))
    max_memory = config.getoption("max_memory")
    if max_memory:
        return failed_result(config, name, f"the run process {_death(proc.exitcode)}{_phase_of(run_dir)} under "
                             f"--max-memory {max_memory / 2**30:.2f} GiB: it most likely hit the cap (RLIMIT_AS)",
                             OUT_OF_MEMORY, wall, run_dir=run_dir)
    return failed_result(config, name, f"run process {_death(proc.exitcode)} before it wrote a result"
                         f"{_phase_of(run_dir)}", "ProcessDied", wall, run_dir=run_dir)


_HOST_GRACE_S = 3.0  # the host speaks only after the run process's own heartbeat was due and did not come


def _watch(proc: Any, heard: Any, name: str, run_dir: Path, deadline: float | None) -> None:
    """Wait for the run process (until ``deadline``, a ``time.perf_counter`` value: the caller's --timeout)
    and keep the log alive meanwhile. The run process stamps ``heard`` with each progress line it writes;
    when neither it nor this loop wrote one for a few seconds past its heartbeat interval (a process
    still starting, or one whose interpreter a long C call holds, such as the profiler's trace export),
    the host writes one, with the phase from the run folder's status file. Only where lines are on."""
    began = spoke = time.monotonic()
    while proc.is_alive():
        proc.join(1.0)
        if deadline is not None and time.perf_counter() >= deadline:
            return
        now = time.monotonic()
        if now - max(spoke, heard.value) >= progress.HEARTBEAT_S + _HOST_GRACE_S and progress.lines_enabled() and proc.is_alive():
            phase = runfolders.read_status(run_dir).get("phase")
            doing = phase if phase in ("starting", "between phases") else \
                f"in phase {phase!r}" if isinstance(phase, str) and phase else "starting"
            print(f"bench: {name}: {doing}, {progress.duration(now - began)} since its process started "
                  "(the run process is busy and silent)", file=sys.stderr, flush=True)
            spoke = now


def child_main(config: BenchConfig, name: str, run_dir: str, parent_pid: int | None = None,
               heard: Any = None) -> None:
    """Entry point of a run process: set up as the host did, run one strategy, write its result."""
    processes.become_run_process(parent_pid or os.getppid(), config.getoption("max_memory"))
    config = dataclasses.replace(config, in_run_process=True)
    folder = Path(run_dir)
    runfolders.write_status(folder, "starting")
    try:
        progress.configure(quiet=config.quiet)
        if heard is not None:
            progress.report_lines_to(heard)
        with progress.tracking(name):  # plugin loading and setup are covered too
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
        info = error_info(exc)
        result = failed_result(config, name, info.message, info.type, usage=info.usage, run_dir=folder,
                               traceback_text=info.traceback)
    write_json_atomic(runfolders.result_path(folder), to_data(result))


def rank_main(config: BenchConfig, name: str, run_dir: str, host_env: dict[str, str]) -> None:
    """Entry point of one rank of a torch.distributed job (:func:`bench.host.launch.run_job`): set up as the
    host did, as :func:`child_main` does, and run the strategy as that rank (:func:`bench.host.launch.run_rank`)."""
    launch.run_rank(config, name, Path(run_dir), lambda cfg: Harness(cfg.plugins, debug=cfg.debug), host_env)


def _phase_of(run_dir: Path) -> str:
    """`` in phase 'train'`` from the run's status file (what it was doing when it was stopped), or ``""``."""
    phase = runfolders.read_status(run_dir).get("phase")
    return f" in phase {phase!r}" if isinstance(phase, str) and phase else ""


def _command_line(config: BenchConfig) -> str:
    return " ".join(["bench", *config.argv]) if config.argv else "bench run"


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        hint = " (SIGKILL: often the kernel's out-of-memory killer)" if sig == "SIGKILL" else ""
        return f"was killed by {sig}{hint}"
    return f"exited with code {exitcode}"
