"""Comparing two sources: every metric with its change, judged against its threshold."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.compare.metrics import (
    KNOWN_METRICS,
    MetricSpec,
    Threshold,
    metric_spec,
    relative_change,
    thresholds_from,
)
from bench.compare.sources import Entry, Source
from bench.compare.statistics import DEFAULT_ALPHA, RUN_ALPHA, mann_whitney_p, run_level_p
from bench.core.errors import UsageError
from bench.core.text import did_you_mean

VERDICT_REGRESSION = "REGRESSION"
VERDICT_IMPROVEMENT = "improvement"
VERDICT_NOISE = "not significant"
VERDICT_OK = "ok"
VERDICT_FAILED = "FAILED"
VERDICT_MISSING = "missing"  # a side failed or lacks the benchmark: nothing was compared, so nothing passed



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
    missing: tuple[tuple[str, str], ...] = ()  # (entry, why): failed on a side, or on one side only
    notes: tuple[str, ...] = ()

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == VERDICT_REGRESSION]

    @property
    def improvements(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == VERDICT_IMPROVEMENT]

    @property
    def ok(self) -> bool:
        """No regression and nothing missing: a comparison that did not compare everything never passes."""
        return not self.regressions and not self.missing

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        parts = []
        if self.regressions:
            parts.append(f"{len(self.regressions)} regression{'s' if len(self.regressions) > 1 else ''}: "
                         + "; ".join(f"{c.entry} {c.label} {_fmt_change(c)} (threshold {c.threshold.text})"
                                     for c in self.regressions if c.threshold))
        if self.missing:
            parts.append(f"{len(self.missing)} missing: " + "; ".join(f"{e} ({why})" for e, why in self.missing))
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
    cur_keys = {e.key for e in current.entries}
    notes: list[str] = []
    pairs = [(base_by_key[e.key], e) for e in current.entries if e.key in base_by_key]
    if not pairs and baseline.entries and current.entries:
        raise UsageError(f"nothing to compare: {baseline.path} has {_names(baseline)} and {current.path} has "
                         f"{_names(current)}; bench compare pairs runs of the same strategy (or test), never "
                         "different ones")
    changes: list[MetricChange] = []
    missing: list[tuple[str, str]] = []
    for b, c in pairs:
        if not c.passed or not b.passed:
            sides = [f"failed in the {side} ({e.error or 'no error recorded'})"
                     for side, e in (("baseline", b), ("current run", c)) if not e.passed]
            missing.append((c.key, " and ".join(sides)))
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
    missing += [(e.key, "not in the current run") for e in baseline.entries if e.key not in cur_keys]
    missing += [(e.key, "not in the baseline") for e in current.entries if e.key not in base_by_key]
    if not baseline.entries and not current.entries:
        missing.append(("(everything)", "neither side holds a result"))
    return Comparison(baseline, current, tuple(changes), thresholds, alpha, tuple(missing), tuple(notes))


def _names(source: Source) -> str:
    keys = list(dict.fromkeys(e.key for e in source.entries))
    shown = ", ".join(map(repr, keys[:5])) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return shown


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


def _settings_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    ignore = {"out_dir"}
    keys = [k for k in dict.fromkeys((*a, *b)) if k not in ignore and k in a and k in b and a[k] != b[k]]
    return ", ".join(f"{k} {a[k]!r} -> {b[k]!r}" for k in keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6
                                                                       else "")


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
