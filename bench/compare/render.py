"""Rendering a comparison: terminal table, markdown (CI job summaries, PR comments) or JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from bench.compare.comparison import (
    VERDICT_IMPROVEMENT,
    VERDICT_INCONCLUSIVE,
    VERDICT_REGRESSION,
    Comparison,
    _fmt_change,
    _fmt_p,
    _fmt_value,
)
from bench.compare.sources import Source

COMPARE_FORMATS = ("table", "markdown", "json")
RULE = ("regression / improvement: the 95% interval of the change lies past the threshold, or the change is "
        "significant and its estimate is past it; ok: confidently within it; inconclusive: the data cannot tell "
        "(the note says what would); time: steps paired by position, divided by the speed index (load); accuracy: "
        "McNemar on the per-example outcomes; work: exact")


def render_comparison(cmp: Comparison, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(comparison_data(cmp), indent=2, allow_nan=False) + "\n"
    from tabulate import tabulate

    md = fmt == "markdown"
    table = "github" if md else "simple"
    headers = ["benchmark", "metric", "baseline", "current", "change [95% interval]", "threshold", "p", "verdict"]
    rows = []
    for c in cmp.changes:
        if not c.verdict and c.metric not in ("throughput", "accuracy", "peak_memory", "tokens_per_s"):
            continue  # shown in --format json; the table keeps what is judged and the headline figures
        verdict = c.verdict
        if md and verdict == VERDICT_REGRESSION:
            verdict = ":x: **regression**"
        elif md and verdict == VERDICT_IMPROVEMENT:
            verdict = ":rocket: improvement"
        elif md and verdict == VERDICT_INCONCLUSIVE:
            verdict = ":grey_question: inconclusive"
        rows.append([c.entry, c.label, _fmt_value(c.baseline, c.spec), _fmt_value(c.current, c.spec),
                     _fmt_change(c), c.threshold.text if c.threshold else "", _fmt_p(c.p_value), verdict])
    lines: list[str] = []
    status = "ok" if cmp.ok else "FAIL"
    if md:
        icon = ":white_check_mark:" if cmp.ok else ":x:"
        lines += [f"## finetune-bench comparison: {icon} {cmp.summary()}", "",
                  f"- baseline: `{cmp.baseline.path}`{_source_info(cmp.baseline)}",
                  f"- current: `{cmp.current.path}`{_source_info(cmp.current)}", ""]
    else:
        lines += [f"baseline: {cmp.baseline.path}{_source_info(cmp.baseline)}",
                  f"current:  {cmp.current.path}{_source_info(cmp.current)}", ""]
    lines.append(tabulate(rows, headers=headers, tablefmt=table, disable_numparse=True) if rows else
                 "(nothing compared)")
    if cmp.work:
        lines += ["", "Work of one counted step (exact; any load)" if not md else "### Work of one counted step"]
        work_rows = []
        for w in cmp.work:
            changed = ", ".join(f"{op} {b}->{c}" for op, b, c in w.ops[:6]) + (
                f" (+{len(w.ops) - 6} more)" if len(w.ops) > 6 else "")
            work_rows.append([w.entry, w.verdict, f"{w.flops[0]:,.0f} -> {w.flops[1]:,.0f}",
                              f"{w.allocated_bytes[0]:,} -> {w.allocated_bytes[1]:,}", changed or w.note or "-"])
        lines.append(tabulate(work_rows, headers=["benchmark", "work", "FLOPs", "bytes allocated",
                                                  "operator calls that changed"], tablefmt=table,
                              disable_numparse=True))
    for entry, ops in cmp.operators.items():
        lines += ["", f"What changed in {entry}'s profiled window (self time)" if not md else
                  f"### What changed in {entry}'s profiled window"]
        lines.append(tabulate([[op, f"{cb} -> {cc}", f"{tb / 1000:,.2f} -> {tc / 1000:,.2f}", f"{(tc - tb) / 1000:+,.2f}"]
                               for op, cb, cc, tb, tc in ops],
                              headers=["operator", "calls", "self ms", "change ms"], tablefmt=table,
                              disable_numparse=True))
    extra: list[str] = []
    for entry, why in cmp.missing:
        extra.append(f"MISSING: {entry}: {why}")
    extra.extend(cmp.notes)
    extra.extend(f"{c.entry} {c.label}: {c.note}" for c in cmp.changes if c.note and c.verdict)
    extra.extend(f"{c.entry} {c.label}: {c.method}" for c in cmp.changes if c.method and c.metric == "throughput")
    if extra:
        lines.append("")
        lines.extend(f"- {x}" if md else x for x in extra)
    lines.append("")
    lines.append(f"*{RULE}*" if md else f"({RULE})")
    lines.append("" if md else f"result: {status}: {cmp.summary()}")
    return "\n".join(lines).rstrip("\n") + "\n"


def comparison_data(cmp: Comparison) -> dict[str, Any]:
    def num(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else x

    return {
        "baseline": cmp.baseline.path,
        "current": cmp.current.path,
        "ok": cmp.ok,
        "strict": cmp.strict,
        "summary": cmp.summary(),
        "alpha": cmp.alpha,
        "thresholds": {k: t.text for k, t in cmp.thresholds.items()},
        "changes": [{"benchmark": c.entry, "metric": c.metric, "baseline": num(c.baseline), "current": num(c.current),
                     "change": num(c.change), "change_unit": c.change_unit, "low": num(c.low), "high": num(c.high),
                     "threshold": c.threshold.text if c.threshold else None, "p_value": c.p_value,
                     "method": c.method or None, "verdict": c.verdict or None, "note": c.note or None}
                    for c in cmp.changes],
        "work": [{"benchmark": w.entry, "verdict": w.verdict, "flops": list(w.flops),
                  "allocated_bytes": list(w.allocated_bytes),
                  "ops": [{"op": op, "baseline": b, "current": c} for op, b, c in w.ops], "note": w.note or None}
                 for w in cmp.work],
        "operators": {k: [{"op": op, "calls": [cb, cc], "self_us": [tb, tc]} for op, cb, cc, tb, tc in v]
                      for k, v in cmp.operators.items()},
        "missing": [{"benchmark": e, "why": why} for e, why in cmp.missing],
        "notes": list(cmp.notes),
    }


def _source_info(s: Source) -> str:
    bits = [b for b in (s.kind, f"commit {s.commit}" if s.commit else "", s.created) if b]
    return f" ({', '.join(bits)})" if bits else ""
