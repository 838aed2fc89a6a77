"""What ``bench compare`` reads: results files, run folders, saved baselines, pytest-benchmark JSON,
each turned into a :class:`Source` of :class:`Entry` objects (one per strategy or test)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.compare.metrics import memory_metrics, metric_spec
from bench.compare.paired import Steps
from bench.core.errors import UsageError
from bench.core.plain import to_data
from bench.results.store import read_json, validate

_NUMBER = {"type": "number"}
_COUNT = {"type": ["number", "null"], "minimum": 0}
_INT = {"type": "integer"}
_MAYBE_NUMBER = {"type": ["number", "null"]}
# A counted step's work (RunResult.work, a test's extra_info.work), as bench compare reads it.
WORK_SCHEMA: dict[str, Any] = {"type": ["object", "null"], "properties": {
    "samples": _COUNT, "padded_tokens": _COUNT, "flops": {"type": ["number", "null"]},
    "allocated_bytes": {"type": ["number", "null"]}, "ops": {"type": ["object", "null"], "additionalProperties": _INT},
}}
# The parts of a pytest-benchmark JSON file that bench compare reads, and their types (anything else is ignored).
PYTEST_BENCHMARK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["benchmarks"],
    "properties": {
        "benchmarks": {"type": "array", "items": {
            "type": "object",
            "required": ["stats"],
            "properties": {
                "name": {"type": "string"},
                "fullname": {"type": "string"},
                "stats": {"type": "object", "properties": {
                    "median": _NUMBER,
                    "data": {"type": "array", "items": _NUMBER},
                }},
                "extra_info": {"type": ["object", "null"], "properties": {
                    "primary_metric": {"type": ["string", "null"]},
                    "metrics": {"type": ["object", "null"], "additionalProperties": {"type": ["number", "null"]}},
                    "config": {"type": ["object", "null"]},
                    "device_name": {"type": ["string", "null"]},
                    "steps": {"type": "object", "properties": {
                        "seconds": {"type": "array", "items": _NUMBER},
                        "samples": {"type": "array", "items": _INT},
                        "tokens": {"type": "array", "items": _INT},
                        "reference": {"type": "array", "items": _MAYBE_NUMBER},
                        "run": {"type": "array", "items": _INT},
                        "cpu": {"type": "array", "items": _MAYBE_NUMBER},
                        "reference_kind": {"type": "string"},
                    }},
                    "outcomes": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
                    "identity": {"type": ["object", "null"]},
                    "work": WORK_SCHEMA,
                    "run_to_run_noise_pct": {"type": ["number", "null"], "minimum": 0, "exclusiveMaximum": 100},
                    "top_ops": {"type": ["object", "null"], "additionalProperties": {
                        "type": "array", "minItems": 2, "items": _NUMBER}},
                    **{key: _COUNT for key in ("peak_memory_bytes", "cpu_peak_rss_bytes", "gpu_peak_allocated_bytes",
                                               "gpu_peak_reserved_bytes", "params_trainable", "params_total")},
                }},
            },
        }},
        "commit_info": {"type": ["object", "null"], "properties": {"id": {"type": ["string", "null"]}}},
        "datetime": {"type": ["string", "null"]},
    },
}

# -------------------------------------------------------------------------------------------------
# Loading: results files, run folders, baselines, pytest-benchmark JSON.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One benchmark (a strategy's runs in a results file, or a pytest-benchmark test), reduced to what a
    comparison needs: display values, the timed steps in data order, per-example outcomes, deterministic
    work counts and what the numbers depend on (``identity``: machine, device, precision, data, model)."""

    key: str
    values: Mapping[str, float]
    steps: Steps = Steps()
    passed: bool = True
    error: str = ""
    primary_metric: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)  # what should match between runs
    device_name: str = ""
    runs: int = 1  # results pooled into this entry (repeats)
    run_values: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # per-run values, with repeats
    outcomes: Mapping[str, str] = field(default_factory=dict)  # the first run's per-example outcomes
    work: Mapping[str, Any] | None = None  # the first run's counted step (samples, tokens, flops, bytes, ops)
    identity: Mapping[str, str] = field(default_factory=dict)
    top_ops: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # profiled window: op -> (calls, us)
    noise_floor_pct: float | None = None  # the strategy's declared run-to-run noise (RunResult.run_to_run_noise_pct)


