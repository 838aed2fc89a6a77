"""``bench compare``: two runs side by side, every metric with its change, and a regression verdict.

Inputs are finetune-bench results files (``results.json``, a run folder, a saved baseline name) or
pytest-benchmark JSON files (``--benchmark-json``, ``--benchmark-autosave``). Entries are matched by
strategy name (results files) or test name (pytest-benchmark).

A metric regresses when its change is worse than its threshold (the minimum effect size) **and**, for
the metrics measured step by step, the raw step durations of the two runs differ by a two-sided
Mann-Whitney U test at ``alpha`` (the rule asv uses: a factor plus a significance test). A change past
the threshold that the test cannot tell from noise is reported as "not significant" and does not
fail. Where raw samples are missing (a pytest-benchmark file saved without data) or too few for the
test ever to reach ``alpha``, the threshold alone decides.

Several results of one strategy in a file (``bench run -s x -s x -s x``) are pooled: their timed steps
together feed the metrics and the test (task metrics and phase times averaged, memory peaks the median
of the runs' peaks). Steps of one run share that run's moment of the machine, so
with repeats on both sides a second, run-level check applies: the per-run medians must differ too
(Welch's t-test on their logs, p < 0.2). On a machine that other jobs load, whole runs move by more
than any sensible threshold; repeats, interleaved where you can, are how to see past that.

Metrics (``--fail-on NAME=THRESHOLD``):

``throughput``     samples/s at the median timed step (mean samples per timed step / median timed step
                   seconds); for a pytest-benchmark test that finetune-bench did not write: rounds/s
                   (1 / median round). Warm-up and profiled steps are excluded. Higher is better.
``tokens_per_s``   real (non-padding) tokens/s at the median timed step. Higher is better.
``step_time``      median timed step, seconds. Lower is better.
``accuracy``       the result's primary metric (``test_accuracy`` for the classification strategies),
                   a fraction; thresholds in points (``-1pt``). Higher is better.
``peak_memory``    the largest peak of any phase: GPU peak allocated where measured, else CPU peak
                   RSS; bytes. Lower is better.
``cpu_peak_rss``, ``gpu_peak_allocated``, ``gpu_peak_reserved``: the same per kind, bytes.
``trainable_params``, ``total_params``: parameter counts.
``<phase>_time``   wall time of a phase (``setup_time``, ``train_time``, ``eval_time``), seconds; and
``wall_time``      the whole run including process start-up.
any task metric    by its own name: ``test_macro_f1``, ``best_val_accuracy``, ``test_loss``, ...

Threshold syntax: ``[+|-]N%`` (relative change), ``[+|-]Npt`` (points: absolute change x 100, for
fractions), ``[+|-]N[unit]`` (absolute change; units ``ms``, ``s``, ``KiB``, ``MiB``, ``GiB`` or the
metric's own), or ``off``. The sign says which way is bad (``-`` a decrease, ``+`` an increase);
without a sign, the known bad direction of the metric is used.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError, UsageError
from bench.options import did_you_mean

# -------------------------------------------------------------------------------------------------
# Defaults, set from the calibration in tests/benchmarks/calibrate.py (docs/ci.md): on a loaded 2-core
# CPU machine, with interleaved repeats, same-code pairs: 0/12 flagged at -10% (1/12 at -5%); a 25%
# slowdown (-20% throughput): 12/12 flagged at -10% (11/12 at -15%); the same at every alpha tried.
# -------------------------------------------------------------------------------------------------

DEFAULT_ALPHA = 0.002
RUN_ALPHA = 0.2  # the run-level veto on pooled repeats (Welch's t on log per-run medians)
DEFAULT_THRESHOLDS: tuple[str, ...] = ("throughput=-10%", "accuracy=-1pt", "peak_memory=+10%")
VERDICT_REGRESSION = "REGRESSION"
VERDICT_IMPROVEMENT = "improvement"
VERDICT_NOISE = "not significant"
VERDICT_OK = "ok"
VERDICT_FAILED = "FAILED"


@dataclass(frozen=True)
class MetricSpec:
    """How to name, show and judge one metric."""

    name: str
    unit: str  # "samples/s", "tokens/s", "s", "bytes", "fraction", "count", ""
    better: str | None  # "higher" | "lower" | None
    steps: bool = False  # derived from the step samples: the Mann-Whitney test applies
    description: str = ""


KNOWN_METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec("throughput", "samples/s", "higher", True, "samples/s at the median timed step"),
    MetricSpec("tokens_per_s", "tokens/s", "higher", True, "real tokens/s at the median timed step"),
    MetricSpec("step_time", "s", "lower", True, "median timed step"),
    MetricSpec("accuracy", "fraction", "higher", False, "the primary task metric"),
    MetricSpec("peak_memory", "bytes", "lower", False, "largest phase peak (GPU allocated, else CPU RSS)"),
    MetricSpec("cpu_peak_rss", "bytes", "lower"),
    MetricSpec("gpu_peak_allocated", "bytes", "lower"),
    MetricSpec("gpu_peak_reserved", "bytes", "lower"),
    MetricSpec("trainable_params", "count", None),
    MetricSpec("total_params", "count", None),
    MetricSpec("wall_time", "s", "lower"),
)}
_ABS_UNITS = {"": 1.0, "ms": 1e-3, "s": 1.0, "kib": 2.0**10, "mib": 2.0**20, "gib": 2.0**30}


def metric_spec(name: str, values: Iterable[float | None] = ()) -> MetricSpec:
    """The spec of a known metric, or one guessed from the name of a task metric or phase time."""
    if name in KNOWN_METRICS:
        return KNOWN_METRICS[name]
    if name.endswith("_time"):
        return MetricSpec(name, "s", "lower")
    lowered = name.lower()
    if "loss" in lowered or "perplexity" in lowered:
        return MetricSpec(name, "", "lower")
    fraction = all(v is None or 0.0 <= v <= 1.0 for v in values)
    if fraction and any(w in lowered for w in ("accuracy", "f1", "match", "precision", "recall")):
        return MetricSpec(name, "fraction", "higher")
    return MetricSpec(name, "", None)


# -------------------------------------------------------------------------------------------------
# Thresholds.
# -------------------------------------------------------------------------------------------------

_THRESHOLD_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.-]*)\s*=\s*(?:(?P<off>off|none)|(?P<sign>[+-])?\s*"
    r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>%|pt|ms|s|KiB|MiB|GiB)?)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Threshold:
    """``direction`` +1: an increase is bad; -1: a decrease is bad. ``amount`` >= 0, in ``unit``."""

    metric: str
    direction: int
    amount: float
    unit: str  # "%" | "pt" | "abs"
    text: str

    def change(self, base: float, cur: float) -> float:
        """The change from ``base`` to ``cur`` in this threshold's unit."""
        if self.unit == "%":
            return relative_change(base, cur)
        if self.unit == "pt":
            return (cur - base) * 100.0
        return cur - base

    def worse(self, base: float, cur: float) -> bool:
        return self.direction * self.change(base, cur) > self.amount

    def better(self, base: float, cur: float) -> bool:
        return -self.direction * self.change(base, cur) > self.amount


