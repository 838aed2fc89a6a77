"""Running one strategy in the current process: the built-in ``runner`` plugin and :func:`execute`.

:func:`execute` turns whatever happens (an output, an exception) into a :class:`RunResult`, the way
pytest's ``CallInfo.from_call`` turns a test call into a report. The host calls it in-process
(``--no-isolate``), or a run process does (:func:`bench.host.harness.child_main`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core import progress
from bench.core.config import BenchConfig
from bench.core.context import RunContext
from bench.core.dist import DistContext
from bench.core.errors import BenchError, UsageError
from bench.core.markers import hookimpl
from bench.core.plain import to_data
from bench.core.strategy import StrategyOutput, declared_noise_pct
from bench.host import runfolders
from bench.host.config import strategy_config
from bench.measure.energy import counter_for
from bench.measure.machine import cpu_model_and_flags
from bench.measure.meter import Meter, SpeedIndex, achieved_flops
from bench.measure.peak import Peak, judge_mfu
from bench.measure.plan import MemoryPlan, PlanComplete, device_free_memory
from bench.results.schema import EnergyInfo, ErrorInfo, Provenance, RunResult, TechniqueUse, WorkMeasure

if TYPE_CHECKING:
    from bench.host.harness import Harness


@hookimpl(trylast=True)
def bench_run_strategy(run: RunContext) -> StrategyOutput:
    """Default implementation: call the strategy's own ``run``."""
    return run.strategy.run(run)