@dataclass(frozen=True)
class Source:
    """One side of a comparison."""

    path: str
    kind: str  # "finetune-bench" | "pytest-benchmark"
    entries: tuple[Entry, ...]
    created: str = ""
    commit: str = ""


def load_source(spec: str | Path, baseline_dir: str | Path | None = None) -> Source:
    """A results file, a run folder, a saved baseline name, or a pytest-benchmark JSON file."""
    path = Path(spec)
    if not path.exists():
        from bench.compare.saved import baseline_path, resolve_baseline_dir

        folder = resolve_baseline_dir(baseline_dir)
        candidate = baseline_path(str(spec), folder, check_name=False)
        if candidate is None or not candidate.is_file():
            raise UsageError(f"{spec}: no such file or folder, and no saved baseline of that name in {folder}")
        path = candidate
    if path.is_dir():
        from bench.results.schema import RESULTS_FILENAME

        if not (path / RESULTS_FILENAME).is_file():
            raise UsageError(f"{path}: a folder without {RESULTS_FILENAME}; give a run folder, a results.json "
                             f"or a pytest-benchmark JSON file")
        path = path / RESULTS_FILENAME
    data = read_json(path, "a finetune-bench results file, a run folder or a pytest-benchmark JSON file")
    if isinstance(data, dict) and "benchmarks" in data and "schema_version" not in data:
        validate(data, PYTEST_BENCHMARK_SCHEMA, f"{path}: not a pytest-benchmark JSON file bench compare can read")
        return _pytest_benchmark_source(path, data)
    if isinstance(data, dict) and "schema_version" in data:
        from bench.results.store import load_results

        loaded = load_results(path)
        return source_from_results(str(path), loaded.results, loaded.created_utc, loaded.machine)
    raise UsageError(f"{path}: neither a finetune-bench results file (schema_version/results keys) nor a "
                     f"pytest-benchmark JSON file (benchmarks key)")


def source_from_results(path: str, results: Sequence[Any], created: str = "",
                        machine: Mapping[str, Any] | None = None) -> Source:
    """A source from finetune-bench :class:`~bench.results.RunResult` objects.

    Several results of the same strategy in one file (``--repeats``, or ``-s x -s x``) become one entry:
    their timed steps (paired repeat by repeat with the other side), their per-run values (means shown),
    memory peaks the median of the runs'; if any repeat failed, the entry counts as failed.
    """
    groups: dict[str, list[Any]] = {}
    for r in results:
        groups.setdefault(r.series, []).append(r)  # a distributed run is an entry of its own
    fingerprint = machine_identity(machine or {})
    entries = [entry_from_results(group, fingerprint) for group in groups.values()]
    commits = {r.provenance.git_commit for r in results if r.provenance.git_commit}
    return Source(path, "finetune-bench", tuple(entries), created, ", ".join(sorted(commits)))


def machine_identity(machine: Mapping[str, Any]) -> str:
    """What makes two machines the same for timing: the CPU model, its relevant flags and cores; the GPU."""
    cpu = machine.get("cpu") or {}
    gpu = machine.get("gpu") or {}
    parts = [str(cpu.get("model", "")), ",".join(cpu.get("flags") or []), f"{cpu.get('usable_cores', '')} cores"]
    if gpu:
        parts.append(f"{gpu.get('count', 1)} x {gpu.get('name', '')}")
    return " / ".join(p for p in parts if p.strip(" /")) if cpu or gpu else ""


