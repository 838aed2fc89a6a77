"""The metrics ``bench compare`` judges, their thresholds, and how each is computed from a result.

``bench compare``: two runs side by side, every metric with its change, its 95% interval where the data
gives one, and a verdict (regression, improvement, ok, inconclusive, missing): see
:mod:`bench.compare.comparison` for when each is given, and docs/metrics.md for every metric name.

Inputs are finetune-bench results files (``results.json``, a run folder, a saved baseline name) or
pytest-benchmark JSON files (``--benchmark-json``, ``--benchmark-autosave``). Entries are matched by
strategy name (results files) or test name (pytest-benchmark); nothing in common is an error.

Metrics (``--fail-on NAME=THRESHOLD``):

``throughput``     samples/s over the timed steps (their samples / their seconds; warm-up and profiled
                   steps excluded), the same figure as ``bench report``'s samples/s; its change and
                   interval come from the paired step times. For a pytest-benchmark test finetune-bench
                   did not write: rounds/s. Higher is better.
``tokens_per_s``   real (non-padding) tokens/s over the timed steps. Higher is better.
``step_time``      median timed step, seconds. Lower is better.
``work``           the counted step's FLOPs, aten operator calls and bytes allocated, exact: any
                   increase is more work (``work=off`` to only report it).
``accuracy``       the result's primary metric (``test_accuracy`` for the classification strategies),
                   a fraction; thresholds in points (``-1pt``); judged by McNemar's test on the
                   per-example outcomes. Higher is better.
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

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.core.errors import UsageError

# Set from the calibration in tests/benchmarks/calibrate.py (docs/ci.md): one run per side of the CI preset.
DEFAULT_THRESHOLDS: tuple[str, ...] = ("throughput=-5%", "accuracy=-1pt", "peak_memory=+10%", "work=+0%")


@dataclass(frozen=True)
class MetricSpec:
    """How to name, show and judge one metric."""

    name: str
    unit: str  # "samples/s", "tokens/s", "s", "bytes", "fraction", "count", ""
    better: str | None  # "higher" | "lower" | None
    steps: bool = False  # derived from the step samples: the Mann-Whitney test applies
    description: str = ""


KNOWN_METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec("throughput", "samples/s", "higher", True, "samples/s over the timed steps (their samples / their "
               "seconds), as bench report's samples/s; judged on the paired step times"),
    MetricSpec("tokens_per_s", "tokens/s", "higher", True, "real tokens/s over the timed steps"),
    MetricSpec("step_time", "s", "lower", True, "median timed step"),
    MetricSpec("work", "", "lower", False, "the counted step's FLOPs, aten operator calls and bytes allocated, "
               "compared exactly: any increase is more work"),
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
# Metrics of a result.
# -------------------------------------------------------------------------------------------------


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
