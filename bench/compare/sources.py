"""What ``bench compare`` reads: results files, run folders, saved baselines, pytest-benchmark JSON,
each turned into a :class:`Source` of :class:`Entry` objects (one per strategy or test)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.compare.metrics import memory_metrics, metric_spec, step_metrics
from bench.core.errors import UsageError
from bench.results.store import read_json, validate

_NUMBER = {"type": "number"}
_COUNT = {"type": "number", "minimum": 0}
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
                "extra_info": {"type": "object", "properties": {
                    "samples_per_step": _COUNT,
                    "tokens_per_step": _COUNT,
                    "accuracy": _NUMBER,
                    "primary_metric": {"type": ["string", "null"]},
                    "metrics": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
                    "config": {"type": "object"},
                    "device_name": {"type": ["string", "null"]},
                    **{key: _COUNT for key in ("peak_memory_bytes", "cpu_peak_rss_bytes", "gpu_peak_allocated_bytes",
                                               "gpu_peak_reserved_bytes", "params_trainable", "params_total")},
                }},
            },
        }},
        "commit_info": {"type": "object", "properties": {"id": {"type": ["string", "null"]}}},
        "datetime": {"type": ["string", "null"]},
    },
}

# -------------------------------------------------------------------------------------------------
# Loading: results files, run folders, baselines, pytest-benchmark JSON.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One benchmark (a strategy run or a pytest-benchmark test), reduced to comparable metrics."""

    key: str
    values: Mapping[str, float]
    step_seconds: tuple[float, ...] = ()  # raw timed step durations (Mann-Whitney samples)
    passed: bool = True
    error: str = ""
    primary_metric: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)  # what should match between runs
    device_name: str = ""
    runs: int = 1  # results pooled into this entry
    run_medians: tuple[float, ...] = ()  # median timed step of each pooled run (with repeats)


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
        return source_from_results(str(path), loaded.results, loaded.created_utc)
    raise UsageError(f"{path}: neither a finetune-bench results file (schema_version/results keys) nor a "
                     f"pytest-benchmark JSON file (benchmarks key)")


def source_from_results(path: str, results: Sequence[Any], created: str = "") -> Source:
    """A source from finetune-bench :class:`~bench.results.RunResult` objects.

    Several results of the same strategy in one file (``bench run -s x -s x -s x``, or files merged)
    are pooled into one entry: their timed steps together feed the step metrics and the test, task
    metrics and phase times are averaged, memory peaks take the median of the runs' peaks. Repeats spread over time
    average a noisy machine's load; if any repeat failed, the entry counts as failed.
    """
    groups: dict[str, list[Any]] = {}
    for r in results:
        groups.setdefault(r.strategy, []).append(r)
    entries = [entry_from_results(group) for group in groups.values()]
    commits = {r.provenance.git_commit for r in results if r.provenance.git_commit}
    return Source(path, "finetune-bench", tuple(entries), created, ", ".join(sorted(commits)))


def entry_from_results(runs: Sequence[Any]) -> Entry:
    """One entry from one or more results of the same strategy (pooled as :func:`source_from_results` says)."""
    first = runs[0]
    failed = [r for r in runs if not r.passed]
    seconds: list[float] = []
    samples: list[int] = []
    tokens: list[int] = []
    run_medians: list[float] = []
    for r in runs:
        main = r.main_throughput()
        if main is not None:
            timed = [s for s in r.steps if s.phase == main[0] and s.kind == "timed"]
            if timed:
                run_medians.append(statistics.median(float(s.seconds) for s in timed))
            seconds += [float(s.seconds) for s in timed]
            samples += [s.samples for s in timed]
            tokens += [s.tokens for s in timed]
    values: dict[str, float] = dict(step_metrics(seconds, samples, tokens))
    primary = _accuracy_metric(first.primary_metric, first.metrics)
    averaged: dict[str, list[float]] = {}
    for r in runs:
        for name, value in r.metrics.items():
            if value is not None and math.isfinite(value):
                averaged.setdefault("accuracy" if name == primary else name, []).append(float(value))
        for p in r.phases:
            averaged.setdefault(f"{p.name}_time", []).append(float(p.wall_s))
        if r.wall_s:
            averaged.setdefault("wall_time", []).append(float(r.wall_s))
    values.update({name: statistics.fmean(v) for name, v in averaged.items()})
    memory = [memory_metrics(r.phases) for r in runs]
    for name in dict.fromkeys(k for m in memory for k in m):
        values[name] = statistics.median(m[name] for m in memory if name in m)
    if first.params is not None:
        values["trainable_params"] = float(first.params.trainable)
        values["total_params"] = float(first.params.total)
    prov = first.provenance
    settings = {**{f"config.{k}": v for k, v in (prov.config or {}).items()},
                **{k: prov.settings.get(k) for k in ("device", "precision", "model", "dataset", "preset",
                                                      "warmup_steps", "seed") if k in (prov.settings or {})}}
    error = ""
    if failed:
        error = failed[0].error.summary if failed[0].error else "failed"
        if len(runs) > 1:
            error = f"{len(failed)} of {len(runs)} runs failed: {error}"
    return Entry(first.strategy, values, tuple(seconds), not failed, error, primary or "", settings,
                 prov.device_name or "", len(runs), tuple(run_medians) if len(run_medians) > 1 else ())


def _accuracy_metric(primary: str, metrics: Mapping[str, float]) -> str | None:
    if primary in metrics and metric_spec(primary, [metrics[primary]]).better == "higher":
        return primary
    return "test_accuracy" if "test_accuracy" in metrics else None


def _pytest_benchmark_source(path: Path, data: Mapping[str, Any]) -> Source:
    entries = []
    for i, b in enumerate(data["benchmarks"]):
        stats = b["stats"]
        extra = b.get("extra_info") or {}
        raw = stats.get("data")
        seconds = tuple(float(x) for x in raw) if isinstance(raw, list) else ()
        values: dict[str, float] = {}
        median = stats.get("median")
        if isinstance(median, (int, float)):
            values["step_time"] = float(median)
            if median > 0:
                per_step = extra.get("samples_per_step")
                values["throughput"] = float(per_step) / median if per_step else 1.0 / median
                if extra.get("tokens_per_step"):
                    values["tokens_per_s"] = float(extra["tokens_per_step"]) / median
        metrics = {k: float(v) for k, v in (extra.get("metrics") or {}).items() if isinstance(v, (int, float))}
        primary = _accuracy_metric(str(extra.get("primary_metric") or ""), metrics) if metrics else None
        if primary is not None:
            values["accuracy"] = metrics[primary]
        elif isinstance(extra.get("accuracy"), (int, float)):
            values["accuracy"] = float(extra["accuracy"])
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
        key = str(b.get("fullname") or b.get("name") or f"benchmark #{i + 1}")
        entries.append(Entry(key, values, seconds, True, "", primary or "", settings,
                             str(extra.get("device_name") or "")))
    commit = data.get("commit_info") or {}
    return Source(str(path), "pytest-benchmark", tuple(entries), str(data.get("datetime") or ""),
                  str(commit.get("id") or "")[:12] + ("-dirty" if commit.get("dirty") else ""))


