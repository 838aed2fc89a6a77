"""Comparing two sources: every metric with its change and, where the data can tell, a verdict.

Verdicts, honestly: ``regression`` / ``improvement`` only when the 95% interval of the change lies past
the threshold, or the change is significant (the interval excludes no change) and its estimate is past
the threshold; ``ok`` when the change is confidently inside the threshold (or exactly nothing);
``inconclusive`` when the data cannot tell (too few steps, or an interval that straddles the
threshold), with what would settle it; ``missing`` when one side failed or lacks the benchmark
(either side: what was not compared never passes). No verdict comes from a threshold alone. Exit 1
on a regression or a missing side; ``--strict`` makes inconclusive fail too.

* time (``throughput``, ``tokens_per_s``, ``step_time``): :mod:`bench.compare.paired` (steps paired by
  position, load-normalised by the speed index; else an unpaired test per token);
* ``accuracy``: McNemar's exact test on the two runs' per-example outcomes (the same test examples);
  with repeats on both sides and no outcomes, Welch's t on the per-run values;
* ``work``: the counted step's FLOPs, aten operator calls and bytes allocated, compared exactly: any
  increase is more work (a regression by default; ``--fail-on work=off``), whatever the machine's load;
* ``peak_memory``: GPU allocated bytes compared directly (deterministic for the same work); CPU RSS
  only with repeats on both sides (Welch), else a change past the threshold is inconclusive.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.compare.metrics import (
    KNOWN_METRICS,
    MetricSpec,
    Threshold,
    metric_spec,
    relative_change,
    thresholds_from,
)
from bench.compare.paired import (
    NOISE_FLOOR,
    Steps,
    TimeChange,
    paired,
    steps_needed,
    unpaired,
    with_noise_floor,
)
from bench.compare.sources import Entry, Source
from bench.compare.statistics import DEFAULT_ALPHA
from bench.core.errors import UsageError
from bench.core.text import did_you_mean
from bench.results.stats import mcnemar, welch_p

VERDICT_REGRESSION = "regression"
VERDICT_IMPROVEMENT = "improvement"
VERDICT_OK = "ok"
VERDICT_INCONCLUSIVE = "inconclusive"
VERDICT_MISSING = "missing"
IDENTITY = ("machine", "device", "precision", "data", "model")
TIME_METRICS = ("throughput", "tokens_per_s", "step_time")


@dataclass(frozen=True)
class MetricChange:
    entry: str
    metric: str
    label: str
    spec: MetricSpec
    baseline: float | None
    current: float | None
    change: float | None  # in the threshold's unit where there is one, else percent (points for fractions)
    change_unit: str
    threshold: Threshold | None
    p_value: float | None
    verdict: str  # "" (shown, not judged), ok, regression, improvement, inconclusive
    note: str = ""
    low: float | None = None  # the change's 95% interval, in change_unit
    high: float | None = None
    method: str = ""


@dataclass(frozen=True)
class WorkChange:
    """The counted step's work on both sides: what changed, operator by operator."""

    entry: str
    verdict: str  # "same work", "more work", "less work", "different work", "not comparable"
    flops: tuple[float, float] = (0.0, 0.0)
    allocated_bytes: tuple[int, int] = (0, 0)
    ops: tuple[tuple[str, int, int], ...] = ()  # (operator, baseline calls, current calls) that changed
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    baseline: Source
    current: Source
    changes: tuple[MetricChange, ...]
    thresholds: Mapping[str, Threshold]
    alpha: float
    missing: tuple[tuple[str, str], ...] = ()  # (entry, why): failed or absent on one side
    notes: tuple[str, ...] = ()
    work: tuple[WorkChange, ...] = ()
    operators: Mapping[str, tuple[tuple[str, int, int, float, float], ...]] = field(default_factory=dict)
    strict: bool = False

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == VERDICT_REGRESSION]

    @property
    def improvements(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == VERDICT_IMPROVEMENT]

    @property
    def inconclusive(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == VERDICT_INCONCLUSIVE]

    @property
    def more_work(self) -> list[WorkChange]:
        return [w for w in self.work if w.verdict in ("more work", "different work") and "work" in self.thresholds]

    @property
    def ok(self) -> bool:
        bad = self.regressions or self.missing or self.more_work
        return not bad and not (self.strict and self.inconclusive)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        parts = []
        if self.regressions:
            parts.append(f"{len(self.regressions)} regression{'s' if len(self.regressions) > 1 else ''}: "
                         + "; ".join(f"{c.entry} {c.label} {_fmt_change(c)}" for c in self.regressions))
        if self.more_work:
            parts.append("work changed: " + "; ".join(f"{w.entry} ({w.verdict})" for w in self.more_work))
        if self.missing:
            parts.append(f"{len(self.missing)} missing: " + ", ".join(e for e, _ in self.missing))
        if self.inconclusive:
            parts.append(f"{len(self.inconclusive)} inconclusive"
                         + (" (fails: --strict)" if self.strict else ""))
        if not self.regressions and not self.missing and not self.more_work:
            n = len({c.entry for c in self.changes})
            parts.insert(0, f"no regression ({n} benchmark{'s' if n != 1 else ''} compared"
                         + (f", {len(self.improvements)} improvement(s)" if self.improvements else "") + ")")
        return "; ".join(parts)


