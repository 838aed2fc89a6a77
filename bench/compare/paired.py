"""How much slower or faster, with a 95% interval: the time statistics of ``bench compare``.

Two runs of the same strategy with the same seed and data process the same batches in the same order,
so step ``i`` of the baseline and step ``i`` of the current run do the same work. :func:`paired` uses
that: it matches timed steps by their position (checking that samples and tokens agree), takes each
pair's log time ratio and estimates the change as the Hodges-Lehmann median of the pairs (the estimator
that goes with Wilcoxon's signed-rank test), with its 95% interval from the Walsh averages and
Wilcoxon's p. A 3x spread of step times between long and short batches cancels out of every pair.

The machine's speed can still change between two runs (CI runs them one after the other on a shared
runner). Each timed step is followed by the speed index (``StepSample.reference_s``: a fixed transformer
block's forward, see ``bench.measure.meter.SpeedIndex``), and with ``normalise`` each pair's ratio is
divided by the ratio of the two runs' local speed indexes (a rolling median over neighbouring steps),
raised to :data:`STEP_SENSITIVITY` (a step follows about 0.9 of the index's change).
:func:`with_noise_floor` then widens the interval by the run-to-run noise that no pairing removes.

Inputs that cannot be paired (other tools' pytest-benchmark files, runs whose batches differ) fall back
to :func:`unpaired`: the two-sample Hodges-Lehmann shift of log time per token, with its interval from
the Mann-Whitney distribution. Every function is deterministic.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054
MIN_PAIRS = 6  # below this no interval is worth stating
# The between-run standard deviation of a load-normalised paired estimate, one run per side, identical
# code, on a shared 2-core VM: 2.2-2.5% in two calibrations of 20 ``bench run --preset ci`` pairs (docs/ci.md).
# That spread includes each pair's own step noise (a standard error of about 1.2%), which the paired interval
# already carries; 2% added to it in quadrature gives the 2.3% observed.
# ``bench compare --noise-floor`` sets another (a runner's own, from tests/benchmarks/calibrate.py).
NOISE_FLOOR = 0.02
# How much of the speed index's change a step's time follows, on a log scale: when the machine slowed, the
# steps slowed about 0.9x as much as the index. Calibration (20 rounds of last-layers ``--preset ci``, docs/ci.md):
# within runs, a step's time moved 0.82x the index's local median (a lower bound: the index's own jitter
# pulls the slope down); between runs, identical pairs spread least at 0.9 (2.5% -> 2.1%), and their leftover
# stopped growing with the shift (it had been 3.8% past a 1.2x shift against 2.1% below, when all of the
# index's change was divided out). :func:`paired` divides each pair by the index ratio to this power.
STEP_SENSITIVITY = 0.9
# How uncertain that sensitivity is (other strategies, other machines): +-0.05 of the shift's log, added to
# the noise floor in quadrature (:func:`with_noise_floor`): a 1.3x shift adds 1.3%.
SHIFT_NOISE = 0.05
REFERENCE_WINDOW = 4  # steps either side in the rolling median of the speed index


@dataclass(frozen=True)
class Steps:
    """One side's timed steps of the main phase, in data order; ``run``: which repeat each came from."""

    seconds: tuple[float, ...] = ()
    samples: tuple[int, ...] = ()
    tokens: tuple[int, ...] = ()
    reference: tuple[float | None, ...] = ()
    run: tuple[int, ...] = ()
    cpu: tuple[float | None, ...] = ()  # the process's CPU time in each step
    reference_kind: str = ""  # which workload ``reference`` timed (RunResult.speed_index; "": the old 192x192 product)

    def __len__(self) -> int:
        return len(self.seconds)


@dataclass(frozen=True)
class TimeChange:
    """The relative change of time per unit of work: ``estimate`` +0.10 is 10% slower; ``low``/``high`` its
    95% interval; ``p`` the test's p-value; ``n`` the pairs (or the smaller sample) behind it."""

    method: str
    n: int
    estimate: float
    low: float
    high: float
    p: float | None
    note: str = ""
    speed_shift: float = 1.0  # how much faster or slower the machine ran in the current run (speed index), divided out


MEASURES = ("wall", "cpu")


