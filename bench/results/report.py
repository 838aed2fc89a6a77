"""Reports: sections (titled tables) from results, rendered as terminal text, markdown, CSV or JSON.

The built-in ``report`` plugin contributes the standard sections through
``bench_report_sections``; other plugins (the profiler, third parties) add their own the same way.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.core.markers import hookimpl
from bench.core.plain import to_data
from bench.results import verdicts
from bench.results.schema import RunResult
from bench.results.stats import wilson_interval

FORMATS = ("table", "markdown", "csv", "json")
PHASE_ORDER = ("setup", "baseline", "extract", "train", "eval")
METRIC_ORDER = ("test_accuracy", "test_macro_f1", "best_val_accuracy", "exact_match_before", "exact_match_after",
                "eval_loss", "eval_perplexity")


@dataclass(frozen=True)
class Section:
    """A titled table. ``note`` is one line shown under it (units, what was excluded)."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str = ""


# -------------------------------------------------------------------------------------------------
# The built-in sections.
# -------------------------------------------------------------------------------------------------


@hookimpl(tryfirst=True)
def bench_report_sections(results: Sequence[RunResult], raw: bool) -> list[Section]:
    return standard_sections(results, raw=raw)


def standard_sections(results: Sequence[RunResult], raw: bool = False) -> list[Section]:
    """The built-in tables. With repeats (``--repeats``), one row per strategy with means and intervals
    (``raw``: one row per run instead); then the differences against the best strategy and the rows
    that should not be compared."""
    if not results:
        return []
    labelled = len({r.label for r in results}) > 1
    if verdicts.has_repeats(results) and not raw:
        firsts = [r for r in results if r.repeat == 0 or not r.passed]
        sections = [_summary(results, labelled), _parameters(firsts, labelled), distributed_section(firsts, labelled),
                    _phases(firsts, labelled), techniques_section(firsts, labelled)]
    else:
        sections = [_metrics(results, labelled), _throughput(results, labelled), _memory(results, labelled),
                    _parameters(results, labelled), distributed_section(results, labelled), _phases(results, labelled),
                    energy_section(results, labelled), techniques_section(results, labelled)]
    sections += [_differences(results, labelled), _comparability(results, labelled)]
    failures = _failures(results, labelled)
    if failures.rows:
        sections.append(failures)
    return [s for s in sections if s.rows]


def _group_key(labelled: bool) -> Any:
    return (lambda label, name: (label, name)) if labelled else (lambda label, name: (name,))


def _summary(results: Sequence[RunResult], labelled: bool) -> Section:
    return Section(
        "Strategies over repeats", (*_key_headers(labelled), "n", "primary metric", "mean [95% interval]", "interval",
                                    "samples/s [95%]", "train peak MiB [95%]", "MFU"),
        tuple(verdicts.summary_rows(results, _group_key(labelled))),
        "t-interval over the repeats (seeds seed..seed+n-1); a strategy run once: Wilson interval over its test "
        "examples; samples/s over timed steps; every run's row: bench report --raw")


def _differences(results: Sequence[RunResult], labelled: bool) -> Section:
    return Section(
        "Against the best strategy", (*_key_headers(labelled), "best", "metric", "difference", "accuracy verdict",
                                      "samples/s vs best", "speed verdict"),
        tuple(verdicts.difference_rows(results, _group_key(labelled))),
        f"accuracy: McNemar's exact test on the same test examples (first runs); speed: Welch's t on per-repeat "
        f"log samples/s, or Mann-Whitney on step seconds per sample for single runs; beyond noise at p < "
        f"{verdicts.ALPHA}")


def _comparability(results: Sequence[RunResult], labelled: bool) -> Section:
    return Section("Rows that differ in what their numbers depend on", (*_key_headers(labelled), "differs in", "value"),
                   tuple(verdicts.comparability_rows(results, _group_key(labelled))),
                   "compare these rows with care: precision, device, MFU peak, data, model or speed techniques differ")


def _key(r: RunResult, labelled: bool) -> tuple[Any, ...]:
    return (r.label, r.series) if labelled else (r.series,)


def _key_headers(labelled: bool) -> tuple[str, ...]:
    return ("run", "strategy") if labelled else ("strategy",)


def _metrics(results: Sequence[RunResult], labelled: bool) -> Section:
    names = [m for m in METRIC_ORDER if any(m in r.metrics for r in results)]
    names += sorted({m for r in results for m in r.metrics} - set(names))
    note = "fractions over n examples with their Wilson 95% interval [low, high]"
    if any(r.random_weights for r in results):  # shape-only rows: say why their metric cells are empty
        rows = tuple((*_key(r, labelled), r.status, *(_metric_cell(r, m) for m in names),
                      NOT_MEASURED_RANDOM if r.random_weights else "") for r in results)
        return Section("Task metrics", (*_key_headers(labelled), "status", *names, "note"), rows, note)
    rows = tuple((*_key(r, labelled), r.status, *(_metric_cell(r, m) for m in names)) for r in results)
    return Section("Task metrics", (*_key_headers(labelled), "status", *names), rows,
                   note if any(r.metric_samples for r in results) else "")