def execute(harness: Harness, name: str, run_dir: Path, config: BenchConfig | None = None,
            dist: DistContext | None = None) -> RunResult:
    """Run strategy ``name`` here with ``config`` (default: the harness's; a repeat's has its own seed),
    writing its artifacts under ``run_dir``, and return its result; never raises for a strategy's
    failure (its exception becomes a failed result). ``dist``: this process is that rank of a
    torch.distributed job (:mod:`bench.host.launch`), and the result is this rank's own."""
    config = config or harness.config
    started = time.perf_counter()
    _quiet_libraries()
    hook = harness.host.hook
    entry = harness.registry.get(name)
    strategy = entry.strategy
    try:
        cfg = strategy_config(strategy, config)
        cfg_data = to_data(cfg)
    except BenchError as exc:
        cfg, cfg_data = None, {}
        setup_error: BaseException | None = exc
    else:
        setup_error = None
    devices = tuple(getattr(strategy, "devices", None) or ("cpu", "cuda"))
    if setup_error is None and config.device not in devices:
        setup_error = UsageError(f"strategy {name!r} supports the devices {', '.join(devices)}, not "
                                 f"{config.device!r}; run it with --device {devices[0]}")
    provenance = _provenance(config, entry, cfg_data)
    counter, energy = counter_for(config.device)
    meter = Meter(config.device, config.warmup_steps, energy=counter)
    meter.on_phase = functools.partial(_record_phase, run_dir)
    runfolders.write_status(run_dir, "setup before the first phase")
    if config.getoption("speed_index", True) and not config.plan_only:
        meter.speed_index = SpeedIndex(config.device)
    run = RunContext(strategy, cfg, config, meter, run_dir, runfolders.profile_dir(run_dir), hook, dist=dist)
    output: StrategyOutput | None = None
    error = setup_error
    if error is None:
        try:
            _seed_everything(config.seed)
            profiler = hook.bench_make_profiler(run=run)
            if profiler is not None:
                meter.profiler = profiler
            with progress.tracking(name):
                output = hook.bench_run_strategy(run=run)
            if output is None:
                raise RuntimeError(f"no plugin ran strategy {name!r} (bench_run_strategy returned None)")
        except Exception as exc:
            error = exc
    result = _result(name, provenance, meter, output, error, time.perf_counter() - started, run)
    result = dataclasses.replace(_with_location(result, run_dir, config),
                                 energy=EnergyInfo(energy.measured, energy.source, energy.detail))
    for plugin, call in harness.host.call_each("bench_run_finished", run=run, result=result):
        try:
            call()
        except Exception as exc:  # an observer must not fail the run, nor stop the other observers
            print(f"bench: plugin {plugin!r} bench_run_finished failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return result


def _record_phase(run_dir: Path, phase: str | None) -> None:
    runfolders.write_status(run_dir, phase or "between phases")


def plan_strategy(harness: Harness, config: BenchConfig, name: str) -> MemoryPlan:
    """Run strategy ``name`` in plan mode: its own setup (model, what trains, speed techniques) on fake
    tensors, up to the first training step, and return what that step would hold and whether it fits
    the device. Raises UsageError naming the strategy when it cannot be planned."""
    import tempfile

    config = dataclasses.replace(config, plan_only=True, isolate=False)
    entry = harness.registry.get(name)
    cfg = strategy_config(entry.strategy, config)
    free, what = device_free_memory(config.device)
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        folder = Path(tmp)
        run = RunContext(entry.strategy, cfg, config, Meter("cpu", config.warmup_steps), folder, folder / "profile",
                         harness.host.hook)
        _quiet_libraries()
        try:
            harness.host.hook.bench_run_strategy(run=run)
        except PlanComplete as done:
            figures = done.figures
        except BenchError as exc:
            raise type(exc)(f"bench plan: strategy {name!r}: {exc}") from None
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UsageError(f"bench plan: strategy {name!r} cannot be planned ({type(exc).__name__}: {first}); "
                             "strategies on the shared training path (train_and_test, run_sft) can") from None
        else:
            raise UsageError(f"bench plan: strategy {name!r} finished without reaching the shared training loop, "
                             "so it cannot be planned")
    from bench.models.loading import resolve_model

    task = entry.strategy.task
    model = config.model or resolve_model(None, task, synthetic=True)
    return MemoryPlan(name, model, config.device, config.precision, figures, free, what)


def _with_location(result: RunResult, run_dir: Path, config: BenchConfig) -> RunResult:
    return dataclasses.replace(result, run_dir=runfolders.relative(run_dir, config.out_dir),
                               base_dir=str(config.out_dir.resolve()))


def _result(name: str, provenance: Provenance, meter: Meter, output: StrategyOutput | None,
            error: BaseException | None, wall_s: float, run: RunContext) -> RunResult:
    common: dict[str, Any] = {
        "strategy": name,
        "provenance": provenance,
        "phases": tuple(meter.phases),
        "steps": tuple(meter.steps),
        "throughput": meter.throughput(),
        "wall_s": wall_s,
        "techniques": {k: TechniqueUse(on, detail) for k, (on, detail) in run.techniques.items()},
        "activations": meter.activations.get("train") or next(iter(meter.activations.values()), None),
        "work": _work(meter),
        "speed_index": meter.speed_index.name if meter.speed_index is not None else "",
        "run_to_run_noise_pct": declared_noise_pct(run.strategy),
    }
    if error is not None or output is None:
        assert error is not None
        return RunResult(status="failed", error=error_info(error, run), **common)
    # An output that cannot be saved as it is, or whose primary metric is not a number, fails its row;
    # everything of it that can be saved is kept (it once came back as "ProcessDied", metrics lost).
    bad = _unserialisable_error(output) or (None if run.synthetic else _primary_metric_error(output))
    return RunResult(
        status="failed" if bad else "passed",
        error=error_info(bad, run) if bad else None,
        metrics={k: float(v) for k, v in output.metrics.items() if _is_number(v)},
        primary_metric=output.primary_metric,
        params=output.params,
        trained_parameters=tuple(output.trained_parameters),
        trained_modules=tuple(output.trained_modules),
        extra={k: v for k, v in output.extra.items() if _json_safe(v)},
        metric_samples={k: int(v) for k, v in output.metric_samples.items()},
        outcomes={k: "".join("1" if x else "0" for x in v) for k, v in output.correct.items()},
        data_sha256=output.data_sha256,
        model_sha256=output.model_sha256,
        **_mfu(meter, run.bench),
        **common,
    )


class InvalidMetric(Exception):
    """The primary metric is missing, NaN or infinite: the row fails (its other figures are kept), since a
    NaN loss or accuracy is a broken run, not a result."""


def _primary_metric_error(output: StrategyOutput) -> InvalidMetric | None:
    name = output.primary_metric
    if name not in output.metrics:
        return InvalidMetric(f"the primary metric {name!r} is missing (metrics: {', '.join(output.metrics) or 'none'})")
    value = float(output.metrics[name])
    if not math.isfinite(value):
        return InvalidMetric(f"the primary metric {name!r} is {value}, not a finite number (training diverged, or "
                             "the model or data is broken)")
    return None


def error_info(error: BaseException, run: RunContext | None = None) -> ErrorInfo:
    """A failed row's error: its kind, one-line summary and traceback; out-of-memory errors (CPU under
    ``--max-memory``, CUDA) become the ``out of memory`` kind naming the phase and the bytes allocated."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    oom = out_of_memory(error, run.meter.failed_phase if run is not None else None)
    if oom is not None:
        return ErrorInfo(OUT_OF_MEMORY, oom, text)
    return ErrorInfo(type(error).__name__, str(error), text, usage=isinstance(error, BenchError))


def _work(meter: Meter) -> WorkMeasure | None:
    counts = meter.work.get("train") or next(iter(meter.work.values()), None)
    if counts is None:
        return None
    return WorkMeasure(counts.samples, counts.padded_tokens, counts.flops, counts.allocated_bytes, dict(counts.ops))


class UnserialisableOutput(Exception):
    """A strategy returned metrics or extra that JSON cannot hold: its row fails, naming the keys."""


def _unserialisable_error(output: StrategyOutput) -> UnserialisableOutput | None:
    bad = [f"StrategyOutput.metrics[{key!r}] ({type(value).__name__}: not a number)"
           for key, value in output.metrics.items() if not _is_number(value)]
    for key, value in output.extra.items():
        problem = _json_problem(value)
        if problem:
            bad.append(f"StrategyOutput.extra[{key!r}] ({type(value).__name__}: {problem})")
    if not bad:
        return None
    return UnserialisableOutput(f"{'; '.join(bad)}: not JSON-serialisable; give plain numbers, strings, lists and "
                                "dicts")


def _json_problem(value: Any) -> str | None:
    """Why ``value`` cannot go into the results file as JSON, or None."""
    import json

    try:
        json.dumps(to_data(value), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _json_safe(value: Any) -> bool:
    return _json_problem(value) is None


def _is_number(value: Any) -> bool:
    """A metric value: an int or float (numpy and 0-d tensors included), not a bool or a string."""
    if isinstance(value, (bool, str, bytes)):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


# The kinds of a failed row that the host writes when it ends a run (ErrorInfo.type).
OUT_OF_MEMORY = "out of memory"
TIMEOUT = "timeout"
INTERRUPTED = "interrupted"


def out_of_memory(error: BaseException, phase: str | None) -> str | None:
    """The message of an ``out of memory`` row when ``error`` is one (CUDA's, or the CPU's under
    ``--max-memory``: MemoryError, torch's "can't allocate memory"), naming the phase and the bytes
    allocated; None for any other error."""
    torch = sys.modules.get("torch")
    text = " ".join(str(error).split())
    where = f" in phase {phase!r}" if phase else ""
    cuda_oom = torch is not None and isinstance(error, torch.cuda.OutOfMemoryError)
    if cuda_oom:
        assert torch is not None
        import re

        tried = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]?i?B)", text)
        held = ""
        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
            held = (f": {_gib(torch.cuda.memory_allocated())} GiB allocated by tensors, "
                    f"{_gib(torch.cuda.memory_reserved())} GiB reserved by torch, of the device's {_gib(total)} GiB")
        return (f"CUDA out of memory{where}{held}" + (f"; it tried to allocate {tried.group(1)} more" if tried else "")
                + "; try a smaller --batch-size or --max-length, --train-layers, or lora (`bench plan` shows the "
                  "breakdown)")
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "can't allocate memory" in text):
        import re
        import resource

        tried = re.search(r"tried to allocate (\d+) bytes", text)
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        cap = f" under --max-memory {_gib(limit)} GiB (RLIMIT_AS: address space)" if limit != resource.RLIM_INFINITY \
            else ""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return (f"the run process ran out of memory{where}{cap}" +
                (f" allocating {_gib(int(tried.group(1)))} GiB more" if tried else "") +
                f"; its peak RSS was {_gib(peak)} GiB; try a smaller --batch-size or --max-length, or more memory")
    return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.2f}"


def _mfu(meter: Meter, config: BenchConfig) -> dict[str, Any]:
    """MFU of the main phase: counted FLOPs per token x input tokens/s of timed steps / the run's peak
    (the host's, the same for every row); an MFU above 100% is not reported: the peak is then wrong."""
    if config.peak_flops is None:
        from bench.measure.peak import machine_peak

        peak = machine_peak(config.device, config.precision, None)
    else:
        peak = Peak(config.peak_flops, config.peak_source, config.device, config.precision)
    found: dict[str, Any] = {"peak_flops": peak.flops, "peak_flops_source": peak.source}  # every row: the run's
    phase = "train" if "train" in meter.flops_per_token else next(iter(meter.flops_per_token), None)
    if phase is None:
        return {**found, "mfu_note": "no FLOPs counted"}
    flops_per_token = meter.flops_per_token[phase]
    achieved = achieved_flops(meter.steps, phase, flops_per_token)
    if achieved is None:
        return {**found, "flops_per_token": flops_per_token, "mfu_note": f"no timed {phase} steps"}
    mfu, note = judge_mfu(achieved, peak)
    return {**found, "flops_per_token": flops_per_token, "mfu": mfu, "mfu_note": note}


def failed_result(config: BenchConfig, name: str, message: str, kind: str = "ProcessDied",
                  wall_s: float = 0.0, usage: bool = False, run_dir: Path | None = None,
                  traceback_text: str = "") -> RunResult:
    """A failed row for a run that left no result of its own (killed, crashed, interrupted)."""
    provenance = Provenance(config.seed, config.device, "", 0, config.precision, platform.python_version(),
                            "", "", git_commit(), "?", None, None, {}, config.settings())
    result = RunResult(strategy=name, status="failed", provenance=provenance,
                       error=ErrorInfo(kind, message, traceback_text, usage=usage), wall_s=wall_s)
    return _with_location(result, run_dir, config) if run_dir is not None else result


# -------------------------------------------------------------------------------------------------
# Provenance.
# -------------------------------------------------------------------------------------------------


def _provenance(config: BenchConfig, entry: Any, cfg_data: dict[str, Any]) -> Provenance:
    import torch
    import transformers

    if config.device == "cuda":
        device_name, device_count = torch.cuda.get_device_name(), torch.cuda.device_count()
    else:
        device_name, device_count = cpu_model_and_flags()[0], 1
    return Provenance(
        seed=config.seed,
        device=config.device,
        device_name=device_name,
        device_count=device_count,
        precision=config.precision,
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        git_commit=git_commit(),
        plugin=entry.plugin,
        distribution=entry.distribution,
        plugin_version=entry.version,
        config=cfg_data,
        settings=config.settings(),
    )


def git_commit() -> str | None:
    """The finetune-bench checkout's commit (with ``-dirty``), or None when not in a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        # --no-optional-locks: status must not take the checkout's index.lock to refresh the index; a
        # git killed at the timeout (a loaded machine) or with bench would leave the lock behind and
        # stop the user's next git command
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def _quiet_libraries() -> None:
    """transformers' load reports and progress bars would drown ours; errors still show."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