def entry_from_results(runs: Sequence[Any], machine: str = "") -> Entry:
    """One entry from one or more results of the same strategy (see :func:`source_from_results`)."""
    first = runs[0]
    failed = [r for r in runs if not r.passed]
    seconds: list[float] = []
    samples: list[int] = []
    tokens: list[int] = []
    refs: list[float | None] = []
    cpus: list[float | None] = []
    run_ids: list[int] = []
    for i, r in enumerate(runs):
        main = r.main_throughput()
        if main is None:
            continue
        for s in r.steps:
            if s.phase == main[0] and s.kind == "timed":
                seconds.append(float(s.seconds))
                samples.append(int(s.samples))
                tokens.append(int(s.tokens))
                refs.append(s.reference_s)
                cpus.append(s.cpu_s)
                run_ids.append(getattr(r, "repeat", i) or i)
    per_run: dict[str, list[float]] = {}
    primary = _accuracy_metric(first.primary_metric, first.metrics)
    for r in runs:  # samples/s over each run's timed steps: bench report's samples/s
        main = r.main_throughput()
        timed = [s for s in r.steps if main is not None and s.phase == main[0] and s.kind == "timed"]
        secs = sum(s.seconds for s in timed)
        if secs > 0:
            per_run.setdefault("throughput", []).append(sum(s.samples for s in timed) / secs)
            if any(s.tokens for s in timed):
                per_run.setdefault("tokens_per_s", []).append(sum(s.tokens for s in timed) / secs)
            per_run.setdefault("step_time", []).append(statistics.median(s.seconds for s in timed))
        for name, value in r.metrics.items():
            if value is not None and math.isfinite(value):
                per_run.setdefault("accuracy" if name == primary else name, []).append(float(value))
        for p in r.phases:
            per_run.setdefault(f"{p.name}_time", []).append(float(p.wall_s))
        if r.wall_s:
            per_run.setdefault("wall_time", []).append(float(r.wall_s))
        for name, value in memory_metrics(r.phases).items():
            per_run.setdefault(name, []).append(value)
    values: dict[str, float] = {name: (statistics.median(v) if name in MEDIAN_METRICS else statistics.fmean(v))
                                for name, v in per_run.items()}
    if first.params is not None:
        values["trainable_params"] = float(first.params.trainable)
        values["total_params"] = float(first.params.total)
    prov = first.provenance
    settings = {**{f"config.{k}": v for k, v in (prov.config or {}).items()},
                **{k: prov.settings.get(k) for k in ("model", "dataset", "preset", "warmup_steps", "seed", "weights",
                                                      "seq_len") if k in (prov.settings or {})}}
    error = ""
    if failed:
        error = failed[0].error.summary if failed[0].error else "failed"
        if len(runs) > 1:
            error = f"{len(failed)} of {len(runs)} runs failed: {error}"
    work = to_data(first.work) if first.work is not None else None
    identity = {"machine": machine, "device": f"{prov.device} {prov.device_name}".strip(),
                "precision": prov.precision, "data": first.data_sha256, "model": first.model_sha256}
    threads = (prov.settings or {}).get("peak_threads")
    if isinstance(threads, int) and threads > 0:
        identity["threads"] = str(threads)  # the run process's intra-op threads (not compared: see starved_run)
    outcomes = {("accuracy" if k == primary else k): v for k, v in first.outcomes.items()}
    return Entry(first.series, values, Steps(tuple(seconds), tuple(samples), tuple(tokens), tuple(refs),
                                               tuple(run_ids), tuple(cpus), first.speed_index),
                 not failed, error, primary or "", settings, prov.device_name or "", len(runs),
                 {k: tuple(v) for k, v in per_run.items()}, outcomes, work, identity, _top_ops(first),
                 getattr(first, "run_to_run_noise_pct", None))


MEDIAN_METRICS = frozenset({"peak_memory", "cpu_peak_rss", "gpu_peak_allocated", "gpu_peak_reserved"})