def compare(baseline: Source, current: Source, thresholds: Mapping[str, Threshold] | None = None,
            alpha: float = DEFAULT_ALPHA, *, strict: bool = False, allow_different: Iterable[str] = (),
            normalise: bool = True, measure: str = "wall", noise_floor: float | None = None,
            entry_floors: Mapping[str, float] | None = None) -> Comparison:
    """Compare every benchmark of ``baseline`` with the same benchmark of ``current``. The run-to-run noise
    (a fraction) added to time intervals: ``entry_floors`` by benchmark key, else ``noise_floor`` for all,
    else what the strategy declared (recorded with its results), else :data:`NOISE_FLOOR`."""
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"--alpha {alpha}: must be between 0 and 1 (e.g. {DEFAULT_ALPHA})")
    entry_floors = dict(entry_floors or {})
    given = [] if noise_floor is None else [("", noise_floor)]
    for name, floor in [*given, *entry_floors.items()]:
        if not 0.0 <= floor < 1.0:
            raise UsageError(f"--noise-floor {name + '=' if name else ''}{100 * floor:g}: a percentage from 0 to "
                             f"under 100 (e.g. {100 * NOISE_FLOOR:g}, or the one tests/benchmarks/calibrate.py "
                             f"measured on your runner)")
    thresholds = dict(thresholds if thresholds is not None else thresholds_from())
    _check_threshold_metrics(thresholds, baseline, current)
    allowed = set(allow_different)
    unknown = allowed - set(IDENTITY)
    if unknown:
        raise UsageError(f"--allow-different {sorted(unknown)[0]}: not one of {', '.join(IDENTITY)}")
    base_by_key = {e.key: e for e in baseline.entries}
    cur_keys = {e.key for e in current.entries}
    pairs = [(base_by_key[e.key], e) for e in current.entries if e.key in base_by_key]
    if not pairs:
        raise UsageError(
            f"bench compare: no benchmark in common: the baseline has {', '.join(base_by_key) or 'none'}, the "
            f"current {', '.join(cur_keys) or 'none'}; compare runs of the same strategies (or tests)")
    _refuse_different(pairs, allowed)
    unknown_floors = sorted(set(entry_floors) - {c.key for _, c in pairs})
    if unknown_floors:
        raise UsageError(f"--noise-floor {unknown_floors[0]}=...: no such benchmark in both runs (they have "
                         f"{', '.join(c.key for _, c in pairs)})")
    notes: list[str] = []
    changes: list[MetricChange] = []
    work: list[WorkChange] = []
    operators: dict[str, tuple[tuple[str, int, int, float, float], ...]] = {}
    missing: list[tuple[str, str]] = [(k, "not in the current results") for k in base_by_key if k not in cur_keys]
    for b, c in pairs:
        if not c.passed:
            missing.append((c.key, f"failed in the current run: {c.error or 'no error recorded'}"))
            continue
        if not b.passed:
            missing.append((c.key, f"failed in the baseline: {b.error or 'no error recorded'}"))
            continue
        floor, floor_note = noise_floor_for(b, c, noise_floor, entry_floors)
        entry_changes = _compare_entry(b, c, thresholds, alpha, normalise, measure, floor)
        if floor_note and any(x.metric in TIME_METRICS and "run-to-run noise" in x.method for x in entry_changes):
            notes.append(floor_note)
        changes.extend(entry_changes)
        if b.work is not None and c.work is not None:
            work.append(work_change(c.key, b.work, c.work))
        time_verdicts = {x.verdict for x in entry_changes if x.metric in TIME_METRICS and x.verdict}
        if time_verdicts - {VERDICT_OK} and (b.top_ops or c.top_ops):
            operators[c.key] = operator_deltas(b.top_ops, c.top_ops)
        diff = _settings_diff(b.settings, c.settings)
        if diff:
            notes.append(f"{c.key}: settings differ, so the runs may not measure the same work: {diff}")
        for kind in sorted(allowed):
            vb, vc = b.identity.get(kind, ""), c.identity.get(kind, "")
            if vb and vc and vb != vc:
                notes.append(f"{c.key}: {kind} differs ({vb} vs {vc}), compared anyway (--allow-different {kind})")
    # A benchmark only the current run has was not compared either: missing, so the comparison fails
    # (a new strategy needs a baseline that holds it), never "no regression" over what was compared.
    missing += [(e.key, "not in the baseline") for e in current.entries if e.key not in base_by_key]
    return Comparison(baseline, current, tuple(changes), thresholds, alpha, tuple(missing), tuple(notes),
                      tuple(work), operators, strict)


