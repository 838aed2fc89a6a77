"""Every figure table in README.md and docs/*.md, generated from the results files in docs/results/.

    python scripts/figures.py            # rewrite every block from its results file
    python scripts/figures.py --check    # exit 1, naming each block whose text differs from its results file
    python scripts/figures.py --list     # the blocks, where they are and what they come from

A block is the text between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` in any of those
pages; it comes from ``docs/results/NAME.json`` alone, so a block can move between pages verbatim. Each
results file says the machine, the precision and the command that produced it, and how it was kept:

* ``"kind": "table"``: a table kept as measured (``columns``, ``rows``);
* ``"kind": "ratios"``: ours against a baseline; the ratio, the quality difference, the target and
  whether it is met are computed here, with the targets and the quality rule of
  ``bench_baselines.ratios`` (``rows``: ``labels``, ``ours``, ``baseline``, ``ours_quality``,
  ``baseline_quality``, optional ``target``, ``repeat_ratios``, ``ratio_note``; or ``mfu`` for an MFU row);
* ``"kind": "ablation"``: variants against the strategy as shipped;
* ``"kind": "results-files"``: rows read from bench results files (``sources``, relative to
  docs/results/) with the formulas the harness publishes;
* ``"kind": "run-summary"``: one ``bench run``'s strategies from its results file (``source``): test
  accuracy with its Wilson 95% interval over ``test_examples``, training throughput, time and memory;
* ``"kind": "report-sections"``: the tables ``bench report SOURCE --format markdown`` prints, those whose
  titles are in ``sections`` (e.g. the repeats' means and intervals and the verdicts against the best).

``"reproduced": false`` marks figures whose run folders were not kept: the block says so, with the
commit whose README they were transcribed from.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)

# The speed targets and the quality rule (kept in one place: bench-baselines' ratios module).
DEFAULT_TARGETS = {("all-layers", "hf-trainer"): 1.3, ("last-layers", "hf-trainer"): 3.0,
                   ("sft", "hf-trainer-sft"): 1.3}
DEFAULT_MFU_TARGETS = {"feature-extraction": 0.5}
DEFAULT_QUALITY_SLACK_PT = 0.5


def _targets() -> tuple[dict[tuple[str, str], float], dict[str, float], float]:
    try:
        from bench_baselines import ratios
    except ImportError:  # the plugin is not installed: the same values, kept in step by tests/test_figures.py
        return DEFAULT_TARGETS, DEFAULT_MFU_TARGETS, DEFAULT_QUALITY_SLACK_PT
    return dict(ratios.TARGETS), dict(ratios.MFU_TARGETS), ratios.QUALITY_SLACK_PT


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown(page: Path) -> str:
    """A page as named in messages: relative to the repository when it is in it."""
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


# -------------------------------------------------------------------------------------------------
# Formatting.
# -------------------------------------------------------------------------------------------------


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def provenance(data: dict[str, Any], name: str) -> str:
    where = f"`docs/results/{name}.json`"
    parts = [f"Source: {where}; {data['machine']}; {data['precision']}; `{data['command']}`"]
    if data.get("date"):
        parts[0] += f" ({data['date']})"
    if not data.get("reproduced", True):
        parts.append(f"**Not reproduced**: {data.get('not_reproduced', '').rstrip('.')}.")
    if data.get("note"):
        parts.append(data["note"])
    return "\n\n".join(f"_{p}_" if not p.startswith("**") else p for p in parts)


# -------------------------------------------------------------------------------------------------
# Kinds of results files.
# -------------------------------------------------------------------------------------------------


def render_table(data: dict[str, Any]) -> str:
    return table(data["columns"], data["rows"])


def judge(ratio: float | None, target: float | None, delta_pt: float | None, slack: float) -> str:
    """The met column: the ratio reaches its target and quality trails the baseline by at most ``slack``."""
    if target is None:
        return "-"
    if ratio is None:
        return "no (not measured)"
    why = []
    if ratio < target:
        why.append(f"{ratio:.2f}x < {target:.1f}x")
    if delta_pt is not None and delta_pt < -slack:
        why.append(f"quality {delta_pt:+.2f} pt < -{slack} pt")
    return "yes" if not why else "no (" + "; ".join(why) + ")"


def ratio_row(row: dict[str, Any], targets: dict[tuple[str, str], float], mfu_targets: dict[str, float],
              slack: float, quality_shown: bool = True) -> list[str]:
    labels = list(row["labels"])
    oq, bq = row.get("ours_quality"), row.get("baseline_quality")
    if "mfu" in row:  # held to model FLOPs utilisation instead of a baseline
        target = row.get("target", mfu_targets.get(row["strategy"]))
        met = "-" if target is None else ("yes" if row["mfu"] >= target else f"no ({row['mfu']:.1%} < {target:.0%})")
        return [*labels, f"MFU {row['mfu']:.1%}" + (f" ({row['mfu_note']})" if row.get("mfu_note") else ""), "", "",
                "-" if oq is None else f"{oq:.4f}", "-" if target is None else f">= {target:.0%} MFU", met]
    ours, base = row["ours"], row["baseline"]
    repeats = row.get("repeat_ratios") or []
    ratio = statistics.median(repeats) if repeats else (ours / base if ours is not None and base else None)
    delta = None if oq is None or bq is None else 100.0 * (oq - bq)
    target = row["target"] if "target" in row else targets.get((row["strategy"], row["baseline_strategy"]))
    text = "-" if ratio is None else f"**{ratio:.2f}x**" if target is not None else f"{ratio:.2f}x"
    if repeats:
        text += f" (median of {len(repeats)} paired ratios, {min(repeats):.2f}-{max(repeats):.2f})"
    if row.get("ratio_note"):
        text += f" ({row['ratio_note']})"
    quality = "-" if oq is None else f"{oq:.4f} vs {bq:.4f} ({delta:+.2f} pt)" if delta is not None else f"{oq:.4f}"
    if row.get("quality_note"):
        quality += f" ({row['quality_note']})"
    cells = [*labels, num(ours), num(base), text, quality, "-" if target is None else f">= {target:.1f}x",
             judge(ratio, target, delta, slack)]
    return cells if quality_shown else [*cells[:-3], *cells[-2:]]


def render_ratios(data: dict[str, Any]) -> str:
    targets, mfu_targets, slack = _targets()
    unit, quality = data["unit"], data.get("quality")
    columns = [*data["label_columns"], f"ours {unit}", f"baseline {unit}", "ratio (ours / baseline)",
               *([f"{quality}, ours vs baseline"] if quality else []), "target", "met"]
    rows = [ratio_row(r, targets, mfu_targets, slack, quality_shown=bool(quality)) for r in data["rows"]]
    if not quality:
        return table(columns, rows) + "\n\n_met: the ratio reaches its target._"
    rule = (f"met: the ratio reaches its target and {quality} is at most {slack} pt below the "
            "baseline's (bench_baselines.ratios)")
    return table(columns, rows) + f"\n\n_{rule}._"


def render_ablation(data: dict[str, Any]) -> str:
    rows, shipped = [], None
    for row in data["rows"]:
        if row.get("shipped"):
            shipped = row["samples_per_s"]
        ratio = row["samples_per_s"] / shipped if shipped else None
        if row.get("shipped"):
            target, met = "-", "-"
        elif row.get("technique_off", True):  # the variant turns a shipped technique off: it should be slower
            target, met = "< 1.00x", "-" if ratio is None else ("yes" if ratio < 1.0 else "no")
        else:  # a technique that is off by default, turned on
            target, met = "-", "-"
        rows.append([row["variant"], num(row["samples_per_s"]), "-" if ratio is None else f"{ratio:.2f}x",
                     f"{row['accuracy']:.4f}", target, met])
    return table(["strategy / variant", "train samples/s (whole phase)", "vs as shipped", "test accuracy",
                  "target (the technique pays)", "met"], rows)


def render_results_files(data: dict[str, Any]) -> str:
    sys.path.insert(0, str(ROOT))
    from bench.measure.meter import timed_rate
    from bench.results.store import load_results

    rows = []
    for rel in data["sources"]:
        loaded = load_results(RESULTS / rel)
        for r in loaded.results:
            settings = r.provenance.settings
            values = settings.get("strategy_values", {})
            train = [s for s in r.steps if s.phase == "train"]
            phase = r.phase("train")
            samples = sum(s.samples for s in train)
            energy = phase.energy_j if phase is not None else None
            tp = r.throughput.get("train")
            rows.append([
                f"`{settings.get('model')}`", r.strategy,
                f"{values.get('batch_size', '?')} x {settings.get('seq_len')}",
                num(timed_rate(train, "samples")), f"{timed_rate(train, 'input_tokens') or 0:,.0f}",
                "-" if r.mfu is None else f"{r.mfu:.1%}",
                "-" if tp is None or tp.step is None else f"{tp.step.median_s * 1e3:,.1f}",
                "-" if phase is None or phase.gpu_peak_allocated_bytes is None
                else f"{phase.gpu_peak_allocated_bytes / 2**30:,.1f}",
                "-" if energy is None else f"{energy:,.0f} ({energy / samples:,.1f})",
            ])
        machine = loaded.machine
    gpu = machine.get("gpu") or {}
    libs = machine.get("libraries") or {}
    head = (f"{gpu.get('count', 1)} x {gpu.get('name', '?')} (driver {gpu.get('driver', '?')}, CUDA "
            f"{gpu.get('cuda', '?')}), torch {libs.get('torch', '?')}, transformers {libs.get('transformers', '?')}; "
            f"MFU against {machine.get('peak', {}).get('source', '?')}")
    columns = ["model", "strategy", "batch x tokens", "samples/s (timed)", "input tokens/s (timed)", "MFU",
               "step median ms", "GPU peak allocated GiB (train)", "train energy J (per sample)"]
    return f"_{head}._\n\n" + table(columns, rows)


def render_run_summary(data: dict[str, Any]) -> str:
    sys.path.insert(0, str(ROOT))
    from bench.measure.meter import timed_rate
    from bench.results.stats import wilson_interval
    from bench.results.store import load_results

    rows = []
    for r in load_results(RESULTS / data["source"]).results:
        acc = r.metrics.get(r.primary_metric)
        n = r.metric_samples.get(r.primary_metric) or data["test_examples"]
        ci = wilson_interval(acc, n) if acc is not None else None
        main = "extract" if r.phase("extract") is not None else "train"
        train = [s for s in r.steps if s.phase == main]
        phase = r.phase("train")
        rss = max((ph.cpu_peak_rss_bytes or 0) for ph in r.phases)
        rows.append([r.strategy, "-" if ci is None else f"{acc:.4f} [{ci.low:.3f}, {ci.high:.3f}]",
                     f"{num(timed_rate(train, 'samples'))} ({main})",
                     num(phase.wall_s if phase is not None else None), num(r.wall_s),
                     f"{rss / 2**20:,.0f}"])
    columns = ["strategy", f"test accuracy [Wilson 95%, n={data['test_examples']:,}]", "samples/s (timed steps)",
               "train s", "total s", "peak RSS MiB"]
    return table(columns, rows)


def render_report_sections(data: dict[str, Any]) -> str:
    sys.path.insert(0, str(ROOT))
    from bench.results.report import render as render_sections
    from bench.results.report import standard_sections
    from bench.results.store import load_results

    results = load_results(RESULTS / data["source"]).results
    wanted = list(data["sections"])
    found = {s.title: s for s in standard_sections(results)}
    missing = [t for t in wanted if t not in found]
    if missing:
        raise FigureError(f"{data['source']}: no section {missing[0]!r} in its report (it has: {', '.join(found)})")
    parts = []
    for title in wanted:
        body = render_sections([found[title]], "markdown").strip().removeprefix(f"### {title}").strip("\n")
        parts.append(f"**{title}**\n\n{body}")
    return "\n\n".join(parts)


KINDS = {"report-sections": render_report_sections, "run-summary": render_run_summary, "table": render_table, "ratios": render_ratios, "ablation": render_ablation,
         "results-files": render_results_files}


class FigureError(Exception):
    """A block or a results file that cannot be rendered, with the reason."""


def render(name: str) -> str:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise FigureError(f"no results file docs/results/{name}.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("machine", "precision", "command"):
        if not data.get(key):
            raise FigureError(f"docs/results/{name}.json says no {key!r}")
    body = KINDS[data["kind"]](data)
    return f"{body}\n\n{provenance(data, name)}\n"


# -------------------------------------------------------------------------------------------------
# Pages.
# -------------------------------------------------------------------------------------------------


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group("name"), m.group("body")) for m in BLOCK.finditer(text)]


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def check() -> list[str]:
    """One line per block whose text differs from what its results file gives, and per results file no
    page shows."""
    problems, seen = [], set()
    for page in pages():
        for name, body in blocks(page.read_text(encoding="utf-8")):
            seen.add(name)
            try:
                want = render(name)
            except (FigureError, KeyError, OSError, ValueError) as exc:
                problems.append(f"{shown(page)}: block {name!r}: {exc}")
                continue
            if body != want:
                problems.append(f"{shown(page)}: block {name!r} differs from docs/results/{name}.json "
                                "(python scripts/figures.py rewrites it)")
    for path in sorted(RESULTS.glob("*.json")):
        if path.stem not in seen:
            problems.append(f"docs/results/{path.name}: no page has a block <!-- figures:{path.stem} -->")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each block that differs")
    ap.add_argument("--list", action="store_true", help="list the blocks and their results files")
    args = ap.parse_args(argv)
    if args.list:
        for page in pages():
            for name, _ in blocks(page.read_text(encoding="utf-8")):
                print(f"{shown(page)}: {name} <- docs/results/{name}.json")
        return 0
    if args.check:
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = regenerate(text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"rewritten: {shown(page)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
