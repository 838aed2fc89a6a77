"""Strategy runs on torch.distributed: launched by bench, or as one rank of an outer launcher's job.

**bench launches** (``bench run --nproc-per-node N [--nnodes M --node-rank K --rdzv-endpoint HOST:PORT]``):
each strategy run whose config has a ``parallel`` option is one job of torch's elastic launcher
(``torch.distributed.launcher.api.elastic_launch``, what ``torchrun`` runs): N processes on this node, each
running :func:`rank_main`, which joins the process group (nccl on CUDA, one GPU per local rank; gloo on the
CPU, the cores shared out), rebuilds a :class:`~bench.host.harness.Harness` from the config as every run
process does, and runs :func:`~bench.host.worker.execute` as its rank. The ranks then gather their results
on the CPU (gloo) and rank 0 combines them (:func:`bench.measure.ranks.combine`) and writes the run folder's
``result.json``, which the host reads as it reads an isolated run's. One strategy after another, as without
torch.distributed; each job is its own process group, so a fault ends that job only:

* a rank whose strategy raises writes its error (``ranks/rank-<r>.json`` in the run folder) and exits at once;
  the launcher stops the other ranks (``max_restarts=0``) and the row fails naming the rank and the error;
* a rank that dies (a signal, the OOM killer) is seen by the launcher the same way;
* a rank that hangs leaves the others waiting in a collective until ``--dist-timeout`` (gloo's and NCCL's
  process-group timeout); they fail with a timeout, and the row names the rank that gave no error.

**An outer launcher** (``torchrun ... -m bench run``, ``srun torchrun ...``): RANK, WORLD_SIZE and LOCAL_RANK
in the environment make ``bench run`` one rank of that job (:func:`join_outer_job`, :func:`run_as_rank`). It
runs every strategy in its own process, in turn; strategies without a ``parallel`` option run on rank 0
alone. After each run the ranks meet on the CPU group (a monitored barrier: a rank that does not arrive
within ``--dist-timeout`` is named), exchange their results, and rank 0 writes the results file. bench is
not the launcher there, so it cannot restart a job: after a failed row the remaining strategies are
recorded as not run and every rank exits with 1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.config import BenchConfig
from bench.core.dist import DistContext
from bench.core.errors import BenchError
from bench.core.plain import to_data
from bench.host import runfolders
from bench.host.worker import execute, failed_result
from bench.measure.peak import Peak
from bench.measure.profiler import read_collectives
from bench.measure.ranks import combine, rank_measure
from bench.results.schema import DistributedInfo, ErrorInfo, RankMeasure, RunResult, from_data
from bench.results.store import result_from_data, write_json_atomic

if TYPE_CHECKING:
    from bench.host.harness import Harness, Planned
    from bench.host.session import Session

RANKS_DIR = "ranks"  # in the run folder: each failed rank's error
# What the elastic agent sets in each rank's environment; the rest comes from the host at launch time.
LAUNCHER_ENV = frozenset({"RANK", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME", "LOCAL_WORLD_SIZE", "WORLD_SIZE",
                          "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                          "TORCH_NCCL_ASYNC_ERROR_HANDLING"})
# Imported once by the forkserver the ranks are forked from (spawned ranks took ~30 s each to import these on a
# loaded 2-core machine; forked from the server, under 3 s): nothing that starts threads or touches CUDA.
PRELOAD = ("torch", "torch.distributed", "transformers", "transformers.modeling_utils", "bench.api", "bench.host.harness")
# Errors a rank gets because another rank failed or hung, not for a fault of its own.
_PEER_ERRORS = ("timed out", "timeout", "connection closed", "connection reset", "broken pipe", "nccl",
                "peer", "socket", "gloo", "processgroup", "watchdog")


# -------------------------------------------------------------------------------------------------
# The process group of one rank.
# -------------------------------------------------------------------------------------------------


def backend_for(device: str) -> str:
    return "nccl" if device == "cuda" else "gloo"


def join_group(config: BenchConfig, nnodes: int) -> tuple[DistContext, int]:
    """Join the job's default process group from the environment the launcher set (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE, MASTER_ADDR/PORT); CUDA: this local rank's GPU; CPU: the cores shared out between the
    node's ranks (unless OMP_NUM_THREADS says otherwise). Returns the context and the intra-op threads."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world // max(1, nnodes)))
    backend = backend_for(config.device)
    timeout = timedelta(seconds=config.launch.timeout_s)
    if config.device == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=timeout, device_id=torch.device("cuda", local_rank))
        cpu_group = dist.new_group(backend="gloo", timeout=timeout)  # objects and evaluation counts
    else:
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // max(1, local_world)))
        dist.init_process_group(backend, timeout=timeout)
        cpu_group = None  # the default group is gloo already
    return DistContext(rank, world, local_rank, local_world, nnodes, backend, cpu_group,
                       config.launch.timeout_s), torch.get_num_threads()