def noise_floor_for(b: Entry, c: Entry, noise_floor: float | None,
                    entry_floors: Mapping[str, float]) -> tuple[float, str]:
    """The run-to-run noise floor (a fraction) for one benchmark, and a note when it is the strategy's own:
    ``--noise-floor NAME=PCT``, then ``--noise-floor PCT``, then the larger of what the two runs' strategy
    declared (``Strategy.run_to_run_noise_pct``), then :data:`NOISE_FLOOR`."""
    if c.key in entry_floors:
        return entry_floors[c.key], ""
    if noise_floor is not None:
        return noise_floor, ""
    # both readers' schemas bound a declared floor to 0-100; a larger one only widens the interval
    declared = [x for x in (b.noise_floor_pct, c.noise_floor_pct) if x is not None]
    if not declared:
        return NOISE_FLOOR, ""
    pct = max(declared)
    return pct / 100.0, (f"{c.key}: noise floor {pct:g}%, the run-to-run noise its strategy declared "
                         f"(calibrated; --noise-floor {c.key}=PCT sets your runner's)")


def _refuse_different(pairs: Sequence[tuple[Entry, Entry]], allowed: set[str]) -> None:
    for b, c in pairs:
        for kind in IDENTITY:
            vb, vc = b.identity.get(kind, ""), c.identity.get(kind, "")
            if vb and vc and vb != vc and kind not in allowed:
                raise UsageError(f"bench compare: {c.key}: the runs differ in {kind} ({vb} vs {vc}); their numbers "
                                 f"are not comparable; pass --allow-different {kind} to compare anyway")


def _check_threshold_metrics(thresholds: Mapping[str, Threshold], *sources: Source) -> None:
    present = {m for s in sources for e in s.entries for m in e.values}
    known = set(KNOWN_METRICS) | present
    for name in thresholds:
        if name not in known and not name.endswith("_time"):
            raise UsageError(f"--fail-on {name}: no such metric{did_you_mean(name, sorted(known))} "
                             f"(metrics here: {', '.join(sorted(present)) or 'none'})")


# -------------------------------------------------------------------------------------------------
# One benchmark.
# -------------------------------------------------------------------------------------------------


