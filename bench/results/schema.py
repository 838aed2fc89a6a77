"""The result schema, typed: one :class:`RunResult` per strategy run, and the :class:`ResultsFile`
that holds them; with the (de)serialisation to plain JSON data that the type hints drive.

A results file is JSON: ``{"schema_version": N, "created_utc": ..., "machine": {...}, "results": [...]}``.
:mod:`bench.results.store` reads and writes it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.plain import to_data
from bench.core.strategy import ParamCounts

__all__ = [
    "RESULTS_FILENAME", "SCHEMA_VERSION", "ActivationMeasure", "CollectiveTime", "DistributedInfo", "EnergyInfo",
    "ErrorInfo", "PhaseMeasure", "Provenance", "RankMeasure", "ResultsFile", "RunResult", "StepSample", "StepStats",
    "TechniqueUse", "Throughput", "from_data", "to_data",
]

SCHEMA_VERSION = 1
RESULTS_FILENAME = "results.json"


@dataclass(frozen=True)
class StepSample:
    """One optimizer step as measured: its kind (warmup / profiled / timed), seconds, work done."""

    kind: str
    seconds: float
    samples: int
    tokens: int
    phase: str = "train"
    input_tokens: int = 0  # non-padding tokens through the model (for MFU); SFT counts prompts here too
    reference_s: float | None = None  # the speed index right after this (timed) step: see bench.measure.meter
    cpu_s: float | None = None  # the process's CPU time in the step, all threads (time.process_time)


@dataclass(frozen=True)
class StepStats:
    """Summary of the timed steps' durations, derived from the raw samples."""

    count: int
    median_s: float
    iqr_s: float
    min_s: float
    max_s: float
    mean_s: float

    @classmethod
    def from_values(cls, values: Sequence[float]) -> StepStats | None:
        if not values:
            return None
        import numpy as np

        arr = np.asarray(values, dtype=float)
        q1, med, q3 = np.percentile(arr, [25, 50, 75])
        return cls(len(arr), float(med), float(q3 - q1), float(arr.min()), float(arr.max()), float(arr.mean()))


@dataclass(frozen=True)
class Throughput:
    """Training throughput. ``samples_per_s``/``real_tokens_per_s`` come from timed steps only
    (warm-up and profiled steps excluded); ``real`` tokens exclude padding and masked positions.
    ``phase_samples_per_s`` is over the whole training phase wall time, everything included."""

    samples_per_s: float | None
    real_tokens_per_s: float | None
    step: StepStats | None
    timed_steps: int
    warmup_steps: int
    profiled_steps: int
    phase_samples_per_s: float | None = None


@dataclass(frozen=True)
class PhaseMeasure:
    """Wall time and peak memory of one phase (setup, extract, train, eval), each measured in it."""

    name: str
    wall_s: float
    cpu_peak_rss_bytes: int | None
    gpu_peak_allocated_bytes: int | None = None
    gpu_peak_reserved_bytes: int | None = None
    energy_j: float | None = None  # joules the device's counter advanced during the phase (None: not measured)


@dataclass(frozen=True)
class WorkMeasure:
    """Deterministic work of one counted step (the first warm-up step of the main phase): its batch, FLOPs,
    aten operator calls by name and bytes the operators allocated. Equal code on equal batches gives
    equal counts on any machine load."""

    samples: int
    padded_tokens: int
    flops: float
    allocated_bytes: int
    ops: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ActivationMeasure:
    """The bytes autograd saved for the backward pass of one training micro-batch (the first warm-up step:
    ``batch_size`` examples padded to ``seq_len`` tokens), parameters left out: activation memory."""

    bytes: int
    batch_size: int
    seq_len: int


@dataclass(frozen=True)
class EnergyInfo:
    """Whether energy was measured in a run, from which counter, or why not."""

    measured: bool
    source: str = ""  # nvml | rapl
    detail: str = ""  # the counter read (GPU index, RAPL zones), or why energy is not measured


@dataclass(frozen=True)
class ErrorInfo:
    """Why a run failed: exception type, one-line summary, full traceback."""

    type: str
    message: str
    traceback: str = ""
    usage: bool = False  # a user input problem (bad option, file, model): the CLI exits 2

    @property
    def summary(self) -> str:
        first = self.message.strip().splitlines()[0] if self.message.strip() else ""
        return f"{self.type}: {first}" if first else self.type


@dataclass(frozen=True)
class TechniqueUse:
    """Whether one speed technique was on in a run, and what it did or why it was off."""

    on: bool
    detail: str = ""


@dataclass(frozen=True)
class CollectiveTime:
    """Time one rank spent in collectives in the profiler's window: the self time of the communication
    operators (``c10d::*``, ``gloo:*``, FSDP's all-gather and reduce-scatter regions; on CUDA the device time of
    NCCL kernels), against the window's total self time of the same kind."""

    calls: int
    seconds: float
    window_s: float

    @property
    def share(self) -> float | None:
        return self.seconds / self.window_s if self.window_s > 0 else None


@dataclass(frozen=True)
class RankMeasure:
    """One rank of a torch.distributed run, as it measured itself."""

    rank: int
    local_rank: int
    host: str
    device_name: str
    threads: int  # intra-op threads of this rank (CPU)
    step_seconds: tuple[float, ...]  # each step's seconds on this rank, in the order of RunResult.steps
    phases: tuple[PhaseMeasure, ...] = ()  # this rank's wall time and peak memory per phase
    params: ParamCounts | None = None  # the bytes this rank holds (FSDP: its shards)
    peak_flops: float | None = None
    peak_flops_source: str | None = None
    collectives: CollectiveTime | None = None  # None: the profiler was off or its window did not run


