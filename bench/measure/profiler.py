"""The built-in ``profiler`` plugin: torch.profiler over its own window of steps.

On by default; ``-p no:profiler`` removes it and the meter uses a do-nothing profiler, so the code
path is the same and costs nothing. Traces go to the run folder's ``profile/``
(``<out>/runs/<strategy>-<i>/profile``) through ``tensorboard_trace_handler``: ``tensorboard --logdir
<out>`` (torch-tb-profiler installed) shows every run's traces, one run per folder. The window sits right after the
warm-up steps and its steps are never counted in throughput.

Under torch.distributed every rank profiles its own window and writes its own trace into the run folder
(worker ``<host>_rank<r>``; Kineto records the job's rank and world size in it, which torch-tb-profiler's
distributed view reads) and its own top-operators file, with the time it spent in collectives.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core import progress
from bench.core.context import RunContext
from bench.core.markers import hookimpl
from bench.results.schema import CollectiveTime

if TYPE_CHECKING:
    from bench.host.options import OptionParser

TOP_OPS_FILENAME = "top_ops.json"
# Operator names that are communication: c10d's collectives, gloo's and NCCL's own, FSDP2's gather and reduce.
COLLECTIVE_MARKERS = ("c10d::", "gloo:", "nccl", "record_param_comms", "FSDP::all_gather", "FSDP::post_backward_reduce")


def top_ops_filename(rank: int | None) -> str:
    """Rank 0's (and a one-process run's) top-operators file is ``top_ops.json``; rank r's ``top_ops.rank<r>.json``."""
    return TOP_OPS_FILENAME if not rank else f"top_ops.rank{rank}.json"


@hookimpl
def bench_addoption(parser: OptionParser) -> None:
    parser.addoption("--profile-wait", type=int, default=0, ge=0, help="profiler schedule: steps skipped first")
    parser.addoption("--profile-warmup", type=int, default=1, ge=0, help="profiler schedule: warm-up steps (traced, dropped)")
    parser.addoption("--profile-active", type=int, default=None, ge=0,
                     help="profiler schedule: steps recorded (default 2; 1 under --preset smoke, whose sft run would "
                          "spend 14 s of its minute exporting a 2-step trace on a 2-core CPU; 0: no profiler)")
    parser.addoption("--profile-top", type=int, default=10, ge=1, help="operators in the report's top-operators table")


class StepProfiler:
    """torch.profiler with a wait/warmup/active schedule, started and stepped by the meter."""

    def __init__(self, trace_dir: Path, wait: int, warmup: int, active: int, device: str, top: int,
                 rank: int | None = None) -> None:
        self.trace_dir = trace_dir
        self.wait, self.warmup, self.active = wait, warmup, active
        self.window_steps = wait + warmup + active
        self.device = device
        self.top = top
        self.rank = rank  # under torch.distributed: this rank's trace and top-operators file
        self._prof: Any = None

    def start(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile, schedule

        self.trace_dir.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU]
        if self.device == "cuda" and torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        with _quiet_native_stderr():
            self._prof = profile(
                activities=activities,
                schedule=schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=1),
                on_trace_ready=self._on_ready,
                record_shapes=True,
                profile_memory=True,
                with_stack=False,
            )
            self._prof.__enter__()

    def _on_ready(self, prof: Any) -> None:
        import socket

        from torch.profiler import tensorboard_trace_handler

        worker = None if self.rank is None else f"{socket.gethostname()}_rank{self.rank}"
        tensorboard_trace_handler(str(self.trace_dir), worker_name=worker)(prof)
        write_top_ops(prof, self.trace_dir / top_ops_filename(self.rank), self.top, self.device)

    def step(self) -> None:
        if self._prof is not None:
            with _quiet_native_stderr():
                self._prof.step()

    def stop(self) -> None:
        if self._prof is not None:
            prof, self._prof = self._prof, None
            with _quiet_native_stderr():
                prof.__exit__(None, None, None)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Kineto prints start/stop lines straight to file descriptor 2; hide them (only them) here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Profiler clears events.*")
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            with progress.lines_to_fd(saved):  # our own progress lines still reach the real stderr
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


@hookimpl
def bench_make_profiler(run: RunContext) -> StepProfiler | None:
    opts = run.bench
    active = _active_steps(opts.getoption("profile_active"), opts.preset)
    if active <= 0:
        return None
    return StepProfiler(run.profile_dir, int(opts.getoption("profile_wait", 0)),
                        int(opts.getoption("profile_warmup", 1)), active, run.device,
                        int(opts.getoption("profile_top", 10)), run.dist.rank if run.dist is not None else None)


def _active_steps(given: int | None, preset: str) -> int:
    """The profiled window's recorded steps: as given, else 2 (1 under the smoke preset: a sanity check
    that must fit a minute per strategy, where a 2-step trace of sft took 14 s to export)."""
    if given is not None:
        return int(given)
    return 1 if preset == "smoke" else 2


def write_top_ops(prof: Any, path: Path, top: int, device: str) -> None:
    """The operators with the most self time in the recorded window, as JSON."""
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    cuda = device == "cuda"

    def self_device(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) or 0.0)

    total_cpu = sum(e.self_cpu_time_total for e in events) or 1.0
    total_dev = sum(self_device(e) for e in events) or 1.0
    key = self_device if cuda else (lambda e: float(e.self_cpu_time_total))
    rows = []
    for e in sorted(events, key=key, reverse=True)[:top]:
        rows.append({
            "name": e.key,
            "calls": int(e.count),
            "self_cpu_us": float(e.self_cpu_time_total),
            "self_cuda_us": self_device(e) if cuda else None,
            "share": (self_device(e) / total_dev) if cuda else float(e.self_cpu_time_total) / total_cpu,
        })
    comm = [e for e in events if any(m in e.key for m in COLLECTIVE_MARKERS)]
    collectives = {"calls": sum(int(e.count) for e in comm), "seconds": sum(key(e) for e in comm) / 1e6,
                   "window_s": (total_dev if cuda else total_cpu) / 1e6}
    path.write_text(json.dumps({"device": device, "ops": rows, "collectives": collectives}, indent=2))


def read_collectives(profile_dir: Path, rank: int | None) -> CollectiveTime | None:
    """The time in collectives the profiler of ``rank`` wrote, or None (profiler off, window not reached)."""
    path = profile_dir / top_ops_filename(rank)
    try:
        data = json.loads(path.read_text()).get("collectives")
    except (OSError, ValueError):
        return None
    return CollectiveTime(int(data["calls"]), float(data["seconds"]), float(data["window_s"])) if data else None


@hookimpl
def bench_report_sections(results: Sequence[Any]) -> list[Any]:
    from bench.results.report import Section

    sections = []
    for r in results:
        folder = r.artifacts_dir()
        path = folder / "profile" / TOP_OPS_FILENAME if folder is not None else None
        if path is None or not path.is_file():
            continue
        data = json.loads(path.read_text())
        cuda = data.get("device") == "cuda"
        rows = tuple(
            (op["name"][:48], op["calls"], f"{op['self_cpu_us'] / 1000:,.2f}",
             *((f"{op['self_cuda_us'] / 1000:,.2f}",) if cuda else ()), f"{100 * op['share']:.1f}%")
            for op in data["ops"]
        )
        headers = ("operator", "calls", "self CPU ms", *(("self CUDA ms",) if cuda else ()), "share of window")
        label = f"{r.label}: " if r.label else ""
        sections.append(Section(f"Top operators: {label}{r.strategy} ({r.run_dir})", headers, rows,
                                f"profiled window only; traces: tensorboard --logdir {folder / 'profile'}"))
    return sections