def leave_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def distributed_info(config: BenchConfig, ctx: DistContext, cfg_data: dict[str, Any], launcher: str) -> DistributedInfo:
    from bench.training.parallel import BATCH_SIZE_IS

    return DistributedInfo(world_size=ctx.world_size, nnodes=ctx.nnodes, nproc_per_node=ctx.local_world_size,
                           backend=ctx.backend, parallel=str(cfg_data.get("parallel", "")), launcher=launcher,
                           batch_size_is=BATCH_SIZE_IS)


def measure_rank(result: RunResult, ctx: DistContext, threads: int, run_dir: Path) -> RankMeasure:
    return rank_measure(result, ctx.rank, ctx.local_rank, socket.gethostname(), threads,
                        read_collectives(runfolders.profile_dir(run_dir), ctx.rank))


def gather(ctx: DistContext, obj: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj, group=ctx.cpu_group)
    return out


def rank_peak(config: BenchConfig, threads: int) -> BenchConfig:
    """``config`` with this rank's peak FLOP/s: the one the host settled before the first strategy, never probed
    again here. A GPU is the rank's own: the host's per-device peak. A CPU is shared by the node's ranks, each on
    ``threads`` of the cores: the host's peak, measured on ``config.peak_threads`` threads, scaled to them."""
    if config.peak_flops is None or config.peak_threads <= 0 or threads == config.peak_threads:
        return config
    share = threads / config.peak_threads
    return dataclasses.replace(config, peak_flops=config.peak_flops * share, peak_threads=threads,
                               peak_source=f"{threads}/{config.peak_threads} threads of the host's peak "
                                           f"({config.peak_source})")


def agreed_peak(settle: Callable[[], Peak]) -> Peak:
    """Under an outer launcher: rank 0 settles the run's peak (``settle``: the cache or a probe, while the
    other ranks wait) and every rank takes it."""
    import torch.distributed as dist

    ctx = outer_context()
    chosen = [settle() if ctx.is_main else None]
    dist.broadcast_object_list(chosen, src=0, group=ctx.cpu_group)
    peak = chosen[0]
    assert isinstance(peak, Peak)
    return peak


# -------------------------------------------------------------------------------------------------
# bench launches: one elastic job per strategy run.
# -------------------------------------------------------------------------------------------------


def run_job(config: BenchConfig, name: str, run_dir: Path,
            entrypoint: Callable[[BenchConfig, str, str, dict[str, str]], None]) -> RunResult:
    """Run strategy ``name`` as a torch.distributed job (``config.launch``) of ``entrypoint`` processes
    (:func:`bench.host.harness.rank_main`, which calls :func:`run_rank`) and return its result: rank 0's
    combined result, or a failed row naming the rank that failed and its error. On a node other than node 0
    of several, the row only says how this node's ranks ended (node 0's host writes the result)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch = config.launch
    result_file = runfolders.result_path(run_dir)
    result_file.unlink(missing_ok=True)
    one_node = launch.nnodes == 1
    rdzv_timeout = int(max(60.0, launch.timeout_s))
    lc = LaunchConfig(
        min_nodes=launch.nnodes, max_nodes=launch.nnodes, nproc_per_node=launch.nproc_per_node,
        run_id=f"bench-{uuid.uuid4().hex[:12]}" if one_node else f"bench-{run_dir.name}",
        rdzv_backend="c10d" if one_node else "static",
        rdzv_endpoint="localhost:0" if one_node else launch.rdzv_endpoint,
        rdzv_configs={"timeout": rdzv_timeout} if one_node else {"rank": launch.node_rank, "timeout": rdzv_timeout},
        max_restarts=0, monitor_interval=0.1, start_method=_start_method())
    started = time.perf_counter()
    try:
        with _quiet_launcher(config.debug), launcher_signals():
            elastic_launch(lc, entrypoint)(config, name, str(run_dir), dict(os.environ))
    except ChildFailedError as exc:
        return _job_failed(config, name, run_dir, exc.failures, time.perf_counter() - started)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the rendezvous or the launcher itself failed
        return failed_result(config, name, f"the torch.distributed job did not run: {type(exc).__name__}: {exc}",
                             "LaunchError", time.perf_counter() - started, run_dir=run_dir,
                             traceback_text=traceback.format_exc())
    wall = time.perf_counter() - started
    if result_file.exists():
        result = result_from_data(json.loads(result_file.read_text(encoding="utf-8")))
        return dataclasses.replace(result, wall_s=wall, base_dir=str(config.out_dir.resolve()))
    if launch.node_rank != 0:
        return dataclasses.replace(failed_result(config, name, "", run_dir=run_dir, wall_s=wall), status="passed",
                                   error=None, extra={"note": f"node {launch.node_rank}: its ranks finished; node 0 "
                                                              "holds the result"})
    return failed_result(config, name, "rank 0 finished without writing a result", "ProcessDied", wall,
                         run_dir=run_dir)


def _start_method() -> str:
    """``forkserver`` with the heavy imports preloaded where the platform has it (each rank a fork of a server
    that imported torch and transformers once per ``bench run``; no CUDA or threads in it), else ``spawn``."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))  # no effect once it runs
    return "forkserver"