def _metric_cell(r: RunResult, metric: str) -> str:
    value = r.metrics.get(metric)
    n = r.metric_samples.get(metric, 0)
    if value is None or n <= 0 or not 0.0 <= value <= 1.0 or metric.endswith("macro_f1"):
        return _num(value, 4)
    ci = wilson_interval(value, n)
    return f"{value:.4f} [{ci.low:.3f}, {ci.high:.3f}]"


NOT_MEASURED_RANDOM = "accuracy not measured (random weights)"


def _throughput(results: Sequence[RunResult], labelled: bool) -> Section:
    rows = []
    for r in results:
        main = r.main_throughput()
        if main is None:
            continue
        phase, tp = main
        rows.append((*_key(r, labelled), phase, _num(tp.samples_per_s, 1), _num(tp.real_tokens_per_s, 0),
                     _ms(tp.step.median_s if tp.step else None), _ms(tp.step.iqr_s if tp.step else None),
                     f"{tp.timed_steps}/{tp.warmup_steps}/{tp.profiled_steps}", _num(tp.phase_samples_per_s, 1),
                     "peak too low" if r.mfu is None and "too low" in r.mfu_note else _pct(r.mfu)))
    return Section(
        "Throughput", (*_key_headers(labelled), "phase", "samples/s", "real tokens/s", "step median ms",
                       "step IQR ms", "steps timed/warm-up/profiled", "phase samples/s", "MFU"),
        tuple(rows),
        "samples/s and tokens/s from timed steps only (warm-up and profiled steps excluded); real tokens exclude "
        "padding; phase samples/s is over the phase's whole wall time",
    )


def _memory(results: Sequence[RunResult], labelled: bool) -> Section:
    rows = []
    for r in results:
        for p in sorted(r.phases, key=_phase_rank):
            rows.append((*_key(r, labelled), p.name, _mib(p.cpu_peak_rss_bytes), _mib(p.gpu_peak_allocated_bytes),
                         _mib(p.gpu_peak_reserved_bytes)))
    return Section("Peak memory per phase (MiB)",
                   (*_key_headers(labelled), "phase", "CPU peak RSS", "GPU peak allocated", "GPU peak reserved"),
                   tuple(rows), "each figure measured in its own phase after a reset; '-' where not measured")


def _parameters(results: Sequence[RunResult], labelled: bool) -> Section:
    rows = []
    for r in results:
        if r.params is None:
            continue
        p = r.params
        share = 100.0 * p.trainable / p.total if p.total else 0.0
        modules = ", ".join(r.trained_modules[:4]) + (f" (+{len(r.trained_modules) - 4})" if len(r.trained_modules) > 4
                                                       else "")
        act = r.activations
        rows.append((*_key(r, labelled), f"{p.trainable:,}", f"{p.total:,}", f"{share:.2f}%", _mib(p.param_bytes),
                     _mib(p.grad_bytes), _mib(p.optimizer_state_bytes),
                     f"{_mib(act.bytes)} ({act.batch_size} x {act.seq_len})" if act else "-", modules or "-"))
    return Section("Parameters", (*_key_headers(labelled), "trainable", "total", "trainable %", "params MiB",
                                  "grads MiB", "optimizer MiB", "activations MiB (batch x tokens)", "trained modules"),
                   tuple(rows), "parameter, gradient and optimizer bytes exact; activations: what autograd saved for "
                                "the backward of the first training micro-batch (parameters excluded)")


def distributed_section(results: Sequence[RunResult], labelled: bool = False) -> Section:
    """The torch.distributed rows, each with its one-process reference when the results hold one (the same
    strategy and config, in one process): world size, throughput of all ranks, the slowest rank's step and each
    rank's, per-rank peak memory and parameter+gradient+optimizer bytes, time in collectives, MFU, speed-up and
    scaling efficiency (speed-up / world size)."""
    rows: list[tuple[Any, ...]] = []
    shown: set[int] = set()
    for r in results:
        if r.distributed is None or not r.passed:
            continue
        d = r.distributed
        reference = one_process_reference(r, results)
        if reference is not None and id(reference) not in shown:
            shown.add(id(reference))
            rows.append(_distributed_row(reference, labelled, "1 (reference)", None))
        speedup, efficiency = scaling(r, reference)
        world = f"{d.nnodes} x {d.nproc_per_node} ({d.backend})" if d.nnodes > 1 else f"{d.world_size} ({d.backend})"
        rows.append(_distributed_row(r, labelled, world, (speedup, efficiency)))
    return Section(
        "Distributed runs", (*_key_headers(labelled), "parallel", "world size", "samples/s", "real tokens/s",
                             "step median ms (slowest rank; each rank)", "train peak MiB per rank (max; each)",
                             "params+grads+optimizer MiB per rank", "collectives (share of profiled steps)", "MFU",
                             "speed-up", "scaling efficiency"),
        tuple(rows),
        "--batch-size is global (all ranks' examples together); a step takes its slowest rank's time, samples/s "
        "count every rank's; peak memory: GPU allocated on CUDA, else CPU RSS; MFU against the sum of the ranks' "
        "peaks; scaling efficiency: speed-up over the one-process reference / world size")