def _compare_entry(b: Entry, c: Entry, thresholds: Mapping[str, Threshold], alpha: float,
                   normalise: bool, measure: str, noise_floor: float = NOISE_FLOOR) -> list[MetricChange]:
    out = []
    pairing = paired(b.steps, c.steps, normalise, measure)
    if isinstance(pairing, str) and measure != "wall":  # e.g. no CPU times (a GPU run, an older file)
        pairing = paired(b.steps, c.steps, normalise, "wall")
    why_unpaired = ""
    time: TimeChange | None
    if isinstance(pairing, str):
        why_unpaired = pairing
        time = unpaired(b.steps, c.steps) if b.steps.seconds and c.steps.seconds else None
    else:
        time = pairing
    if time is not None:
        time = with_noise_floor(time, noise_floor, min(len(set(b.steps.run)) or 1, len(set(c.steps.run)) or 1))
    names = [m for m in KNOWN_METRICS if m in b.values or m in c.values]
    names += [m for m in (*b.values, *c.values) if m not in names]
    for name in dict.fromkeys(names):
        base, cur = b.values.get(name), c.values.get(name)
        spec = metric_spec(name, [base, cur])
        label = f"accuracy ({c.primary_metric or b.primary_metric})" if name == "accuracy" and (
            c.primary_metric or b.primary_metric) else name
        threshold = thresholds.get(name)
        unit = threshold.unit if threshold else ("pt" if spec.unit == "fraction" else "%")
        change = None
        if base is not None and cur is not None:
            change = (threshold.change(base, cur) if threshold else
                      (cur - base) * 100.0 if unit == "pt" else relative_change(base, cur))
        if name in TIME_METRICS:
            out.append(_time_change(b, c, name, label, spec, base, cur, change, unit, threshold, time, why_unpaired))
            continue
        verdict, note, p = "", "", None
        if threshold is not None and base is not None and cur is not None:
            if name == "accuracy":
                verdict, note, p = _judge_accuracy(b, c, threshold, base, cur, alpha)
            else:
                verdict, note, p = _judge_values(b, c, name, threshold, base, cur, alpha)
        elif threshold is not None:
            verdict, note = VERDICT_INCONCLUSIVE, "measured on one side only"
        out.append(MetricChange(c.key, name, label, spec, base, cur, change, unit, threshold, p, verdict, note))
    return out


def _time_change(b: Entry, c: Entry, name: str, label: str, spec: MetricSpec, base: float | None, cur: float | None,
                 change: float | None, unit: str, threshold: Threshold | None, time: TimeChange | None,
                 why_unpaired: str) -> MetricChange:
    """A step-time metric: its interval from the time change (a throughput is the time's inverse)."""
    if time is None:
        verdict = VERDICT_INCONCLUSIVE if threshold is not None else ""
        return MetricChange(c.key, name, label, spec, base, cur, change, unit, threshold, None, verdict,
                            "no timed step samples on one side")
    inverse = spec.better == "higher"  # throughput and tokens/s fall as time rises
    lo_t, hi_t = time.low, time.high
    est, lo, hi = ((_inverse(time.estimate), _inverse(hi_t), _inverse(lo_t)) if inverse else
                   (time.estimate, lo_t, hi_t))
    if not (math.isfinite(lo_t) and math.isfinite(hi_t)):  # no interval (too few steps): none after inverting
        lo, hi = -math.inf, math.inf
    note = time.note or (f"unpaired: {why_unpaired}" if why_unpaired else "")
    verdict = ""
    overload = starved_run(b, c) or load_mismatch(b, c) or speed_mismatch(b, c)
    if threshold is not None and threshold.unit == "%" and overload:
        verdict, note = VERDICT_INCONCLUSIVE, "; ".join(x for x in (note, overload) if x)
    elif threshold is not None and threshold.unit == "%":
        verdict, extra = judge_interval(est, lo, hi, time, threshold)
        note = "; ".join(x for x in (note, extra) if x)
    elif threshold is not None:  # an absolute step-time threshold (e.g. +2ms): judge on the median steps
        verdict = VERDICT_INCONCLUSIVE
        note = "; ".join(x for x in (note, "absolute thresholds on time are not tested; use a % threshold") if x)
    return MetricChange(c.key, name, label, spec, base, cur, 100.0 * est if math.isfinite(est) else None, "%",
                        threshold, time.p, verdict, note,
                        100.0 * lo if math.isfinite(lo) else None, 100.0 * hi if math.isfinite(hi) else None,
                        f"{time.method}, n={time.n}")