def parse_threshold(text: str) -> Threshold | str:
    """Parse ``METRIC=[+|-]N(%|pt|unit)``; returns the metric name alone for ``METRIC=off``."""
    m = _THRESHOLD_RE.match(text)
    if not m:
        raise UsageError(
            f"--fail-on {text!r}: expected METRIC=[+|-]N% , METRIC=[+|-]Npt, METRIC=[+|-]N[ms|s|MiB|GiB] or "
            f"METRIC=off (e.g. --fail-on throughput=-10% --fail-on accuracy=-1pt --fail-on peak_memory=+5%)"
        )
    metric = m["metric"]
    if m["off"]:
        return metric
    unit = (m["unit"] or "").lower()
    if m["sign"]:
        direction = 1 if m["sign"] == "+" else -1
    else:
        spec = metric_spec(metric)
        if spec.better is None:
            raise UsageError(f"--fail-on {text!r}: say which way is bad for {metric!r} with a sign (+N or -N)")
        direction = -1 if spec.better == "higher" else 1
    amount = float(m["num"])
    if unit in ("%", "pt"):
        return Threshold(metric, direction, amount, unit, _threshold_text(direction, amount, unit))
    return Threshold(metric, direction, amount * _ABS_UNITS[unit], "abs",
                     _threshold_text(direction, amount, m["unit"] or ""))


