"""Speed ratios of the built-in strategies against the baselines they stand in for.

A built-in row and a baseline row pair up when the baseline says it stands for that strategy
(``extra["stands_for"]``) and both trained the same layer selection (``extra["train_layers"]``).
Throughput is over the whole training phase (its wall time, everything in it: for ``last-layers``
that includes computing the frozen prefix once), never one step: samples/s for classification,
non-padding input tokens/s for SFT. Feature extraction is held to model FLOPs utilisation.

Targets (issue #8), on the same data and epochs, quality within 0.5 points of the baseline:
``all-layers`` >= 1.3x ``hf-trainer``, ``last-layers`` >= 3x ``hf-trainer`` on the same layers,
``sft`` >= 1.3x ``hf-trainer-sft``, ``feature-extraction`` embedding at >= 50% MFU.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TARGETS: dict[tuple[str, str], float] = {
    ("all-layers", "hf-trainer"): 1.3,
    ("last-layers", "hf-trainer"): 3.0,
    ("sft", "hf-trainer-sft"): 1.3,
}
MFU_TARGETS = {"feature-extraction": 0.5}
QUALITY_SLACK_PT = 0.5  # quality may be at most this many points below the baseline's


@dataclass(frozen=True)
class Ratio:
    """One comparison: ours against a baseline (``baseline`` empty for an MFU row)."""

    ours: str
    baseline: str
    layers: str
    measure: str
    ours_value: float | None
    baseline_value: float | None
    quality_metric: str
    ours_quality: float | None
    baseline_quality: float | None
    target: float | None
    repeat_ratios: tuple[float, ...] = ()  # one ratio per repeat of the pair (see ``aggregate``)

    @property
    def ratio(self) -> float | None:
        """Ours / baseline; over repeats, the median of the repeats' own ratios (each repeat's two sides ran
        next to each other with the same seed, so a repeat is a pair), not a ratio of two medians."""
        if self.repeat_ratios:
            return statistics.median(self.repeat_ratios)
        if self.ours_value is None or not self.baseline_value:
            return None
        return self.ours_value / self.baseline_value

    @property
    def quality_delta_pt(self) -> float | None:
        if self.ours_quality is None or self.baseline_quality is None:
            return None
        return 100.0 * (self.ours_quality - self.baseline_quality)

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        value = self.ours_value if not self.baseline else self.ratio
        if value is None:
            return False
        delta = self.quality_delta_pt
        return value >= self.target and (delta is None or delta >= -QUALITY_SLACK_PT)


def train_rate(result: Any, unit: str) -> float | None:
    """Samples/s (``unit="samples"``) or input tokens/s (``"tokens"``) over the train phase's wall time."""
    phase = result.phase("train")
    steps = [s for s in result.steps if s.phase == "train"]
    if phase is None or phase.wall_s <= 0 or not steps:
        return None
    work = sum(s.samples for s in steps) if unit == "samples" else sum(s.input_tokens for s in steps)
    return work / phase.wall_s


def ratios(results: Sequence[Any]) -> list[Ratio]:
    passed = [r for r in results if r.passed]
    out: list[Ratio] = []
    for base in passed:
        stands_for = base.extra.get("stands_for")
        if not stands_for:
            continue
        for ours in passed:
            if ours.strategy != stands_for or ours.extra.get("train_layers") != base.extra.get("train_layers"):
                continue
            unit = "tokens" if ours.primary_metric == "exact_match_after" else "samples"
            out.append(Ratio(ours.strategy, base.strategy, str(ours.extra.get("train_layers", "")),
                             f"train {unit}/s", train_rate(ours, unit), train_rate(base, unit),
                             ours.primary_metric, ours.metrics.get(ours.primary_metric),
                             base.metrics.get(ours.primary_metric), TARGETS.get((ours.strategy, base.strategy))))
    for r in passed:
        if r.strategy in MFU_TARGETS and r.mfu is not None:
            out.append(Ratio(r.strategy, "", "", "MFU (embedding)", r.mfu, None, r.primary_metric,
                             r.metrics.get(r.primary_metric), None, MFU_TARGETS[r.strategy]))
    return out


HEADERS = ("strategy", "baseline", "layers", "measure", "ours", "baseline value", "ratio", "quality",
           "Δ quality (pt)", "target", "met")


def rows(items: Sequence[Ratio]) -> tuple[tuple[str, ...], ...]:
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    out = []
    for r in items:
        mfu = not r.baseline
        out.append((
            r.ours, r.baseline or "-", r.layers or "-", r.measure,
            num(r.ours_value, ".1%" if mfu else ",.1f"), num(r.baseline_value, ",.1f"),
            "-" if mfu else num(r.ratio, ".2f") + ("x" if r.ratio is not None else ""),
            f"{r.quality_metric} {num(r.ours_quality, '.4f')}" + ("" if mfu else f" vs {num(r.baseline_quality, '.4f')}"),
            num(r.quality_delta_pt, "+.1f"),
            "-" if r.target is None else (f">= {r.target:.0%}" if mfu else f">= {r.target:.1f}x"),
            {True: "yes", False: "NO", None: "-"}[r.meets_target],
        ))
    return tuple(out)


def ratio_section(results: Sequence[Any]) -> Any:
    """The report section, or ``None`` when no built-in row has its baseline in ``results``."""
    from bench.api import Section

    items = [r for r in ratios(results) if r.baseline]
    if not items:
        return None
    return Section("Speed against the baselines", HEADERS, rows(items),
                   note="throughput over the whole train phase (wall time, everything in it); ratio = ours / "
                        f"baseline; quality may trail the baseline by at most {QUALITY_SLACK_PT} pt")
