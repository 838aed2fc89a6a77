"""Result schema, typed; and the results file, rewritten atomically after every strategy.

A results file is JSON: ``{"schema_version": N, "created_utc": ..., "machine": {...}, "results": [...]}``.
Each result is a :class:`RunResult`. Readers check ``schema_version`` and refuse newer majors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.strategy import ParamCounts

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
    trained_parameters: tuple[str, ...] = ()
    trained_modules: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    wall_s: float = 0.0
    label: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

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


def to_data(obj: Any) -> Any:
    """Dataclasses, tuples and mappings to plain JSON-compatible data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


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
        return cls(**kwargs)
    if origin in (dict, Mapping, typing.Mapping) or cls is dict:
        args = typing.get_args(cls)
        value_type = args[1] if len(args) == 2 else Any
        return {k: from_data(value_type, v) for k, v in data.items()}
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(cls)
        return tuple(from_data(item_type, v) for v in data)
    return data


# -------------------------------------------------------------------------------------------------
# The results file.
# -------------------------------------------------------------------------------------------------


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_results(path: Path, results: ResultsFile) -> None:
    write_json_atomic(path, to_data(results))


def load_results(path: str | Path) -> ResultsFile:
    """Read a results file (or a folder holding ``results.json``); errors name the file."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILENAME
    if not p.exists():
        raise UsageError(f"results file not found: {p} (give a results.json or the --out folder of a run)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}); is it a finetune-bench results file?") from None
    if not isinstance(data, dict) or "schema_version" not in data or "results" not in data:
        raise UsageError(f"{p}: not a finetune-bench results file (no schema_version/results keys)")
    if int(data["schema_version"]) > SCHEMA_VERSION:
        raise UsageError(
            f"{p}: schema version {data['schema_version']} is newer than this finetune-bench understands "
            f"({SCHEMA_VERSION}); upgrade finetune-bench"
        )
    try:
        return from_data(ResultsFile, data)
    except (TypeError, KeyError, ValueError) as exc:
        raise UsageError(f"{p}: malformed results file: {exc}") from exc


def result_from_data(data: Mapping[str, Any]) -> RunResult:
    return from_data(RunResult, data)