def _top_ops(r: Any) -> dict[str, tuple[int, float]]:
    folder = r.artifacts_dir() if hasattr(r, "artifacts_dir") else None
    path = folder / "profile" / "top_ops.json" if folder is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        key = "self_cuda_us" if data.get("device") == "cuda" else "self_cpu_us"
        return {str(op["name"]): (int(op["calls"]), float(op[key] or 0.0)) for op in data["ops"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _accuracy_metric(primary: str, metrics: Mapping[str, float]) -> str | None:
    if primary in metrics and metric_spec(primary, [metrics[primary]]).better == "higher":
        return primary
    return "test_accuracy" if "test_accuracy" in metrics else None


def _pytest_benchmark_source(path: Path, data: Mapping[str, Any]) -> Source:
    """Tests written by finetune-bench's pytest plugin carry its step order, outcomes, work counts and
    identity in ``extra_info`` and pair like results files; other tests give their rounds (when saved with
    ``--benchmark-save-data``) for the unpaired test."""
    entries = []
    for i, b in enumerate(data["benchmarks"]):
        stats = b["stats"]
        extra = b.get("extra_info") or {}
        if not isinstance(extra, Mapping):
            extra = {}
        key = str(b.get("fullname") or b.get("name") or f"benchmark #{i + 1}")
        recorded = extra.get("steps") if isinstance(extra.get("steps"), Mapping) else None
        if recorded is not None:
            steps = Steps(tuple(float(x) for x in recorded.get("seconds", [])),
                          tuple(int(x) for x in recorded.get("samples", [])),
                          tuple(int(x) for x in recorded.get("tokens", [])),
                          tuple(None if x is None else float(x) for x in recorded.get("reference", [])),
                          tuple(int(x) for x in recorded.get("run", [])),
                          tuple(None if x is None else float(x) for x in recorded.get("cpu", [])),
                          str(recorded.get("reference_kind", "")))
        else:
            raw = stats.get("data")
            steps = Steps(tuple(float(x) for x in raw)) if isinstance(raw, list) else Steps()
        values: dict[str, float] = {}
        if steps.seconds and steps.samples:
            values["throughput"] = sum(steps.samples) / sum(steps.seconds)
            if any(steps.tokens):
                values["tokens_per_s"] = sum(steps.tokens) / sum(steps.seconds)
        median = stats.get("median")
        if isinstance(median, (int, float)):
            values["step_time"] = float(median)
            if "throughput" not in values and median > 0:
                values["throughput"] = 1.0 / median  # rounds/s: a test of another tool
        metrics = {k: float(v) for k, v in (extra.get("metrics") or {}).items() if isinstance(v, (int, float))}
        primary = _accuracy_metric(str(extra.get("primary_metric") or ""), metrics) if metrics else None
        if primary is not None:
            values["accuracy"] = metrics[primary]
        for name, value in metrics.items():
            if name != primary:
                values[name] = value
        for src, dst in (("peak_memory_bytes", "peak_memory"), ("cpu_peak_rss_bytes", "cpu_peak_rss"),
                         ("gpu_peak_allocated_bytes", "gpu_peak_allocated"),
                         ("gpu_peak_reserved_bytes", "gpu_peak_reserved"), ("params_trainable", "trainable_params"),
                         ("params_total", "total_params")):
            if isinstance(extra.get(src), (int, float)):
                values[dst] = float(extra[src])
        settings = {f"config.{k}": v for k, v in (extra.get("config") or {}).items()}
        outcomes = {("accuracy" if k == primary else k): str(v) for k, v in (extra.get("outcomes") or {}).items()}
        identity = {str(k): str(v) for k, v in (extra.get("identity") or {}).items()}
        work = extra.get("work") if isinstance(extra.get("work"), Mapping) else None
        noise = extra.get("run_to_run_noise_pct")
        entries.append(Entry(key, values, steps, True, "", primary or "", settings,
                             str(extra.get("device_name") or ""), 1, {}, outcomes, work, identity,
                             {str(k): (int(v[0]), float(v[1])) for k, v in (extra.get("top_ops") or {}).items()},
                             float(noise) if isinstance(noise, (int, float)) else None))
    commit = data.get("commit_info") or {}
    return Source(str(path), "pytest-benchmark", tuple(entries), str(data.get("datetime") or ""),
                  str(commit.get("id") or "")[:12] + ("-dirty" if commit.get("dirty") else ""))
