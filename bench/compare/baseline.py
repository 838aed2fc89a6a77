"""Saved baselines: the built-in ``baseline`` plugin (``bench run --save-baseline`` / ``--compare-to``).

A baseline is a copy of a run's ``results.json`` saved as ``<dir>/<NAME>.json``. ``<dir>`` is
``--baseline-dir``, else ``$BENCH_BASELINE_DIR``, else ``.bench/baselines`` (relative to the working
directory): a folder to commit (``git add -f``, ``.bench/`` is ignored) or to keep in a CI cache.

``--compare-to NAME`` prints the comparison with the baseline at the end of ``bench run`` (the same
report as ``bench compare``) and makes ``bench run`` exit with 1 on a regression. With both options,
the run is compared with the old baseline first, then saved as the new one (only if it did not regress).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.compare.saved import (
    ENV_BASELINE_DIR,
    baseline_path,
    list_baselines,
    resolve_baseline_dir,
    save_baseline,
)
from bench.core.errors import UsageError
from bench.core.markers import hookimpl

# Verdicts of ``--compare-to`` between bench_terminal_summary and bench_unconfigure, by config identity.
_PENDING: dict[int, Any] = {}


# -------------------------------------------------------------------------------------------------
# Hooks.
# -------------------------------------------------------------------------------------------------


@hookimpl
def bench_addoption(parser: Any) -> None:
    parser.addoption("--save-baseline", dest="save_baseline", type=str, default=None,
                     help="save this run's results as baseline NAME (<baseline dir>/NAME.json)")
    parser.addoption("--compare-to", dest="compare_to", type=str, default=None,
                     help="compare this run with baseline NAME (or a results file) at the end; exit 1 on a "
                          "regression")
    parser.addoption("--baseline-dir", dest="baseline_dir", type=str, default=None,
                     help=f"folder of saved baselines (default: ${ENV_BASELINE_DIR}, else .bench/baselines)")
    parser.addoption("--fail-on", dest="fail_on", action="append", type=str, default=None,
                     help="with --compare-to: regression threshold METRIC=THRESHOLD, repeatable (as bench "
                          "compare: throughput=-5%, accuracy=-1pt, peak_memory=+10%, work=+0%, METRIC=off)")
    parser.addoption("--compare-alpha", dest="compare_alpha", type=float, default=None,
                     help="with --compare-to: significance level of McNemar's and Welch's tests (default 0.05); "
                          "time verdicts use 95% intervals")
    parser.addoption("--compare-markdown", dest="compare_markdown", type=str, default=None,
                     help="with --compare-to: also append the comparison as markdown to FILE (e.g. "
                          "$GITHUB_STEP_SUMMARY)")


@hookimpl
def bench_configure(config: Any) -> None:
    """Check names and thresholds before anything runs, so a typo costs no benchmark time."""
    from bench.compare.metrics import thresholds_from

    folder = resolve_baseline_dir(config.getoption("baseline_dir"))
    name = config.getoption("save_baseline")
    if name:
        baseline_path(name, folder)
    thresholds_from(config.getoption("fail_on") or ())
    target = config.getoption("compare_to")
    if target:
        _baseline_file(target, folder)


def _baseline_file(target: str, folder: Path) -> Path:
    as_path = Path(target)
    if as_path.exists():
        return as_path
    path = baseline_path(target, folder, check_name=False)
    if path is None or not path.is_file():
        known = list_baselines(folder)
        from bench.core.text import did_you_mean

        raise UsageError(
            f"--compare-to {target}: no baseline {target!r} in {folder}"
            + (did_you_mean(target, known) + f" (saved: {', '.join(known)})" if known else
               " (none saved yet: run once with --save-baseline NAME)")
        )
    return path


@hookimpl
def bench_terminal_summary(config: Any, results: Sequence[Any], write: Callable[[str], None]) -> None:
    from bench.compare.command import write_report
    from bench.compare.comparison import compare
    from bench.compare.metrics import thresholds_from
    from bench.compare.render import render_comparison
    from bench.compare.sources import load_source
    from bench.compare.statistics import DEFAULT_ALPHA
    from bench.results.schema import RESULTS_FILENAME

    folder = resolve_baseline_dir(config.getoption("baseline_dir"))
    results_path = Path(config.out_dir) / RESULTS_FILENAME
    regressed = False
    target = config.getoption("compare_to")
    if target:
        baseline = load_source(_baseline_file(target, folder))
        current = load_source(results_path)
        alpha = config.getoption("compare_alpha") or DEFAULT_ALPHA
        cmp = compare(baseline, current, thresholds_from(config.getoption("fail_on") or ()), alpha)
        write("")
        write(f"Comparison with baseline {target}")
        write("=" * len(f"Comparison with baseline {target}"))
        write(render_comparison(cmp, "table").rstrip("\n"))
        markdown = config.getoption("compare_markdown")
        if markdown:
            write_report(Path(markdown), render_comparison(cmp, "markdown"))
        regressed = not cmp.ok
        if regressed:
            _PENDING[id(config)] = cmp
    name = config.getoption("save_baseline")
    if name:
        failed = [r.strategy for r in results if not r.passed]
        if failed:
            write(f"baseline {name!r} not saved: {', '.join(failed)} failed")
        elif regressed:
            write(f"baseline {name!r} not saved: the run regressed against {target!r}")
        elif not results:
            write(f"baseline {name!r} not saved: no results")
        else:
            write(f"baseline {name!r} saved: {save_baseline(results_path, name, folder)}")


@hookimpl(trylast=True)
def bench_unconfigure(config: Any) -> None:
    """After everything else: turn a regression found by ``--compare-to`` into exit code 1."""
    cmp = _PENDING.pop(id(config), None)
    if cmp is not None:
        from bench.compare.command import RegressionError

        raise RegressionError(f"regression against baseline {config.getoption('compare_to')!r}: {cmp.summary()}")