def paired(base: Steps, cur: Steps, normalise: bool = True, measure: str = "wall") -> TimeChange | str:
    """The paired estimate, or why the steps cannot be paired (then use :func:`unpaired`). ``measure``:
    ``wall`` (step seconds, divided by the speed index with ``normalise``) or ``cpu`` (the process's CPU
    seconds in the step, which a busy neighbour changes less; CPU runs only)."""
    if measure == "cpu":
        if not base.cpu or not cur.cpu or any(c is None for c in (*base.cpu, *cur.cpu)):
            return "no CPU times recorded"
        base = Steps(tuple(float(c or 0.0) for c in base.cpu), base.samples, base.tokens, (), base.run)
        cur = Steps(tuple(float(c or 0.0) for c in cur.cpu), cur.samples, cur.tokens, (), cur.run)
        normalise = False
    by_run_b = _by_run(base)
    by_run_c = _by_run(cur)
    runs = sorted(set(by_run_b) & set(by_run_c))
    if not runs:
        return "no timed steps on one side"
    diffs: list[float] = []
    normalised = normalise and base.reference_kind == cur.reference_kind
    kind_note = ("" if not normalise or normalised else
                 f"not load-normalised: the runs timed different speed-index workloads "
                 f"({base.reference_kind or 'matmul-192'} vs {cur.reference_kind or 'matmul-192'}; a results file "
                 f"from an older finetune-bench)")
    for run in runs:
        b, c = by_run_b[run], by_run_c[run]
        if len(b) != len(c):
            return f"the runs timed different numbers of steps ({len(b)} vs {len(c)})"
        for i, ((_, sb, tb, _), (_, sc, tc, _)) in enumerate(zip(b, c)):
            if (sb, tb) != (sc, tc):
                return (f"step {i + 1} did different work ({sb} samples / {tb} tokens vs {sc} / {tc}): different "
                        "data, seed or batch size")
        ref_b = _smoothed([r for *_, r in b])
        ref_c = _smoothed([r for *_, r in c])
        if normalise and (ref_b is None or ref_c is None):
            normalised = False
        for i, ((secs_b, *_), (secs_c, *_)) in enumerate(zip(b, c)):
            if secs_b <= 0 or secs_c <= 0:
                continue
            d = math.log(secs_c / secs_b)
            if normalised and ref_b is not None and ref_c is not None:
                d -= STEP_SENSITIVITY * math.log(ref_c[i] / ref_b[i])
            diffs.append(d)
    if len(diffs) < MIN_PAIRS:
        return _too_few(len(diffs), "paired", statistics.median(diffs) if diffs else math.nan)
    est, lo, hi = hodges_lehmann(diffs)
    p = _wilcoxon_p(diffs)
    shift = 1.0
    if normalised:
        refs_b = [r for r in base.reference if r is not None and r > 0]
        refs_c = [r for r in cur.reference if r is not None and r > 0]
        if refs_b and refs_c:
            shift = statistics.median(refs_c) / statistics.median(refs_b)
    method = ("paired steps, CPU time" if measure == "cpu" else
              "paired steps, load-normalised" if normalised else "paired steps")
    return TimeChange(method, len(diffs), math.expm1(est), math.expm1(lo), math.expm1(hi), p, kind_note, shift)


def with_noise_floor(change: TimeChange, floor: float, runs: int = 1) -> TimeChange:
    """``change`` with its interval and p-value widened by the machine's between-run noise.

    The steps of one run share the machine's state of the moment, so their pairs tell how precisely the
    two runs differ, not how much two runs of identical code differ: on a shared 2-core VM, identical
    pairs moved by a standard deviation of about 2% after load normalisation, far more than their
    per-step intervals allowed (docs/ci.md, calibration). ``floor`` is that standard deviation as a
    fraction of one run per side (0.02: 2%); with ``runs`` runs per side it shrinks as 1/sqrt(runs). The
    more of a speed shift the normalisation divided out, the more an error in :data:`STEP_SENSITIVITY`
    leaves behind: :data:`SHIFT_NOISE` x |log shift| joins the floor in quadrature. The total is added in quadrature to
    each side of the interval (log scale), and the p-value is recomputed from the widened standard error
    (normal approximation)."""
    if floor <= 0 or not (math.isfinite(change.low) and math.isfinite(change.high)) or change.n <= 0:
        return change
    sigma = math.hypot(floor / math.sqrt(max(1, runs)), SHIFT_NOISE * abs(math.log(change.speed_shift)))
    est, lo, hi = (math.log1p(x) for x in (change.estimate, change.low, change.high))
    below = math.hypot((est - lo) / Z95, sigma)
    above = math.hypot((hi - est) / Z95, sigma)
    se = (below + above) / 2
    p = math.erfc(abs(est) / se / math.sqrt(2)) if se > 0 else (1.0 if est == 0 else 0.0)
    return TimeChange(f"{change.method} + {100 * sigma:.2g}% run-to-run noise", change.n, change.estimate,
                      math.expm1(est - Z95 * below), math.expm1(est + Z95 * above), p, change.note,
                      change.speed_shift)