def adopt_environment(host_env: dict[str, str]) -> None:
    """The host's environment as it was at launch, with the launcher's variables (a rank forked from the
    forkserver starts with the server's environment, from when it started)."""
    mine = {k: v for k, v in os.environ.items() if k in LAUNCHER_ENV or k.startswith("TORCHELASTIC_")}
    os.environ.clear()
    os.environ.update(host_env)
    os.environ.update(mine)


def run_rank(config: BenchConfig, name: str, folder: Path, make_harness: Callable[[BenchConfig], Harness],
             host_env: dict[str, str]) -> None:
    """One rank of a job :func:`run_job` launched: join the group, run the strategy as this rank, then either
    hand the result to rank 0 (which writes the combined one) or, when it failed, record the error and exit
    at once so that the launcher stops the job."""
    adopt_environment(host_env)
    rank = int(os.environ.get("RANK", "0"))
    config = dataclasses.replace(config, in_run_process=True, quiet=config.quiet or rank != 0)
    try:
        ctx, threads = join_group(config, config.launch.nnodes)
    except Exception as exc:
        _fail_rank(folder, rank, exc)
    config = rank_peak(config, threads)
    try:
        harness = make_harness(config)
        with harness.configured(config):
            result = execute(harness, name, folder, dist=ctx)
            if not result.passed:
                _fail_rank(folder, rank, result.error)
            mine = (to_data(result), to_data(measure_rank(result, ctx, threads, folder)))
            everything = gather(ctx, mine)
            if ctx.is_main:
                results = [result_from_data(r) for r, _ in everything]
                measures = [from_data(RankMeasure, m) for _, m in everything]
                info = distributed_info(config, ctx, dict(result.provenance.config), "bench")
                write_json_atomic(runfolders.result_path(folder), to_data(combine(results, measures, info)))
    except (SystemExit, RankFailed):
        raise
    except BaseException as exc:  # plugin loading or configuration failed in the rank
        _fail_rank(folder, rank, exc)
    finally:
        leave_group()


class RankFailed(RuntimeError):
    """A rank's run failed; its error is in the run folder's ``ranks/rank-<r>.json`` (and the message)."""


def _fail_rank(folder: Path, rank: int, error: ErrorInfo | BaseException | None) -> None:
    """Record this rank's error where the host reads it, then end this process: raising makes the launcher
    record the error too (its error file, for a host on another node) and stop the other ranks."""
    if isinstance(error, BaseException):
        error = ErrorInfo(type(error).__name__, str(error),
                          "".join(traceback.format_exception(type(error), error, error.__traceback__)),
                          usage=isinstance(error, BenchError))
    info = error or ErrorInfo("RuntimeError", "failed without an error")
    with suppress(OSError):
        write_json_atomic(folder / RANKS_DIR / f"rank-{rank}.json", to_data(info))
    raise RankFailed(f"rank {rank}: {info.summary}")


