"""Running one strategy in the current process: the built-in ``runner`` plugin and :func:`execute`.

:func:`execute` turns whatever happens (an output, an exception) into a :class:`RunResult`, the way
pytest's ``CallInfo.from_call`` turns a test call into a report. The host calls it in-process
(``--no-isolate``), or a run process does (:func:`bench.host.harness.child_main`).
"""

from __future__ import annotations

import dataclasses
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
from bench.core.errors import BenchError, UsageError
from bench.core.markers import hookimpl
from bench.core.plain import to_data
from bench.core.strategy import StrategyOutput
from bench.host import runfolders
from bench.host.config import strategy_config
from bench.measure.energy import counter_for
from bench.measure.machine import cpu_model_and_flags
from bench.measure.meter import Meter, SpeedIndex
from bench.measure.peak import Peak, judge_mfu
from bench.measure.plan import MemoryPlan, PlanComplete, device_free_memory
from bench.results.schema import EnergyInfo, ErrorInfo, Provenance, RunResult, TechniqueUse, WorkMeasure

if TYPE_CHECKING:
    from bench.host.harness import Harness


@hookimpl(trylast=True)
def bench_run_strategy(run: RunContext) -> StrategyOutput:
    """Default implementation: call the strategy's own ``run``."""
    return run.strategy.run(run)


def execute(harness: Harness, name: str, run_dir: Path, config: BenchConfig | None = None) -> RunResult:
    """Run strategy ``name`` here with ``config`` (default: the harness's; a repeat's has its own seed),
    writing its artifacts under ``run_dir``, and return its result; never raises for a strategy's
    failure (its exception becomes a failed result)."""
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
    if config.getoption("speed_index", True) and not config.plan_only:
        meter.speed_index = SpeedIndex(config.device)
    run = RunContext(strategy, cfg, config, meter, run_dir, runfolders.profile_dir(run_dir), hook)
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
    }
    if error is None and output is not None:
        error = _unserialisable_error(output)
    if error is not None or output is None:
        assert error is not None
        info = ErrorInfo(type(error).__name__, str(error),
                         "".join(traceback.format_exception(type(error), error, error.__traceback__)),
                         usage=isinstance(error, BenchError))
        return RunResult(status="failed", error=info, **common)
    return RunResult(
        status="passed",
        metrics={k: float(v) for k, v in output.metrics.items()},
        primary_metric=output.primary_metric,
        params=output.params,
        trained_parameters=tuple(output.trained_parameters),
        trained_modules=tuple(output.trained_modules),
        extra=dict(output.extra),
        metric_samples={k: int(v) for k, v in output.metric_samples.items()},
        outcomes={k: "".join("1" if x else "0" for x in v) for k, v in output.correct.items()},
        data_sha256=output.data_sha256,
        model_sha256=output.model_sha256,
        **_mfu(meter, run.bench),
        **common,
    )


def _work(meter: Meter) -> WorkMeasure | None:
    counts = meter.work.get("train") or next(iter(meter.work.values()), None)
    if counts is None:
        return None
    return WorkMeasure(counts.samples, counts.padded_tokens, counts.flops, counts.allocated_bytes, dict(counts.ops))


class UnserialisableOutput(Exception):
    """A strategy returned metrics or extra that JSON cannot hold: its row fails, naming the keys."""


def _unserialisable_error(output: StrategyOutput) -> UnserialisableOutput | None:
    import json

    bad = []
    for where, mapping in (("metrics", output.metrics), ("extra", output.extra)):
        for key, value in mapping.items():
            try:
                json.dumps(to_data(value), allow_nan=where == "metrics")
            except (TypeError, ValueError) as exc:
                bad.append(f"StrategyOutput.{where}[{key!r}] ({type(value).__name__}: {exc})")
    if not bad:
        return None
    return UnserialisableOutput(f"{'; '.join(bad)}: not JSON-serialisable; give plain numbers, strings, lists and "
                                "dicts")


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
    timed = [s for s in meter.steps if s.phase == phase and s.kind == "timed"]
    seconds = sum(s.seconds for s in timed)
    if seconds <= 0:
        return {**found, "flops_per_token": flops_per_token, "mfu_note": f"no timed {phase} steps"}
    mfu, note = judge_mfu(flops_per_token * sum(s.input_tokens for s in timed) / seconds, peak)
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
        device_name, device_count = torch.cuda.get_device_name(0), torch.cuda.device_count()
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
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
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
