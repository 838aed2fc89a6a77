"""``bench compare``: the command's arguments and its run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.compare.comparison import compare
from bench.compare.metrics import DEFAULT_THRESHOLDS, thresholds_from
from bench.compare.paired import NOISE_FLOOR
from bench.compare.render import COMPARE_FORMATS, render_comparison
from bench.compare.sources import load_source
from bench.compare.statistics import DEFAULT_ALPHA
from bench.core.errors import BenchError, UsageError

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
                    help=f"significance level of McNemar's and Welch's tests (default {DEFAULT_ALPHA}); time "
                         f"verdicts use 95%% intervals")
    ap.add_argument("--strict", action="store_true", help="exit 1 on an inconclusive verdict too")
    ap.add_argument("--allow-different", dest="allow_different", action="append", default=[],
                    choices=("machine", "device", "precision", "data", "model"), metavar="WHAT",
                    help="compare runs that differ in WHAT (machine, device, precision, data, model), which bench "
                         "compare otherwise refuses; repeatable")
    ap.add_argument("--time", dest="measure", choices=("wall", "cpu"), default="wall",
                    help="what time the paired comparison uses: wall (step seconds; default) or cpu (the process's CPU "
                         "seconds in each step, CPU runs)")
    ap.add_argument("--no-load-normalise", dest="normalise", action="store_false",
                    help="do not divide the machine's load (the speed index measured after each step) out of the "
                         "paired step times")
    ap.add_argument("--noise-floor", dest="noise_floor", action="append", default=[], metavar="[NAME=]PCT",
                    help=f"the machine's run-to-run noise in percent (standard deviation of one run per side, after "
                         f"load normalisation), added to every time interval (default: the strategy's own, recorded "
                         f"with its results, e.g. all-layers', else {100 * NOISE_FLOOR:g}; both measured on a shared "
                         f"2-core VM; tests/benchmarks/calibrate.py measures your runner's; 0: off); NAME=PCT sets "
                         f"it for one benchmark (e.g. all-layers=5); repeatable")
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


def noise_floors(values: Sequence[str]) -> dict[str, Any]:
    """``--noise-floor`` values (``PCT`` or ``NAME=PCT``, percent) as :func:`compare`'s ``noise_floor`` and
    ``entry_floors`` (fractions)."""
    default: float | None = None  # not given: each strategy's declared floor, else NOISE_FLOOR
    entries: dict[str, float] = {}
    for value in values:
        name, _, pct = value.rpartition("=")
        try:
            floor = float(pct) / 100.0
        except ValueError:
            raise UsageError(f"--noise-floor {value}: not a percentage; give PCT or NAME=PCT "
                             f"(e.g. {100 * NOISE_FLOOR:g} or all-layers=5)") from None
        if name:
            entries[name] = floor
        else:
            default = floor
    return {"noise_floor": default, "entry_floors": entries}


def cmd_compare(args: Any) -> int:
    """Run ``bench compare``; returns 0 (no regression) or 1 (regression); raises UsageError (2)."""
    thresholds = thresholds_from(args.fail_on)
    baseline = load_source(args.baseline, args.baseline_dir)
    current = load_source(args.current, args.baseline_dir)
    cmp = compare(baseline, current, thresholds, args.alpha, strict=args.strict,
                  allow_different=args.allow_different, normalise=args.normalise, measure=args.measure,
                  **noise_floors(args.noise_floor))
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
    """The documented metric names (the list in :mod:`bench.compare.metrics`), for ``--list-metrics``."""
    from bench.compare import metrics

    doc = metrics.__doc__ or ""
    start = doc.index("Metrics (")
    return doc[start:].strip() + "\n"