def _inverse(change: float) -> float:
    """The relative change of a rate whose time per unit changed by ``change`` (+25% time: -20% rate); a time
    change of -100% or below (an estimate that underflowed, or an unbounded interval) is an unbounded rate."""
    return 1 / (1 + change) - 1 if 1 + change > 0 else math.inf


def _cpu_runs(b: Entry, c: Entry) -> bool:
    return all(e.identity.get("device", "").split(" ")[0] == "cpu" for e in (b, c))


def _cpu_share(steps: Steps) -> float | None:
    """CPU-seconds per wall second of a run's timed steps, or None when not every step has its CPU time."""
    cpu = [x for x in steps.cpu if x is not None]
    if not cpu or len(cpu) != len(steps.cpu) or sum(steps.seconds) <= 0:
        return None
    return sum(cpu) / sum(steps.seconds)


STARVED_SHARE = 0.8  # CPU runs: a run whose process got less than this share of the CPU its threads asked for


def starved_run(b: Entry, c: Entry) -> str:
    """Why the time verdict cannot be trusted on a CPU, or ``""``: a run's process got much less CPU than its
    threads asked for (CPU-seconds per wall second below :data:`STARVED_SHARE` x its threads): other jobs
    were time-sharing its cores. Then a step and the speed index lose different shares of their time to the
    scheduler (two threads that wait for each other stall whenever either is switched out), and dividing
    one by the other stops working: runs of identical code 2x slower than quiet, at 0.9-1.3 CPU-seconds per
    second for 2 threads, came out 22% apart after normalisation. Quiet runs got 1.94-1.99."""
    if not _cpu_runs(b, c):
        return ""
    for side, e in (("baseline", b), ("current", c)):
        threads = int(e.identity.get("threads") or 0)
        share = _cpu_share(e.steps)
        if threads > 0 and share is not None and share < STARVED_SHARE * threads:
            return (f"the {side} run's process got {share:.2f} CPU-seconds per second for its {threads} threads "
                    f"({100 * share / threads:.0f}%): other jobs were sharing its cores, which slows steps and the "
                    f"speed index unequally; rerun on a quieter runner (or give the job its cores to itself)")
    return ""


LOAD_SHARE_LIMIT = 1.5  # CPU runs: the two runs' CPU shares may differ by this factor at most


def load_mismatch(b: Entry, c: Entry) -> str:
    """Why the time verdict cannot be trusted on a CPU, or ``""``: the two runs' processes got very different
    shares of the CPU in their timed steps (CPU-seconds per wall second), i.e. the machine's load moved
    between them by more than the speed index divides out (seen on a 2-core machine shared by many jobs,
    where one baseline's process got 0.15 CPU-seconds per second and the next run 0.62)."""
    if not _cpu_runs(b, c):
        return ""
    found = [_cpu_share(b.steps), _cpu_share(c.steps)]
    shares = [x for x in found if x is not None]
    if len(shares) != 2:
        return ""
    low, high = sorted(shares)
    if low > 0 and high / low <= LOAD_SHARE_LIMIT:
        return ""
    return (f"the machine's load differed between the runs: their processes got {shares[0]:.2f} and {shares[1]:.2f} "
            f"CPU-seconds per second in the timed steps (more than {LOAD_SHARE_LIMIT}x apart); rerun both on a "
            f"quieter machine")


# CPU runs: how far apart the two runs' median speed-index times may be for a time verdict, by workload
# (RunResult.speed_index). The single 192x192 product of older files ("") tracked the steps too loosely
# to divide a 1.15x shift out. The transformer block divided out shifts up to 1.6x, leaving errors that
# grow with the shift (paired.SHIFT_NOISE widens the interval for them); past 2x nothing was calibrated.
SPEED_INDEX_LIMITS = {"": 1.15}
SPEED_INDEX_LIMIT = 2.0


