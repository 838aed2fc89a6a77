"""Rendering a comparison: terminal table, markdown (CI job summaries, PR comments) or JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from bench.compare.comparison import (
    VERDICT_IMPROVEMENT,
    VERDICT_MISSING,
    VERDICT_REGRESSION,
    Comparison,
    _fmt_change,
    _fmt_p,
    _fmt_value,
)
from bench.compare.sources import Source
from bench.compare.statistics import RUN_ALPHA

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
    for entry, _why in cmp.missing:
        rows.append([entry, "(all)", "-", "-", "", "", "", VERDICT_MISSING if not md else f":x: **{VERDICT_MISSING}**"])
    lines: list[str] = []
    status = ("no regression" if cmp.ok else
              ", ".join(x for x in (f"{len(cmp.regressions)} regression(s)" if cmp.regressions else "",
                                    f"{len(cmp.missing)} missing" if cmp.missing else "") if x))
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
    for entry, why in cmp.missing:
        extra.append(f"missing: {entry}: {why} (not compared, so the comparison fails)")
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
        "missing": [{"benchmark": e, "why": why} for e, why in cmp.missing],
        "notes": list(cmp.notes),
    }


def _source_info(s: Source) -> str:
    bits = [b for b in (s.kind, f"commit {s.commit}" if s.commit else "", s.created) if b]
    return f" ({', '.join(bits)})" if bits else ""
