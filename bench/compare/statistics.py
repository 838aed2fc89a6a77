"""The significance tests of ``bench compare``: Mann-Whitney U on step samples, Welch's t on runs.

Defaults set from the calibration in tests/benchmarks/calibrate.py (docs/ci.md): on a loaded 2-core
CPU machine, with interleaved repeats, same-code pairs: 0/12 flagged at -10% (1/12 at -5%); a 25%
slowdown (-20% throughput): 12/12 flagged at -10% (11/12 at -15%); the same at every alpha tried.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

DEFAULT_ALPHA = 0.002
RUN_ALPHA = 0.2  # the run-level veto on pooled repeats (Welch's t on log per-run medians)


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