def speed_mismatch(b: Entry, c: Entry) -> str:
    """Why the time verdict cannot be trusted on a CPU, or ``""``: the machine itself ran at such different
    speeds in the two runs (the medians of each run's speed-index times, taken after every timed step, are
    further apart than the workload's limit) that dividing the shift out would extrapolate past what was
    calibrated. Old results files timed a single 192x192 product, whose shifts of 1.15x and more left
    false alarms after division (2 in 6 identical pairs)."""
    if not _cpu_runs(b, c):
        return ""
    medians = []
    for steps in (b.steps, c.steps):
        refs = [r for r in steps.reference if r is not None and r > 0]
        if not refs or len(refs) != len(steps.reference):
            return ""
        medians.append(statistics.median(refs))
    if b.steps.reference_kind != c.steps.reference_kind:
        return ""  # not divided out at all (the paired note says why)
    limit = SPEED_INDEX_LIMITS.get(c.steps.reference_kind, SPEED_INDEX_LIMIT)
    low, high = sorted(medians)
    if high / low <= limit:
        return ""
    return (f"the machine ran at different speeds in the two runs: the speed index took {medians[0] * 1e6:.0f} "
            f"and {medians[1] * 1e6:.0f} us (median; more than {limit}x apart), a shift one run per side "
            "cannot tell from a change in the code; rerun both sides, or compare --repeats runs")