def one_process_reference(result: RunResult, results: Sequence[RunResult]) -> RunResult | None:
    """The one-process run of the same strategy with the same config (its ``parallel`` aside) and repeat among
    ``results``."""
    def config(r: RunResult) -> dict[str, Any]:
        return {k: v for k, v in r.provenance.config.items() if k != "parallel"}

    return next((r for r in results if r.distributed is None and r.passed and r.strategy == result.strategy
                 and r.label == result.label and r.repeat == result.repeat and config(r) == config(result)), None)


def scaling(result: RunResult, one_process: RunResult | None) -> tuple[float | None, float | None]:
    """Speed-up of ``result`` (a distributed run) over ``one_process`` in samples/s of the timed training
    steps, and the scaling efficiency: speed-up / world size."""
    if result.distributed is None or one_process is None:
        return None, None
    mine, theirs = result.main_throughput(), one_process.main_throughput()
    if mine is None or theirs is None or not mine[1].samples_per_s or not theirs[1].samples_per_s:
        return None, None
    speedup = mine[1].samples_per_s / theirs[1].samples_per_s
    return speedup, speedup / result.distributed.world_size


def _distributed_row(r: RunResult, labelled: bool, world: str,
                     scale: tuple[float | None, float | None] | None) -> tuple[Any, ...]:
    main = r.main_throughput()
    tp = main[1] if main else None
    d = r.distributed
    step = _ms(tp.step.median_s if tp and tp.step else None)
    if d is None:  # the one-process reference
        train = r.phase("train")
        peak = _mib(_peak(train)) if train else "-"
        p = r.params
        whole = _mib(p.param_bytes + p.grad_bytes + p.optimizer_state_bytes) if p else "-"
        return (*_key(r, labelled), "-", world, _num(tp.samples_per_s if tp else None, 1),
                _num(tp.real_tokens_per_s if tp else None, 0), step, peak, whole, "-", _pct(r.mfu), "1.00x",
                "reference")
    timed = [i for i, s in enumerate(r.steps) if s.kind == "timed" and s.phase == (main[0] if main else "train")]
    per_rank_steps = [_median([m.step_seconds[i] for i in timed if i < len(m.step_seconds)]) for m in d.ranks]
    peaks = [_peak(next((p for p in m.phases if p.name == "train"), None)) for m in d.ranks]
    held = [m.params.param_bytes + m.params.grad_bytes + m.params.optimizer_state_bytes if m.params else None
            for m in d.ranks]
    shares = [m.collectives.share if m.collectives else None for m in d.ranks]
    known_peaks = [p for p in peaks if p is not None]
    speedup, efficiency = scale or (None, None)
    return (*_key(r, labelled), d.parallel, world, _num(tp.samples_per_s if tp else None, 1),
            _num(tp.real_tokens_per_s if tp else None, 0), f"{step}; {_each(per_rank_steps, _ms)}",
            f"{_mib(max(known_peaks)) if known_peaks else '-'}; {_each(peaks, _mib)}", _each(held, _mib),
            _each(shares, _pct), _pct(r.mfu), f"{speedup:.2f}x" if speedup else "-", _pct(efficiency))


def _peak(phase: Any) -> int | None:
    if phase is None:
        return None
    return phase.gpu_peak_allocated_bytes if phase.gpu_peak_allocated_bytes is not None else phase.cpu_peak_rss_bytes


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _each(values: Sequence[Any], fmt: Any, limit: int = 8) -> str:
    """Per-rank figures: ``r0 1.0, r1 1.2`` (the first ``limit`` ranks, then how many more)."""
    shown = ", ".join(f"r{i} {fmt(v)}" for i, v in enumerate(values[:limit]))
    return shown + (f", ... (+{len(values) - limit})" if len(values) > limit else "")


def _phases(results: Sequence[RunResult], labelled: bool) -> Section:
    names = [p for p in PHASE_ORDER if any(r.phase(p) for r in results)]
    names += sorted({p.name for r in results for p in r.phases} - set(names))
    rows = tuple((*_key(r, labelled), *(_num(_wall(r, n), 1) for n in names), _num(r.wall_s, 1)) for r in results)
    return Section("Wall time per phase (s)", (*_key_headers(labelled), *names, "total"), rows,
                   "total includes process start-up and imports")


