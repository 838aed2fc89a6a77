"""What a reader can decide from a table: strategies over repeats with 95% intervals, the differences
between strategies and whether they are beyond noise, and the rows that should not be compared.

* **Over repeats** (``--repeats N``): per strategy, the mean and 95% t-interval of the primary metric,
  samples/s and the train phase's peak memory (n shown); a strategy with one run gets the Wilson
  interval of its accuracy over the test examples instead.
* **Against the best**: for each strategy, its difference from the best one on the primary metric,
  judged by McNemar's exact test on the two strategies' per-example outcomes (the same test examples,
  paired), and its samples/s ratio to the best one's, judged by Welch's t-test on per-repeat log
  samples/s (two repeats or more on both sides) or a Mann-Whitney test on per-step seconds per sample.
  "beyond noise" at p < 0.05; otherwise "within noise".
* **Comparability**: rows of one task that differ in precision, device, the peak their MFU is against,
  their data, their model or the speed techniques they all record are named, with the values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.results.schema import RunResult
from bench.results.stats import Interval, mann_whitney_p, mcnemar, t_interval, welch_p, wilson_interval

ALPHA = 0.05


def groups(results: Sequence[RunResult]) -> dict[tuple[str, str], list[RunResult]]:
    """Passed results by (label, strategy), in first-seen order: the repeats of one strategy together."""
    out: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        if r.passed:
            out.setdefault((r.label, r.strategy), []).append(r)
    return out


def has_repeats(results: Sequence[RunResult]) -> bool:
    return any(len(runs) > 1 for runs in groups(results).values())


def primary_interval(runs: Sequence[RunResult]) -> Interval | None:
    """The primary metric: t-interval over repeats; one run: Wilson interval when the metric is a fraction
    over known examples; else the value alone (n=1)."""
    metric = runs[0].primary_metric
    values = [r.metrics[metric] for r in runs if metric in r.metrics]
    if not values:
        return None
    if len(values) == 1:
        n = runs[0].metric_samples.get(metric, 0)
        if n > 0 and 0.0 <= values[0] <= 1.0:
            return wilson_interval(values[0], n)
    return t_interval(values)


def samples_per_s(r: RunResult) -> float | None:
    main = r.main_throughput()
    return main[1].samples_per_s if main is not None else None


def train_peak_bytes(r: RunResult) -> int | None:
    phase = r.phase("train") or r.phase("extract")
    if phase is None:
        return None
    return phase.gpu_peak_allocated_bytes if phase.gpu_peak_allocated_bytes is not None else phase.cpu_peak_rss_bytes


def summary_rows(results: Sequence[RunResult], key: Any) -> list[tuple[Any, ...]]:
    rows = []
    for (label, name), runs in groups(results).items():
        metric = runs[0].primary_metric
        acc = primary_interval(runs)
        speed = t_interval([v for v in (samples_per_s(r) for r in runs) if v is not None])
        peaks = t_interval([float(v) for v in (train_peak_bytes(r) for r in runs) if v is not None])
        mfus = [r.mfu for r in runs if r.mfu is not None]
        rows.append((*key(label, name), len(runs), metric,
                     acc.text(4) if acc else "not measured" if runs[0].random_weights else "-",
                     "Wilson" if acc and acc.n > 1 and len(runs) == 1 else "t" if acc and len(runs) > 1 else "",
                     speed.text(1) if speed else "-", peaks.text(1, 1 / 2**20) if peaks else "-",
                     f"{100 * sum(mfus) / len(mfus):.1f}%" if mfus else "-"))
    return rows


# -------------------------------------------------------------------------------------------------
# Differences against the best strategy.
# -------------------------------------------------------------------------------------------------


def accuracy_verdict(best: RunResult, other: RunResult, metric: str) -> str:
    """McNemar on the first runs' per-example outcomes, when both kept them for the same data."""
    ca, cb = best.outcomes.get(metric), other.outcomes.get(metric)
    if not ca or not cb:
        return "no per-example outcomes kept: not tested"
    if not best.data_sha256 or best.data_sha256 != other.data_sha256:
        return "different data: not comparable"
    if len(ca) != len(cb):
        return "different examples: not tested"
    test = mcnemar([int(c) for c in ca], [int(c) for c in cb])
    verdict = "beyond noise" if test.p < ALPHA else "within noise"
    return f"{verdict} (McNemar p={_p(test.p)}, {test.a_only} vs {test.b_only} discordant)"


