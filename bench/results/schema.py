"""The result schema, typed: one :class:`RunResult` per strategy run, and the :class:`ResultsFile`
that holds them; with the (de)serialisation to plain JSON data that the type hints drive.

A results file is JSON: ``{"schema_version": N, "created_utc": ..., "machine": {...}, "results": [...]}``.
:mod:`bench.results.store` reads and writes it; ``results.schema.json`` (next to this module) is its JSON
Schema, generated from these types (``python tests/test_results_file.py --write``), which the reader
validates every file against.
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

    kind: str = field(metadata={"enum": ("warmup", "profiled", "timed")})
    seconds: float
    samples: int
    tokens: int
    phase: str = "train"
    input_tokens: int = 0  # non-padding tokens through the model (for MFU); SFT counts prompts here too
    reference_s: float | None = None  # the speed index right after this (timed) step: see RunResult.speed_index
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
    status: str = field(metadata={"enum": ("passed", "failed")})
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
    # which reference workload the steps' reference_s timed (bench.measure.meter.SpeedIndex.name); "" in files
    # written before it was recorded: a single 192x192 matrix product
    speed_index: str = ""
    # the strategy's declared between-run noise (Strategy.run_to_run_noise_pct): bench compare's noise floor for it
    run_to_run_noise_pct: float | None = field(default=None, metadata={"schema": {
        "type": ["number", "null"], "minimum": 0, "exclusiveMaximum": 100}})
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


_TEXT = {"type": ["string", "null"]}
_INT = {"type": ["integer", "null"]}
_NUMBER = {"type": ["number", "null"]}
# The machine a results file was measured on: a plain dict (``bench_generate_machine_info``, which
# plugins may extend with keys of their own, and the host's peak: :func:`bench.measure.peak.peak_data`),
# so its schema is written here: the keys readers use, with their types; any other key is allowed.
MACHINE_SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "node": _TEXT, "system": _TEXT, "machine": _TEXT, "python": _TEXT, "memory_bytes": _INT,
    "cpu": {"type": ["object", "null"], "properties": {
        "model": _TEXT, "logical_cores": _INT, "usable_cores": _INT,
        "flags": {"type": ["array", "null"], "items": {"type": "string"}}}},
    "gpu": {"type": ["object", "null"], "properties": {
        "name": _TEXT, "count": _INT, "memory_bytes": _INT, "capability": _TEXT, "cuda": _TEXT, "driver": _TEXT}},
    "libraries": {"type": ["object", "null"], "additionalProperties": _TEXT},
    "peak": {"type": ["object", "null"], "properties": {
        "flops": {"type": "number"}, "source": {"type": "string"}, "device": _TEXT, "precision": _TEXT,
        "theoretical_flops": _NUMBER, "theoretical_source": _TEXT, "fingerprint": _TEXT,
        "probe": {"type": ["object", "null"]}}},
}}


@dataclass(frozen=True)
class ResultsFile:
    """A results file: the machine it ran on and one result per strategy run."""

    schema_version: int = field(metadata={"const": SCHEMA_VERSION})
    created_utc: str
    machine: Mapping[str, Any] = field(metadata={"schema": MACHINE_SCHEMA})
    results: tuple[RunResult, ...]
    # how the run was started (``argv``: the command line's arguments), so ``bench run --resume`` can continue it
    invocation: Mapping[str, Any] = field(default_factory=dict)


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


# -------------------------------------------------------------------------------------------------
# The JSON Schema of a results file, from the same type hints.
# -------------------------------------------------------------------------------------------------

SCHEMA_FILE = Path(__file__).with_name("results.schema.json")


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a results file, derived from :class:`ResultsFile`'s types:
    ``results.schema.json`` holds it (a test keeps the two equal). Unknown keys are allowed, so a file
    from a newer 1.x writer still reads; a metric may be null (a NaN metric is written as null), other
    numbers may be null only where the type says ``| None``."""
    defs: dict[str, Any] = {}
    root = _schema_of(ResultsFile, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://github.com/finetune-bench/finetune-bench/results.schema.json",
            "title": "finetune-bench results file", **defs.pop(ResultsFile.__name__), "$defs": defs} \
        if root == {"$ref": f"#/$defs/{ResultsFile.__name__}"} else root


def _schema_of(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # a placeholder first: a type may refer to itself
            hints = typing.get_type_hints(tp)
            props: dict[str, Any] = {}
            required = []
            for f in dataclasses.fields(tp):
                if f.metadata.get("transient"):
                    continue
                prop = dict(f.metadata["schema"]) if "schema" in f.metadata else _schema_of(hints[f.name], defs)
                if "enum" in f.metadata:
                    prop = {**prop, "enum": list(f.metadata["enum"])}
                if "const" in f.metadata:
                    prop = {**prop, "const": f.metadata["const"]}
                props[f.name] = prop
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    required.append(f.name)
            doc = (tp.__doc__ or "").strip().splitlines()
            defs[name] = {"type": "object", **({"description": doc[0]} if doc else {}), "properties": props,
                          "required": required}
        return {"$ref": f"#/$defs/{name}"}
    if origin in (typing.Union, types.UnionType):
        options = [_schema_of(a, defs) for a in typing.get_args(tp) if a is not type(None)]
        nullable = type(None) in typing.get_args(tp)
        if len(options) == 1 and "type" in options[0] and "$ref" not in options[0]:
            kinds = options[0]["type"] if isinstance(options[0]["type"], list) else [options[0]["type"]]
            return {**options[0], "type": list(dict.fromkeys([*kinds, *(["null"] if nullable else [])]))}
        return {"anyOf": [*options, *([{"type": "null"}] if nullable else [])]}
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is float:  # metrics: a NaN metric is written as null
            return {"type": "object", "additionalProperties": {"type": ["number", "null"]}}
        if len(args) == 2 and args[1] is not Any:
            return {"type": "object", "additionalProperties": _schema_of(args[1], defs)}
        return {"type": "object"}
    if origin is tuple:
        return {"type": "array", "items": _schema_of(typing.get_args(tp)[0], defs)}
    simple = {str: "string", int: "integer", bool: "boolean", float: "number"}
    if tp in simple:
        return {"type": simple[tp]}
    return {}