def energy_section(results: Sequence[RunResult], labelled: bool = False) -> Section:
    """Joules per phase and per training sample where a counter was read; else why not."""
    names = [p for p in PHASE_ORDER if any(r.phase(p) for r in results)]
    names += sorted({p.name for r in results for p in r.phases} - set(names))
    rows = []
    for r in results:
        if r.energy is None:
            continue
        if not r.energy.measured:
            rows.append((*_key(r, labelled), f"not measured: {r.energy.detail}", *("-" for _ in names), "-"))
            continue
        train = r.phase("train")
        samples = sum(s.samples for s in r.steps if s.phase == "train")
        per_sample = train.energy_j / samples if train and train.energy_j is not None and samples else None
        rows.append((*_key(r, labelled), f"{r.energy.source}: {r.energy.detail}",
                     *(_num(_energy(r, n), 1) for n in names), _num(per_sample, 3)))
    return Section("Energy (J)", (*_key_headers(labelled), "counter", *names, "J per training sample"), tuple(rows),
                   "the counter's whole device (GPU: NVML total energy; CPU: the RAPL packages), read at each phase's "
                   "start and end")


def _energy(r: RunResult, phase: str) -> float | None:
    measure = r.phase(phase)
    return measure.energy_j if measure is not None else None


def techniques_section(results: Sequence[RunResult], labelled: bool = False) -> Section:
    """Which speed techniques each row ran with; the note names those that differ between rows (their
    throughputs then measure the techniques as well as the strategies)."""
    recorded = [r for r in results if r.techniques]
    names = list(dict.fromkeys(n for r in recorded for n in r.techniques))  # in the order they were applied
    rows = tuple((*_key(r, labelled), *(_on_off(r, n) for n in names)) for r in recorded)
    details = []
    for n in names:
        uses = [(r, r.techniques[n]) for r in recorded if n in r.techniques]
        if len({use.on for _, use in uses}) > 1:  # among the rows that recorded it
            off = [f"{r.strategy}: {use.detail}" for r, use in uses if not use.on and use.detail]
            details.append(n + (f" (off for {'; '.join(off)})" if off else ""))
    if details:
        note = "rows differ in " + ", ".join(details) + "; their speed figures measure these techniques too"
    else:
        note = "every row ran with the same techniques" if len(recorded) > 1 else ""
    return Section("Speed techniques", (*_key_headers(labelled), *names), rows, note)


def _on_off(r: RunResult, name: str) -> str:
    use = r.techniques.get(name)
    return "-" if use is None else "on" if use.on else "off"


def _wall(r: RunResult, phase: str) -> float | None:
    measure = r.phase(phase)
    return measure.wall_s if measure is not None else None


def _failures(results: Sequence[RunResult], labelled: bool) -> Section:
    rows = tuple((*_key(r, labelled), r.error.summary if r.error else "unknown") for r in results if not r.passed)
    return Section("Failures", (*_key_headers(labelled), "error"), rows,
                   "full tracebacks are in the results file")


def _phase_rank(p: Any) -> int:
    return PHASE_ORDER.index(p.name) if p.name in PHASE_ORDER else len(PHASE_ORDER)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f}"


def _mib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:,.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# -------------------------------------------------------------------------------------------------
# Rendering.
# -------------------------------------------------------------------------------------------------


def render(sections: Sequence[Section], fmt: str, results: Sequence[RunResult] = ()) -> str:
    """Render sections as ``table`` (terminal), ``markdown`` or ``csv``; ``json`` dumps the results."""
    if fmt == "json":
        return json.dumps([to_data(r) for r in results], indent=2)
    if fmt == "csv":
        return _csv(sections)
    from tabulate import tabulate

    table_fmt = "github" if fmt == "markdown" else "simple"
    parts = []
    for s in sections:
        title = f"### {s.title}" if fmt == "markdown" else f"{s.title}\n{'=' * len(s.title)}"
        body = tabulate(list(s.rows), headers=list(s.headers), tablefmt=table_fmt, disable_numparse=True)
        # markdown: a blank line ends the table (GitHub would read the next line as one more row)
        note = (f"\n\n*{s.note}*" if fmt == "markdown" else f"\n({s.note})") if s.note else ""
        parts.append(f"{title}\n{body}{note}")
    return "\n\n".join(parts) + "\n"


def _csv(sections: Sequence[Section]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    for s in sections:
        writer.writerow([f"# {s.title}"])
        writer.writerow(s.headers)
        writer.writerows(s.rows)
        writer.writerow([])
    return buf.getvalue()