def main_phase(r: RunResult) -> str | None:
    main = r.main_throughput()
    return main[0] if main is not None else None


def speed_verdict(best_runs: Sequence[RunResult], other_runs: Sequence[RunResult]) -> str:
    pa, pb = main_phase(best_runs[0]), main_phase(other_runs[0])
    if pa != pb:
        return f"not compared: different phases ({pa or '-'} vs {pb or '-'})"
    a = [v for v in (samples_per_s(r) for r in best_runs) if v]
    b = [v for v in (samples_per_s(r) for r in other_runs) if v]
    if not a or not b:
        return "not measured"
    if len(a) >= 2 and len(b) >= 2:
        p = welch_p([math.log(v) for v in a], [math.log(v) for v in b])
        how = f"Welch on {len(a)} vs {len(b)} repeats"
    else:
        p = mann_whitney_p(_per_sample_seconds(best_runs[0]), _per_sample_seconds(other_runs[0]))
        how = "Mann-Whitney on step seconds per sample"
    if p is None:
        return "too few steps: not tested"
    return f"{'beyond noise' if p < ALPHA else 'within noise'} ({how}, p={_p(p)})"


def _per_sample_seconds(r: RunResult) -> list[float]:
    main = r.main_throughput()
    if main is None:
        return []
    return [s.seconds / s.samples for s in r.steps if s.phase == main[0] and s.kind == "timed" and s.samples]


def difference_rows(results: Sequence[RunResult], key: Any) -> list[tuple[Any, ...]]:
    """Each strategy against the best one of its task (same primary metric, same label)."""
    by_metric: dict[tuple[str, str], list[tuple[tuple[str, str], list[RunResult]]]] = {}
    for gkey, runs in groups(results).items():
        if runs[0].primary_metric in runs[0].metrics:
            by_metric.setdefault((gkey[0], runs[0].primary_metric), []).append((gkey, runs))
    rows = []
    for (_, metric), members in by_metric.items():
        if len(members) < 2:
            continue
        means = {g: sum(r.metrics[metric] for r in runs) / len(runs) for g, runs in members}
        best_key, best_runs = max(members, key=lambda m: means[m[0]])
        best_speed = t_interval([v for v in (samples_per_s(r) for r in best_runs) if v])
        for g, runs in members:
            if g == best_key:
                continue
            diff = 100 * (means[g] - means[best_key])
            speed = t_interval([v for v in (samples_per_s(r) for r in runs) if v])
            same_phase = main_phase(runs[0]) == main_phase(best_runs[0])
            ratio = f"{speed.value / best_speed.value:.2f}x" if speed and best_speed and best_speed.value and \
                same_phase else "-"
            rows.append((*key(*g), best_key[1], metric, f"{diff:+.2f} pt",
                         accuracy_verdict(best_runs[0], runs[0], metric), ratio, speed_verdict(best_runs, runs)))
    return rows


# -------------------------------------------------------------------------------------------------
# Comparability.
# -------------------------------------------------------------------------------------------------

ATTRIBUTES = (
    ("precision", lambda r: r.provenance.precision),
    ("device", lambda r: f"{r.provenance.device} {r.provenance.device_name}".strip()),
    ("peak", lambda r: r.peak_flops_source or ""),
    ("data", lambda r: r.data_sha256[:12] if r.data_sha256 else ""),
    ("model", lambda r: r.model_sha256[:12] if r.model_sha256 else ""),
)


def comparability_rows(results: Sequence[RunResult], key: Any) -> list[tuple[Any, ...]]:
    """Rows of one task (primary metric) that differ in an attribute their numbers depend on."""
    rows = []
    tasks: dict[str, list[RunResult]] = {}
    for r in results:
        if r.passed:
            tasks.setdefault(r.primary_metric, []).append(r)
    for members in tasks.values():
        for name, get in (*ATTRIBUTES, ("speed techniques", _techniques_getter(members))):
            values = {get(r) for r in members if get(r)}
            if len(values) > 1:
                for r in members:
                    rows.append((*key(r.label, r.strategy), name, get(r) or "-"))
    return rows


def _techniques_getter(members: Sequence[RunResult]) -> Any:
    """The speed techniques every row of a task records, each on or off (a technique only some strategies
    have, such as the feature cache, is not a difference between rows)."""
    common = set.intersection(*(set(r.techniques) for r in members)) if members else set()

    def get(r: RunResult) -> str:
        return ", ".join(f"{name} {'on' if r.techniques[name].on else 'off'}" for name in sorted(common))

    return get


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"