def _job_failed(config: BenchConfig, name: str, run_dir: Path, failures: dict[int, Any], wall: float) -> RunResult:
    """The failed row of a job the launcher stopped: which rank failed first for a reason of its own, with its
    error; ranks that failed only because of it (timeouts, closed connections) and ranks that gave no error
    (stopped, hung) are named after it."""
    world = config.launch.nproc_per_node * config.launch.nnodes
    errors: dict[int, ErrorInfo] = {}
    for rank, failure in failures.items():
        errors[rank] = _rank_error(run_dir, rank, failure)
    own = [r for r in sorted(errors) if not _peer_caused(errors[r])]
    root = own[0] if own else min(errors, key=lambda r: getattr(failures[r], "timestamp", 0) or 0)
    silent = [r for r in range(world) if r not in errors]
    error = errors[root]
    if not own and silent:
        message = (f"{_ranks(silent)} of {world} gave no error and did not answer (hung or died): rank {root} waited "
                   f"in a collective until --dist-timeout {config.launch.timeout_s:g} s ({error.summary})")
    else:
        first = error.message.strip().splitlines()[0] if error.message.strip() else error.type
        message = f"rank {root} of {world}: {first}"
        others = [r for r in sorted(errors) if r != root]
        if others:
            message += f"; then {_ranks(others)}: {errors[others[0]].summary}"
        if silent:
            message += f"; {_ranks(silent)} stopped by the launcher"
    return failed_result(config, name, message, error.type, wall, usage=error.usage, run_dir=run_dir,
                         traceback_text=error.traceback)


def _rank_error(run_dir: Path, rank: int, failure: Any) -> ErrorInfo:
    """A failed rank's error: its own record in the run folder, else what the launcher saw (its error file's
    message, or the exit code or signal of a rank that died)."""
    path = run_dir / RANKS_DIR / f"rank-{rank}.json"
    if path.exists():
        try:
            return from_data(ErrorInfo, json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            pass
    data = getattr(failure, "error_file_data", None) or {}
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, dict):
        text = str(message.get("message", ""))
        kind, _, rest = text.partition(": ")
        stack = str((message.get("extraInfo") or {}).get("py_callstack", ""))
        return ErrorInfo(kind or "RankFailed", rest or text, stack)
    exitcode = getattr(failure, "exitcode", None)
    how = getattr(failure, "signal_name", lambda: "")() if exitcode is not None and exitcode < 0 else ""
    detail = f"was killed by {how}" if how else f"exited with code {exitcode}"
    hint = " (often the kernel's out-of-memory killer)" if how == "SIGKILL" else ""
    return ErrorInfo("ProcessDied", f"its process {detail}{hint} before it gave an error")


def _ranks(ranks: Sequence[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def _peer_caused(error: ErrorInfo) -> bool:
    text = f"{error.type} {error.message}".lower()
    return error.type != "ProcessDied" and any(marker in text for marker in _PEER_ERRORS)


@contextmanager
def launcher_signals() -> Any:
    """The elastic launcher replaces this process's SIGINT/SIGTERM/SIGHUP/SIGQUIT handlers (to stop its workers)
    and leaves them so; put them back after the job. A signal it caught then acts as it would have without it:
    SIGINT is a ``KeyboardInterrupt`` (the row is marked interrupted and bench stops); another one goes to the
    host's own handler (by default it ends bench, as it would have outside a job, rather than being recorded as
    a failed row while the next strategy starts)."""
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException

    names = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
    saved = {sig: signal.getsignal(sig) for sig in (getattr(signal, n) for n in names if hasattr(signal, n))}

    def restore() -> None:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)

    try:
        yield
    except SignalException as exc:
        restore()
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from exc
        os.kill(os.getpid(), exc.sigval)  # the host's handler; one that returns (SIG_IGN, say) lets the row fail
        raise
    finally:
        restore()


@contextmanager
def _quiet_launcher(debug: bool) -> Any:
    """The launcher logs every stopped worker with a traceback; the row carries what matters (--debug shows all)."""
    loggers = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.multiprocessing.spawn",
                                               "torch.distributed.launcher")]
    levels = [lg.level for lg in loggers]
    if not debug:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# -------------------------------------------------------------------------------------------------
# An outer launcher: this process is one rank for every strategy.
# -------------------------------------------------------------------------------------------------

_OUTER: tuple[DistContext, int] | None = None


def join_outer_job(config: BenchConfig) -> BenchConfig:
    """Join the job an outer launcher started (once per process) and agree with the other ranks on the output
    folder (rank 0's); rank 0 alone prints."""
    import torch.distributed as dist

    global _OUTER
    if _OUTER is None:
        nnodes = int(os.environ.get("GROUP_WORLD_SIZE") or os.environ.get("SLURM_NNODES") or 1)
        _OUTER = join_group(config, nnodes)
    ctx = _OUTER[0]
    out = [str(config.out_dir)]
    dist.broadcast_object_list(out, src=0, group=ctx.cpu_group)
    return dataclasses.replace(config, out_dir=Path(out[0]), isolate=False, quiet=config.quiet or not ctx.is_main)


