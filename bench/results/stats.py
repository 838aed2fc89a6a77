"""The statistics behind the report's intervals and verdicts (and ``bench compare``'s).

* :func:`t_interval`: mean and 95% t-interval over repeats (n - 1 degrees of freedom).
* :func:`wilson_interval`: the binomial 95% interval of one run's accuracy over its n test examples.
* :func:`mcnemar`: the exact McNemar test of two strategies' outcomes on the same examples (paired:
  far more powerful than comparing two accuracies).
* :func:`welch_p` and :func:`mann_whitney_p`: two-sided tests of two independent samples.

Every function is deterministic and pure: the tests check them against hand-computed values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval and the number of values behind it."""

    value: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 4, scale: float = 1.0) -> str:
        v, lo, hi = self.value * scale, self.low * scale, self.high * scale
        return f"{v:,.{digits}f} [{lo:,.{digits}f}, {hi:,.{digits}f}]"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval | None:
    """Mean and t-interval; None for no value; a single value has a zero-width interval (n=1: say so)."""
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, mean, mean, 1)
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def wilson_interval(p: float, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of a proportion ``p`` observed over ``n`` trials."""
    if n <= 0:
        return Interval(p, 0.0, 1.0, 0)
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if p <= 0.0 else max(0.0, center - half)  # exact at the edges (no 0.9999999999999999)
    high = 1.0 if p >= 1.0 else min(1.0, center + half)
    return Interval(p, low, high, n)


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs (``a_only``: A right and B wrong; ``b_only``: the reverse) and the exact two-sided p."""

    a_only: int
    b_only: int
    p: float

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only


def mcnemar(a: Sequence[int], b: Sequence[int]) -> McNemar:
    """Exact McNemar test: under no difference, each discordant pair goes either way with probability 1/2,
    so p = 2 P(X <= min(a_only, b_only)) for X ~ Binomial(discordant, 1/2), capped at 1."""
    if len(a) != len(b):
        raise ValueError(f"McNemar needs the same examples on both sides ({len(a)} vs {len(b)})")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n = a_only + b_only
    if n == 0:
        return McNemar(0, 0, 1.0)
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return McNemar(a_only, b_only, min(1.0, 2 * tail))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Welch t-test p; None when a side has fewer than two values or no variance at all."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    if max(a) == min(a) and max(b) == min(b):
        return 0.0 if a[0] != b[0] else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Mann-Whitney U p; None when a side is empty."""
    if not a or not b:
        return None
    from scipy import stats

    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