def _threshold_text(direction: int, amount: float, unit: str) -> str:
    return f"{'+' if direction > 0 else '-'}{amount:g}{unit}"


def thresholds_from(overrides: Sequence[str] = (), defaults: Sequence[str] = DEFAULT_THRESHOLDS) -> dict[str, Threshold]:
    """Defaults, then each ``--fail-on`` in order (a later one for the same metric wins; ``off`` drops it)."""
    out: dict[str, Threshold] = {}
    for text in (*defaults, *overrides):
        parsed = parse_threshold(text)
        if isinstance(parsed, str):
            out.pop(parsed, None)
        else:
            out[parsed.metric] = parsed
    return out


def relative_change(base: float, cur: float) -> float:
    """Percent change from ``base`` to ``cur``; +/-inf from a zero baseline."""
    if base == 0:
        return 0.0 if cur == 0 else math.copysign(math.inf, cur)
    return (cur - base) / abs(base) * 100.0


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
        from bench.baseline import baseline_path, resolve_baseline_dir

        folder = resolve_baseline_dir(baseline_dir)
        candidate = baseline_path(str(spec), folder, check_name=False)
        if candidate is None or not candidate.is_file():
            raise UsageError(f"{spec}: no such file or folder, and no saved baseline of that name in {folder}")
        path = candidate
    if path.is_dir():
        from bench.results import RESULTS_FILENAME

        if not (path / RESULTS_FILENAME).is_file():
            raise UsageError(f"{path}: a folder without {RESULTS_FILENAME}; give a run folder, a results.json "
                             f"or a pytest-benchmark JSON file")
        path = path / RESULTS_FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); give a finetune-bench "
                         f"results file or a pytest-benchmark JSON file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
        return _pytest_benchmark_source(path, data)
    if isinstance(data, dict) and "schema_version" in data:
        from bench.results import load_results

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


def step_metrics(seconds: Sequence[float], samples: Sequence[int], tokens: Sequence[int]) -> dict[str, float]:
    """``step_time``, ``throughput`` and ``tokens_per_s`` from timed steps, robust to outlier steps."""
    if not seconds:
        return {}
    med = statistics.median(seconds)
    out = {"step_time": med}
    if med > 0:
        out["throughput"] = statistics.fmean(samples) / med
        if any(tokens):
            out["tokens_per_s"] = statistics.fmean(tokens) / med
    return out