def judge_interval(est: float, lo: float, hi: float, time: TimeChange, threshold: Threshold) -> tuple[str, str]:
    """The three verdicts from a relative change of a metric (``est`` and its interval ``lo``-``hi``) and
    its threshold (``direction`` -1: a decrease is bad)."""
    t = threshold.amount / 100.0
    worse = (lambda x: x <= -t) if threshold.direction < 0 else (lambda x: x >= t)
    better = (lambda x: x >= t) if threshold.direction < 0 else (lambda x: x <= -t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return VERDICT_INCONCLUSIVE, "needs at least 6 timed steps per side"
    significant = lo > 0 or hi < 0
    if (worse(hi) and worse(lo)) or (significant and worse(est)):
        return VERDICT_REGRESSION, ""
    if (better(hi) and better(lo)) or (significant and better(est)):
        return VERDICT_IMPROVEMENT, ""
    if -t < lo and hi < t:
        return VERDICT_OK, "significant, but within the threshold" if significant else ""
    need = steps_needed(time, t)
    return VERDICT_INCONCLUSIVE, (f"the interval reaches past {threshold.text}: needs about {need} timed steps per "
                                  f"side (has {time.n})" if need else "the interval straddles the threshold")


def _judge_accuracy(b: Entry, c: Entry, threshold: Threshold, base: float, cur: float,
                    alpha: float) -> tuple[str, str, float | None]:
    worse, better = threshold.worse(base, cur), threshold.better(base, cur)
    ob, oc = b.outcomes.get("accuracy"), c.outcomes.get("accuracy")
    if ob and oc and len(ob) == len(oc):
        test = mcnemar([int(x) for x in ob], [int(x) for x in oc])
        how = f"McNemar p={test.p:.2g} ({test.a_only} vs {test.b_only} discordant examples)"
        if test.p < alpha and (worse or better):
            return (VERDICT_REGRESSION if worse else VERDICT_IMPROVEMENT), how, test.p
        if worse or better:
            return VERDICT_INCONCLUSIVE, how + ": past the threshold, but not beyond noise", test.p
        return VERDICT_OK, how if test.discordant else "the same outcome on every example", test.p
    return _judge_values(b, c, "accuracy", threshold, base, cur, alpha)


def _judge_values(b: Entry, c: Entry, name: str, threshold: Threshold, base: float, cur: float,
                  alpha: float) -> tuple[str, str, float | None]:
    """Metrics without per-step or per-example data: repeats on both sides (Welch), or deterministic ones."""
    worse, better = threshold.worse(base, cur), threshold.better(base, cur)
    if not worse and not better:
        return VERDICT_OK, "", None
    if name in ("gpu_peak_allocated", "trainable_params", "total_params") or (
            name == "peak_memory" and "gpu_peak_allocated" in c.values):
        return (VERDICT_REGRESSION if worse else VERDICT_IMPROVEMENT), "deterministic for the same work", None
    vb, vc = b.run_values.get(name, ()), c.run_values.get(name, ())
    p = welch_p(vb, vc)
    if p is not None:
        if p < alpha:
            return (VERDICT_REGRESSION if worse else VERDICT_IMPROVEMENT), f"Welch p={p:.2g} over repeats", p
        return VERDICT_INCONCLUSIVE, f"Welch p={p:.2g} over repeats: not beyond noise", p
    return VERDICT_INCONCLUSIVE, "past the threshold on one run per side: repeat the runs (--repeats) to tell", None


# -------------------------------------------------------------------------------------------------
# Work and operators.
# -------------------------------------------------------------------------------------------------


def work_change(key: str, b: Mapping[str, Any], c: Mapping[str, Any]) -> WorkChange:
    """Exact comparison of two counted steps; only steps of the same batch compare."""
    if (b.get("samples"), b.get("padded_tokens")) != (c.get("samples"), c.get("padded_tokens")):
        return WorkChange(key, "not comparable", note=(
            f"the counted steps had different batches ({b.get('samples')} x {b.get('padded_tokens')} tokens vs "
            f"{c.get('samples')} x {c.get('padded_tokens')})"))
    ob, oc = dict(b.get("ops") or {}), dict(c.get("ops") or {})
    ops = tuple((op, int(ob.get(op, 0)), int(oc.get(op, 0))) for op in sorted({*ob, *oc})
                if ob.get(op, 0) != oc.get(op, 0))
    flops = (float(b.get("flops") or 0.0), float(c.get("flops") or 0.0))
    alloc = (int(b.get("allocated_bytes") or 0), int(c.get("allocated_bytes") or 0))
    ups = [d for d in ((cur - base) for _, base, cur in ops)] + [flops[1] - flops[0], alloc[1] - alloc[0]]
    more, less = any(d > 0 for d in ups), any(d < 0 for d in ups)
    verdict = "different work" if more and less else "more work" if more else "less work" if less else "same work"
    return WorkChange(key, verdict, flops, alloc, ops)


def operator_deltas(b: Mapping[str, tuple[int, float]], c: Mapping[str, tuple[int, float]],
                    top: int = 8) -> tuple[tuple[str, int, int, float, float], ...]:
    """The profiled window's operators whose self time changed most: (op, calls before, after, us before,
    after), largest change of self time first."""
    rows = [(op, b.get(op, (0, 0.0))[0], c.get(op, (0, 0.0))[0], b.get(op, (0, 0.0))[1], c.get(op, (0, 0.0))[1])
            for op in {*b, *c}]
    rows.sort(key=lambda r: -abs(r[4] - r[3]))
    return tuple(rows[:top])


def _settings_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    ignore = {"out_dir", "seed"}
    keys = [k for k in dict.fromkeys((*a, *b)) if k not in ignore and k in a and k in b and a[k] != b[k]]
    return ", ".join(f"{k} {a[k]!r} -> {b[k]!r}" for k in keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6
                                                                       else "")


# -------------------------------------------------------------------------------------------------
# Formatting shared with the renderer.
# -------------------------------------------------------------------------------------------------


def _fmt_value(v: float | None, spec: MetricSpec) -> str:
    if v is None:
        return "-"
    if spec.unit == "bytes":
        return f"{v / 2**20:,.1f} MiB"
    if spec.unit == "s":
        return f"{v * 1000:,.2f} ms" if abs(v) < 1 else f"{v:,.2f} s"
    if spec.unit == "fraction":
        return f"{v:.4f}"
    if spec.unit == "count":
        return f"{v:,.0f}"
    if spec.unit in ("samples/s", "tokens/s"):
        return f"{v:,.1f}/s"
    return f"{v:.4g}"


def _fmt_change(c: MetricChange) -> str:
    if c.change is None:
        return "-"
    interval = f" [{c.low:+.1f}, {c.high:+.1f}]" if c.low is not None and c.high is not None else ""
    if c.change_unit == "%":
        return ("inf" if math.isinf(c.change) else f"{c.change:+.1f}%") + interval
    if c.change_unit == "pt":
        return f"{c.change:+.2f} pt"
    text = _fmt_value(abs(c.change), c.spec)
    return ("-" if c.change < 0 else "+") + text


def _fmt_p(p: float | None) -> str:
    if p is None:
        return ""
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"