def unpaired(base: Steps, cur: Steps) -> TimeChange:
    """Two-sample estimate on log seconds per token (per step when tokens are unknown)."""
    x = _log_per_unit(base)
    y = _log_per_unit(cur)
    n = min(len(x), len(y))
    if n < MIN_PAIRS:
        return _too_few(n, "unpaired", statistics.median(y) - statistics.median(x) if n else math.nan)
    est, lo, hi = hodges_lehmann_shift(x, y)
    from scipy import stats

    p = float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
    return TimeChange("unpaired steps (per token)", n, math.expm1(est), math.expm1(lo), math.expm1(hi), p)


def hodges_lehmann(d: Sequence[float]) -> tuple[float, float, float]:
    """The median of the Walsh averages and its 95% interval (normal approximation of the signed-rank
    statistic's order statistics)."""
    n = len(d)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(n) for j in range(i, n))
    m = len(walsh)
    k = int(math.floor(n * (n + 1) / 4 - Z95 * math.sqrt(n * (n + 1) * (2 * n + 1) / 24)))
    k = max(0, min(k, m - 1))
    return statistics.median(walsh), walsh[k], walsh[m - 1 - k]


def hodges_lehmann_shift(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """The median of all differences y_j - x_i and its 95% interval (Mann-Whitney order statistics)."""
    nx, ny = len(x), len(y)
    diffs = sorted(b - a for a in x for b in y)
    m = len(diffs)
    k = int(math.floor(nx * ny / 2 - Z95 * math.sqrt(nx * ny * (nx + ny + 1) / 12)))
    k = max(0, min(k, m - 1))
    return statistics.median(diffs), diffs[k], diffs[m - 1 - k]


def steps_needed(change: TimeChange, threshold: float) -> int | None:
    """About how many timed steps (pairs) would make the interval clear ``threshold`` (a relative change,
    > 0) or clear zero, from the interval's width now (width shrinks as 1/sqrt(n))."""
    if change.n <= 0:
        return None
    est = math.log1p(change.estimate)
    half = (math.log1p(change.high) - math.log1p(change.low)) / 2
    if half <= 0:
        return None
    target = abs(abs(est) - math.log1p(threshold))
    target = max(target, 0.2 * math.log1p(threshold))  # an estimate right at the threshold needs a margin
    return int(math.ceil(change.n * (half / target) ** 2))


def _by_run(steps: Steps) -> dict[int, list[tuple[float, int, int, float | None]]]:
    out: dict[int, list[tuple[float, int, int, float | None]]] = {}
    runs = steps.run or (0,) * len(steps)
    refs = steps.reference or (None,) * len(steps)
    for run, secs, samples, tokens, ref in zip(runs, steps.seconds, steps.samples, steps.tokens, refs):
        out.setdefault(run, []).append((secs, samples, tokens, ref))
    return out


def _smoothed(refs: Sequence[float | None]) -> list[float] | None:
    """Each step's local speed index: the median of the references within ``REFERENCE_WINDOW`` steps."""
    if not refs or any(r is None or r <= 0 for r in refs):
        return None
    values = [float(r) for r in refs if r is not None]
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - REFERENCE_WINDOW), min(len(values), i + REFERENCE_WINDOW + 1)
        out.append(statistics.median(values[lo:hi]))
    return out


def _log_per_unit(steps: Steps) -> list[float]:
    units = steps.tokens if steps.tokens and all(t > 0 for t in steps.tokens) else (1,) * len(steps)
    return [math.log(s / u) for s, u in zip(steps.seconds, units) if s > 0]


def _wilcoxon_p(d: Sequence[float]) -> float | None:
    from scipy import stats

    if all(x == 0 for x in d):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def _too_few(n: int, how: str, log_estimate: float) -> TimeChange:
    """No interval below :data:`MIN_PAIRS`; the point estimate (the median log ratio) is still shown."""
    return TimeChange(how, n, math.expm1(log_estimate), -math.inf, math.inf, None,
                      f"too few timed steps ({n}; at least {MIN_PAIRS})")