def outer_context() -> DistContext:
    if _OUTER is None:
        raise RuntimeError("join_outer_job(config) was not called")
    return _OUTER[0]


def run_as_rank(harness: Harness, plan: Sequence[Planned], session: Session,
                on_start: Callable[[str], None] | None, parallel_capable: Callable[[str], bool]) -> None:
    """Run each planned strategy run as this rank (strategies without a parallel option: rank 0 alone), meet the
    other ranks after each, and add the same rows to every rank's session (rank 0's writes the file)."""
    import torch.distributed as dist

    assert _OUTER is not None
    ctx, threads = _OUTER
    for position, item in enumerate(plan):
        name, config = item.name, rank_peak(item.config, threads)
        if on_start is not None:
            on_start(item.label(name))
        run_dir = _agreed_run_folder(config.out_dir, name, ctx)
        capable = parallel_capable(name)
        started = time.perf_counter()
        result = execute(harness, name, run_dir, config, dist=ctx if capable else None) \
            if capable or ctx.is_main else None
        try:
            if not capable:  # rank 0 ran it; the others wait for as long as it takes
                dist.monitored_barrier(group=ctx.cpu_group, timeout=timedelta(days=7), wait_all_ranks=True)
                row = [to_data(result)]
                dist.broadcast_object_list(row, src=0, group=ctx.cpu_group)
                session.add(dataclasses.replace(result_from_data(row[0]), repeat=item.repeat))
                continue
            # A rank that failed arrives at once, the others after their collective timed out: wait for both.
            dist.monitored_barrier(group=ctx.cpu_group, timeout=timedelta(seconds=2 * ctx.timeout_s + 30),
                                   wait_all_ranks=True)
            assert result is not None
            measure = to_data(measure_rank(result, ctx, threads, run_dir)) if result.passed else None
            everything = gather(ctx, (to_data(result), measure))
        except Exception as exc:  # a rank did not arrive (hung or died): end the job
            message = f"a rank did not reach the exchange after {name} within --dist-timeout {ctx.timeout_s:g} s: {exc}"
            _end_outer_job(config, session, plan[position:], run_dir, message, time.perf_counter() - started)
            return
        results = [result_from_data(r) for r, _ in everything]
        failed = [(rank, r.error) for rank, r in enumerate(results) if not r.passed and r.error is not None]
        if not failed:
            info = distributed_info(config, ctx, dict(results[0].provenance.config), "outer")
            merged = combine(results, [from_data(RankMeasure, m) for _, m in everything], info)
            session.add(dataclasses.replace(merged, base_dir=str(config.out_dir.resolve()), repeat=item.repeat))
            continue
        own = [(r, e) for r, e in failed if not _peer_caused(e)] or failed
        rank, error = own[0]
        message = f"rank {rank} of {ctx.world_size} failed: {error.summary}"
        _end_outer_job(config, session, plan[position:], run_dir, message, time.perf_counter() - started, error)
        return


def _end_outer_job(config: BenchConfig, session: Session, rest: Sequence[Planned], run_dir: Path,
                   message: str, wall: float, error: ErrorInfo | None = None) -> None:
    """A fault under an outer launcher: the failed row (``rest[0]``), the runs after it as not run, then every
    rank exits with 1 (the launcher ends the job; a hung rank cannot be trusted to take part in another run)."""
    name = rest[0].name
    session.add(dataclasses.replace(
        failed_result(config, name, message, error.type if error else "RankFailed", wall,
                      usage=error.usage if error else False, run_dir=run_dir,
                      traceback_text=error.traceback if error else ""), repeat=rest[0].repeat))
    for later in rest[1:]:
        session.add(dataclasses.replace(
            failed_result(later.config, later.name, f"not run: the torch.distributed job ended after {name} failed",
                          "NotRun"), repeat=later.repeat))
    print(f"bench: {name}: {message}; ending the job", file=sys.stderr)
    os._exit(1)  # the process group may be stuck in a collective: no clean shutdown to wait for


def _agreed_run_folder(out_dir: Path, name: str, ctx: DistContext) -> Path:
    """Rank 0 allocates the run folder; every rank uses the same name (other nodes create it on their disk)."""
    import torch.distributed as dist

    chosen = [str(runfolders.allocate(out_dir, name)) if ctx.is_main else ""]
    dist.broadcast_object_list(chosen, src=0, group=ctx.cpu_group)
    folder = Path(chosen[0])
    folder.mkdir(parents=True, exist_ok=True)
    return folder