@dataclass(frozen=True)
class DistributedInfo:
    """How a run was spread over processes, and each rank's measurements. The result's ``steps`` are the ranks'
    steps combined (seconds: the slowest rank's; samples and tokens: the sum), its ``phases`` the maximum over
    ranks, ``params`` rank 0's bytes, ``mfu`` against the sum of the ranks' peaks."""

    world_size: int
    nnodes: int
    nproc_per_node: int
    backend: str  # nccl | gloo
    parallel: str  # ddp | fsdp
    launcher: str  # "bench" (bench run --nproc-per-node: torch's elastic launcher) | "outer" (torchrun, srun)
    batch_size_is: str = "global"  # --batch-size counts the examples of every rank's micro-batch together
    ranks: tuple[RankMeasure, ...] = ()
    peak_flops_sum: float | None = None


@dataclass(frozen=True)
class Provenance:
    """What makes a result reproducible."""

    seed: int
    device: str
    device_name: str
    device_count: int
    precision: str
    python: str
    torch: str
    transformers: str
    git_commit: str | None
    plugin: str
    distribution: str | None
    plugin_version: str | None
    config: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """One strategy run, passed or failed."""

    strategy: str
    status: str  # "passed" | "failed"
    provenance: Provenance
    metrics: Mapping[str, float] = field(default_factory=dict)
    primary_metric: str = "test_accuracy"
    params: ParamCounts | None = None
    throughput: Mapping[str, Throughput] = field(default_factory=dict)
    phases: tuple[PhaseMeasure, ...] = ()
    steps: tuple[StepSample, ...] = ()
    flops_per_token: float | None = None  # counted FLOPs per processed token, main phase
    mfu: float | None = None
    peak_flops: float | None = None
    peak_flops_source: str | None = None
    mfu_note: str = ""  # why mfu is missing: e.g. it would exceed 100% (the peak is wrong)
    trained_parameters: tuple[str, ...] = ()
    trained_modules: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    wall_s: float = 0.0
    label: str = ""
    metric_samples: Mapping[str, int] = field(default_factory=dict)  # examples behind each fraction metric
    outcomes: Mapping[str, str] = field(default_factory=dict)  # metric -> each example's outcome, "0110...", in order
    data_sha256: str = ""  # the data's identity (rows that differ in it are flagged)
    model_sha256: str = ""  # the weights' identity
    repeat: int = 0  # which repeat of its strategy (--repeats; seed = the run's seed + repeat)
    run_dir: str = ""  # this run's folder, relative to the results file's folder (runs/<strategy>-<i>)
    techniques: Mapping[str, TechniqueUse] = field(default_factory=dict)  # speed techniques on / off
    activations: ActivationMeasure | None = None  # training activation bytes, measured in a warm-up step
    work: WorkMeasure | None = None  # deterministic work of one counted step of the main phase
    energy: EnergyInfo | None = None
    distributed: DistributedInfo | None = None  # a torch.distributed run: world size, backend, per-rank figures
    base_dir: str = field(default="", metadata={"transient": True})  # the results folder, once loaded

    @property
    def random_weights(self) -> bool:
        """A shape-only run (``--weights random``): no task metric was measured."""
        return bool(self.provenance.settings.get("weights") == "random") if self.provenance.settings else False

    def artifacts_dir(self) -> Path | None:
        """This run's folder (traces, generations, adapters...), when the result knows where it is."""
        if not self.run_dir:
            return None
        path = Path(self.run_dir)
        return path if path.is_absolute() or not self.base_dir else Path(self.base_dir) / path

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def series(self) -> str:
        """What a row is named by and repeats are grouped by: the strategy, and for a torch.distributed run its
        parallel mode and world size (``all-layers [ddp x2]``), so that it is never averaged with, or compared
        as a repeat of, the same strategy in one process."""
        d = self.distributed
        return self.strategy if d is None else f"{self.strategy} [{d.parallel} x{d.world_size}]"

    def phase(self, name: str) -> PhaseMeasure | None:
        return next((p for p in self.phases if p.name == name), None)

    def main_throughput(self) -> tuple[str, Throughput] | None:
        """The training phase's throughput, else the first phase that had steps (e.g. extract)."""
        if "train" in self.throughput and self.throughput["train"].step is not None:
            return "train", self.throughput["train"]
        for name, tp in self.throughput.items():
            if tp.step is not None:
                return name, tp
        return None


@dataclass(frozen=True)
class ResultsFile:
    schema_version: int
    created_utc: str
    machine: Mapping[str, Any]
    results: tuple[RunResult, ...]


# -------------------------------------------------------------------------------------------------
# (De)serialisation: dataclass <-> JSON-compatible data, driven by the type hints.
# -------------------------------------------------------------------------------------------------


def from_data(cls: Any, data: Any) -> Any:
    """Rebuild ``cls`` (a dataclass or a typing form) from :func:`to_data` output."""
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        non_none = [a for a in typing.get_args(cls) if a is not type(None)]
        return from_data(non_none[0], data)
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: from_data(hints[k], v) for k, v in data.items() if k in names}
        return typing.cast(Any, cls)(**kwargs)
    if origin in (dict, Mapping, typing.Mapping) or cls is dict:
        args = typing.get_args(cls)
        value_type = args[1] if len(args) == 2 else Any
        return {k: from_data(value_type, v) for k, v in data.items()}
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(cls)
        return tuple(from_data(item_type, v) for v in data)
    return data