def memory_metrics(phases: Sequence[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for attr, name in (("cpu_peak_rss_bytes", "cpu_peak_rss"), ("gpu_peak_allocated_bytes", "gpu_peak_allocated"),
                       ("gpu_peak_reserved_bytes", "gpu_peak_reserved")):
        measured = [getattr(p, attr) for p in phases if getattr(p, attr) is not None]
        if measured:
            out[name] = float(max(measured))
    peak = out.get("gpu_peak_allocated", out.get("cpu_peak_rss"))
    if peak is not None:
        out["peak_memory"] = peak
    return out


def _accuracy_metric(primary: str, metrics: Mapping[str, float]) -> str | None:
    if primary in metrics and metric_spec(primary, [metrics[primary]]).better == "higher":
        return primary
    return "test_accuracy" if "test_accuracy" in metrics else None


def _pytest_benchmark_source(path: Path, data: Mapping[str, Any]) -> Source:
    entries = []
    for i, b in enumerate(data["benchmarks"]):
        if not isinstance(b, Mapping) or not isinstance(b.get("stats"), Mapping):
            raise UsageError(f"{path}: benchmark #{i + 1} has no stats; is it a pytest-benchmark JSON file?")
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
        metrics = extra.get("metrics") or {}
        primary = _accuracy_metric(str(extra.get("primary_metric") or ""), metrics) if metrics else None
        if primary is not None:
            values["accuracy"] = float(metrics[primary])
        elif isinstance(extra.get("accuracy"), (int, float)):
            values["accuracy"] = float(extra["accuracy"])
        for name, value in metrics.items():
            if name != primary and isinstance(value, (int, float)) and math.isfinite(value):
                values[name] = float(value)
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


# -------------------------------------------------------------------------------------------------
# Comparing.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricChange:
    entry: str
    metric: str
    label: str
    spec: MetricSpec
    baseline: float | None
    current: float | None
    change: float | None  # in the threshold's unit where there is one, else percent
    change_unit: str
    threshold: Threshold | None
    p_value: float | None
    verdict: str  # "" (no threshold), ok, REGRESSION, improvement, not significant
    note: str = ""
    p_runs: float | None = None  # run-level p of pooled repeats, where both sides have them


@dataclass(frozen=True)
class Comparison:
    baseline: Source
    current: Source
    changes: tuple[MetricChange, ...]
    thresholds: Mapping[str, Threshold]
    alpha: float
    failed: tuple[tuple[str, str], ...] = ()  # (entry, error) failed in the current run
    only_baseline: tuple[str, ...] = ()
    only_current: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == VERDICT_REGRESSION]

    @property
    def improvements(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == VERDICT_IMPROVEMENT]

    @property
    def ok(self) -> bool:
        return not self.regressions and not self.failed

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        parts = []
        if self.regressions:
            parts.append(f"{len(self.regressions)} regression{'s' if len(self.regressions) > 1 else ''}: "
                         + "; ".join(f"{c.entry} {c.label} {_fmt_change(c)} (threshold {c.threshold.text})"
                                     for c in self.regressions if c.threshold))
        if self.failed:
            parts.append(f"{len(self.failed)} failed in the current run: " + ", ".join(e for e, _ in self.failed))
        if not parts:
            n = len({c.entry for c in self.changes})
            parts.append(f"no regression ({n} benchmark{'s' if n != 1 else ''} compared"
                         + (f", {len(self.improvements)} improvement(s)" if self.improvements else "") + ")")
        return "; ".join(parts)


def compare(baseline: Source, current: Source, thresholds: Mapping[str, Threshold] | None = None,
            alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Compare every entry present in both sources, metric by metric."""
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"--alpha {alpha}: must be between 0 and 1 (e.g. {DEFAULT_ALPHA})")
    thresholds = dict(thresholds if thresholds is not None else thresholds_from())
    _check_threshold_metrics(thresholds, baseline, current)
    base_by_key = {e.key: e for e in baseline.entries}
    notes: list[str] = []
    pairs = [(base_by_key[e.key], e) for e in current.entries if e.key in base_by_key]
    if not pairs and len(baseline.entries) == 1 and len(current.entries) == 1:
        b, c = baseline.entries[0], current.entries[0]
        pairs = [(b, c)]
        notes.append(f"no benchmark names in common; compared the only one of each: {b.key} -> {c.key}")
    paired_base = {b.key for b, _ in pairs}
    paired_cur = {c.key for _, c in pairs}
    changes: list[MetricChange] = []
    failed: list[tuple[str, str]] = []
    for b, c in pairs:
        if not c.passed:
            failed.append((c.key, c.error or "failed"))
            continue
        if not b.passed:
            notes.append(f"{c.key}: the baseline run failed ({b.error or 'no error recorded'}); nothing to compare")
            continue
        changes.extend(_compare_entry(b, c, thresholds, alpha))
        if b.runs > 1 or c.runs > 1:
            notes.append(f"{c.key}: pooled {b.runs} baseline run(s) ({len(b.step_seconds)} timed steps) and "
                         f"{c.runs} current run(s) ({len(c.step_seconds)} timed steps)")
        diff = _settings_diff(b.settings, c.settings)
        if diff:
            notes.append(f"{c.key}: settings differ, so the runs may not measure the same work: {diff}")
        if b.device_name and c.device_name and b.device_name != c.device_name:
            notes.append(f"{c.key}: measured on different devices ({b.device_name} vs {c.device_name}); "
                         f"timings are not comparable")
    failed.extend((e.key, e.error or "failed") for e in current.entries
                  if e.key not in paired_cur and not e.passed)
    only_base = tuple(e.key for e in baseline.entries if e.key not in paired_base)
    only_cur = tuple(e.key for e in current.entries if e.key not in paired_cur and e.passed)
    return Comparison(baseline, current, tuple(changes), thresholds, alpha, tuple(failed), only_base, only_cur,
                      tuple(notes))


def _check_threshold_metrics(thresholds: Mapping[str, Threshold], *sources: Source) -> None:
    present = {m for s in sources for e in s.entries for m in e.values}
    known = set(KNOWN_METRICS) | present
    for name in thresholds:
        if name not in known and not name.endswith("_time"):
            raise UsageError(f"--fail-on {name}: no such metric{did_you_mean(name, sorted(known))} "
                             f"(metrics here: {', '.join(sorted(present)) or 'none'})")


def _compare_entry(b: Entry, c: Entry, thresholds: Mapping[str, Threshold], alpha: float) -> list[MetricChange]:
    out = []
    names = [m for m in KNOWN_METRICS if m in b.values or m in c.values]
    names += [m for m in (*b.values, *c.values) if m not in names and m not in KNOWN_METRICS]
    names = list(dict.fromkeys(names))
    p_steps = mann_whitney_p(b.step_seconds, c.step_seconds, alpha)
    p_runs = run_level_p(b.run_medians, c.run_medians)
    for name in names:
        base, cur = b.values.get(name), c.values.get(name)
        spec = metric_spec(name, [base, cur])
        label = f"accuracy ({c.primary_metric or b.primary_metric})" if name == "accuracy" and (
            c.primary_metric or b.primary_metric) else name
        threshold = thresholds.get(name)
        change_unit = threshold.unit if threshold else ("pt" if spec.unit == "fraction" else "%")
        change = None
        if base is not None and cur is not None:
            change = (threshold.change(base, cur) if threshold else
                      (cur - base) * 100.0 if change_unit == "pt" else relative_change(base, cur))
        p = p_steps if spec.steps else None
        pr = p_runs if spec.steps else None
        verdict, note = "", ""
        if threshold is not None and base is not None and cur is not None:
            verdict, note = _judge(threshold, base, cur, spec, p, pr, b, c, alpha)
        elif threshold is not None:
            note = "missing on one side"
        out.append(MetricChange(c.key, name, label, spec, base, cur, change, change_unit, threshold, p, verdict, note,
                                pr))
    return out


def _judge(t: Threshold, base: float, cur: float, spec: MetricSpec, p: float | None, p_runs: float | None,
           b: Entry, c: Entry, alpha: float) -> tuple[str, str]:
    worse, better = t.worse(base, cur), t.better(base, cur)
    if not worse and not better:
        return VERDICT_OK, ""
    if spec.steps:
        if p is None:
            why = ("no raw step samples" if not b.step_seconds or not c.step_seconds else
                   f"too few step samples ({len(b.step_seconds)} vs {len(c.step_seconds)}) for p < {alpha:g}")
            return (VERDICT_REGRESSION if worse else VERDICT_IMPROVEMENT), f"threshold only: {why}"
        if p >= alpha:
            return VERDICT_NOISE, f"p={p:.2g} >= {alpha:g}: within the noise of the step samples"
        if p_runs is not None and p_runs >= RUN_ALPHA:
            return VERDICT_NOISE, (f"the repeated runs ({len(b.run_medians)} vs {len(c.run_medians)}) differ among "
                                   f"themselves about as much as between the sides (run-level p={p_runs:.2g} >= "
                                   f"{RUN_ALPHA:g})")
    return (VERDICT_REGRESSION if worse else VERDICT_IMPROVEMENT), ""


def run_level_p(baseline: Sequence[float], current: Sequence[float]) -> float | None:
    """Two-sided Welch t-test p-value on the log per-run medians of pooled repeats (None without repeats).

    Steps of one run share that run's moment of a noisy machine, so pooled steps look more certain
    than they are; the runs, each one sample, say how much whole runs move between repeats.
    """
    if len(baseline) < 2 or len(current) < 2:
        return None
    a = [math.log(x) for x in baseline if x > 0]
    b = [math.log(x) for x in current if x > 0]
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(b, a, equal_var=False).pvalue)


def mann_whitney_p(baseline: Sequence[float], current: Sequence[float], alpha: float = DEFAULT_ALPHA) -> float | None:
    """Two-sided Mann-Whitney U p-value of two samples, or None where the test cannot reach ``alpha``.

    With n and m samples the smallest two-sided p-value possible is 2 / C(n+m, n); where that is
    not below ``alpha`` the test could never flag anything, so the caller falls back to the threshold.
    """
    n, m = len(baseline), len(current)
    if n == 0 or m == 0 or (min(n, m) < 20 and 2.0 / math.comb(n + m, n) >= alpha):
        return None
    from scipy.stats import mannwhitneyu

    if len(set(baseline) | set(current)) == 1:
        return 1.0
    return float(mannwhitneyu(current, baseline, alternative="two-sided").pvalue)


def _settings_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    ignore = {"out_dir"}
    keys = [k for k in dict.fromkeys((*a, *b)) if k not in ignore and k in a and k in b and a[k] != b[k]]
    return ", ".join(f"{k} {a[k]!r} -> {b[k]!r}" for k in keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6
                                                                       else "")


# -------------------------------------------------------------------------------------------------
# Rendering.
# -------------------------------------------------------------------------------------------------

COMPARE_FORMATS = ("table", "markdown", "json")


def render_comparison(cmp: Comparison, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(comparison_data(cmp), indent=2, allow_nan=False) + "\n"
    from tabulate import tabulate

    md = fmt == "markdown"
    headers = ["benchmark", "metric", "baseline", "current", "change", "threshold", "p", "verdict"]
    rows = []
    for c in cmp.changes:
        verdict = c.verdict
        if md and verdict == VERDICT_REGRESSION:
            verdict = ":x: **regression**"
        elif md and verdict == VERDICT_IMPROVEMENT:
            verdict = ":rocket: improvement"
        rows.append([c.entry, c.label, _fmt_value(c.baseline, c.spec), _fmt_value(c.current, c.spec),
                     _fmt_change(c), c.threshold.text if c.threshold else "", _fmt_p(c.p_value), verdict])
    lines: list[str] = []
    status = ("no regression" if cmp.ok else
              ", ".join(x for x in (f"{len(cmp.regressions)} regression(s)" if cmp.regressions else "",
                                    f"{len(cmp.failed)} failed" if cmp.failed else "") if x))
    if md:
        icon = ":white_check_mark:" if cmp.ok else ":x:"
        lines.append(f"## finetune-bench comparison: {icon} {status}")
        lines.append("")
        lines.append(f"- baseline: `{cmp.baseline.path}`{_source_info(cmp.baseline)}")
        lines.append(f"- current: `{cmp.current.path}`{_source_info(cmp.current)}")
        lines.append("")
    else:
        lines.append(f"baseline: {cmp.baseline.path}{_source_info(cmp.baseline)}")
        lines.append(f"current:  {cmp.current.path}{_source_info(cmp.current)}")
        lines.append("")
    if rows:
        lines.append(tabulate(rows, headers=headers, tablefmt="github" if md else "simple", disable_numparse=True))
    else:
        lines.append("(no benchmark in common)")
    extra: list[str] = []
    for entry, error in cmp.failed:
        extra.append(f"FAILED in the current run: {entry}: {error}")
    if cmp.only_baseline:
        extra.append(f"only in the baseline (not compared): {', '.join(cmp.only_baseline)}")
    if cmp.only_current:
        extra.append(f"only in the current run (not compared): {', '.join(cmp.only_current)}")
    extra.extend(cmp.notes)
    extra.extend(f"{c.entry} {c.label}: {c.note}" for c in cmp.changes if c.note and c.verdict)
    if extra:
        lines.append("")
        lines.extend(f"- {x}" if md else x for x in extra)
    lines.append("")
    rule = (f"A metric regresses when its change is past its threshold and, for step-based metrics (throughput, "
            f"tokens_per_s, step_time), the timed step durations differ by a two-sided Mann-Whitney U test at "
            f"p < {cmp.alpha:g} (and, with repeated runs pooled on both sides, the per-run medians by Welch's t at "
            f"p < {RUN_ALPHA:g}).")
    lines.append(f"*{rule}*" if md else f"({rule})")
    lines.append("" if md else f"result: {cmp.summary()}")
    return "\n".join(lines).rstrip("\n") + "\n"


def comparison_data(cmp: Comparison) -> dict[str, Any]:
    def num(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else x

    return {
        "baseline": cmp.baseline.path,
        "current": cmp.current.path,
        "ok": cmp.ok,
        "summary": cmp.summary(),
        "alpha": cmp.alpha,
        "thresholds": {k: t.text for k, t in cmp.thresholds.items()},
        "changes": [{"benchmark": c.entry, "metric": c.metric, "baseline": num(c.baseline), "current": num(c.current),
                     "change": num(c.change), "change_unit": c.change_unit,
                     "threshold": c.threshold.text if c.threshold else None, "p_value": c.p_value,
                     "p_runs": c.p_runs,
                     "verdict": c.verdict or None, "note": c.note or None} for c in cmp.changes],
        "failed": [{"benchmark": e, "error": err} for e, err in cmp.failed],
        "only_baseline": list(cmp.only_baseline),
        "only_current": list(cmp.only_current),
        "notes": list(cmp.notes),
    }


def _source_info(s: Source) -> str:
    bits = [b for b in (s.kind, f"commit {s.commit}" if s.commit else "", s.created) if b]
    return f" ({', '.join(bits)})" if bits else ""


def _fmt_value(v: float | None, spec: MetricSpec) -> str:
    if v is None:
        return "-"
    if spec.unit == "bytes":
        return f"{v / 2**20:,.1f} MiB"
    if spec.unit == "s":
        return f"{v * 1000:,.2f} ms" if abs(v) < 1 else f"{v:,.2f} s"
    if spec.unit == "fraction":
        return f"{v:.4f}"
    if spec.unit == "count":
        return f"{v:,.0f}"
    if spec.unit in ("samples/s", "tokens/s"):
        return f"{v:,.1f}/s"
    return f"{v:.4g}"


def _fmt_change(c: MetricChange) -> str:
    if c.change is None:
        return "-"
    if c.change_unit == "%":
        return "inf" if math.isinf(c.change) else f"{c.change:+.1f}%"
    if c.change_unit == "pt":
        return f"{c.change:+.2f} pt"
    text = _fmt_value(abs(c.change), c.spec)
    return ("-" if c.change < 0 else "+") + text


def _fmt_p(p: float | None) -> str:
    if p is None:
        return ""
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


# -------------------------------------------------------------------------------------------------
# The command.
# -------------------------------------------------------------------------------------------------


class RegressionError(BenchError):
    """``bench run --compare-to``: the run regressed against its baseline (exit code 1)."""

    exit_code = 1


def add_arguments(ap: Any) -> None:
    """The arguments of ``bench compare`` (an argparse parser)."""
    ap.add_argument("baseline", metavar="BASELINE",
                    help="results.json, run folder, saved baseline name, or pytest-benchmark JSON file")
    ap.add_argument("current", metavar="CURRENT", help="the same kinds as BASELINE")
    ap.add_argument("--fail-on", dest="fail_on", action="append", default=[], metavar="METRIC=THRESHOLD",
                    help="regression threshold, repeatable: throughput=-10%%, accuracy=-1pt, peak_memory=+5%%, "
                         "step_time=+2ms, METRIC=off (defaults: " + ", ".join(DEFAULT_THRESHOLDS).replace("%", "%%")
                         + "); metric names: --list-metrics")
    ap.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                    help=f"significance level of the Mann-Whitney U test on step samples (default {DEFAULT_ALPHA})")
    ap.add_argument("--format", choices=COMPARE_FORMATS, default="table",
                    help="table (terminal), markdown (CI job summary, PR comment) or json")
    ap.add_argument("--output", metavar="FILE",
                    help="also write the report to FILE, appending (e.g. \"$GITHUB_STEP_SUMMARY\")")
    ap.add_argument("--baseline-dir", default=None, metavar="DIR",
                    help="where saved baselines live (default: $BENCH_BASELINE_DIR, else .bench/baselines)")
    ap.add_argument("--list-metrics", action=_ListMetrics, help="describe the metric names and threshold syntax")


class _ListMetrics(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        print(metrics_help(), end="")
        parser.exit(0)


def cmd_compare(args: Any) -> int:
    """Run ``bench compare``; returns 0 (no regression) or 1 (regression); raises UsageError (2)."""
    thresholds = thresholds_from(args.fail_on)
    baseline = load_source(args.baseline, args.baseline_dir)
    current = load_source(args.current, args.baseline_dir)
    cmp = compare(baseline, current, thresholds, args.alpha)
    text = render_comparison(cmp, args.format)
    print(text, end="")
    if args.output:
        write_report(Path(args.output), text if args.format != "table" else render_comparison(cmp, "markdown"))
    return cmp.exit_code


def write_report(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (job summaries are appended to by several steps)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        raise UsageError(f"--output {path}: cannot write it ({exc.strerror})") from None


def metrics_help() -> str:
    """The documented metric names (the module docstring's list), for ``--help-metrics``."""
    doc = __doc__ or ""
    start = doc.index("Metrics (")
    return doc[start:].strip() + "\n"
