"""One result from the ranks of a torch.distributed run: what each rank measured, and the run's figures.

Each rank measures itself with its own meter (its steps, its phases' peak memory, its parameter bytes, its
device's peak FLOP/s, its time in collectives from its own profiler trace); rank 0 gathers them and
:func:`combine` makes the run's result:

* a step of the run takes as long as its slowest rank (the ranks wait for each other in the gradient
  all-reduce), and does the work of all of them: step ``i``'s seconds are the maximum over the ranks' step
  ``i``, its samples, tokens and CPU seconds the sum, its speed-index reading the slowest rank's; throughput
  (samples/s, tokens/s) comes from these combined steps;
* each phase's wall time and peak memory is the maximum over the ranks; every rank's own figures stay in
  ``result.distributed.ranks`` (per-rank peak memory, parameter/gradient/optimizer bytes, step times);
* MFU is counted FLOPs per token x the combined tokens/s / the sum of the ranks' peaks (each rank's peak is the
  one the host settled before the first strategy, never probed again in a rank: :func:`bench.host.launch.rank_peak`);
* the work counters, metrics and per-example outcomes are rank 0's result's (the metrics and outcomes were
  reduced over the ranks already; the work counters count rank 0's share of a step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from bench.measure.meter import achieved_flops, throughput_of
from bench.measure.peak import Peak, judge_mfu
from bench.results.schema import (
    CollectiveTime,
    DistributedInfo,
    PhaseMeasure,
    RankMeasure,
    RunResult,
    StepSample,
)


def rank_measure(result: RunResult, rank: int, local_rank: int, host: str, threads: int,
                 collectives: CollectiveTime | None) -> RankMeasure:
    """What one rank measured in its own run (its ``result``, before combining)."""
    return RankMeasure(rank=rank, local_rank=local_rank, host=host, device_name=result.provenance.device_name,
                       threads=threads, step_seconds=tuple(s.seconds for s in result.steps), phases=result.phases,
                       params=result.params, peak_flops=result.peak_flops, peak_flops_source=result.peak_flops_source,
                       collectives=collectives)


def combine(results: Sequence[RunResult], measures: Sequence[RankMeasure], info: DistributedInfo) -> RunResult:
    """The run's result from every rank's (in rank order; all passed): rank 0's metrics, parameters and
    provenance, the combined steps and phases, MFU against the sum of the peaks, and every rank's figures."""
    main = results[0]
    steps = combined_steps([r.steps for r in results])
    phases = combined_phases([r.phases for r in results], sum_energy=main.provenance.device == "cuda")
    peaks = [m.peak_flops for m in measures]
    peak_sum = sum(p for p in peaks if p is not None) if peaks and all(p is not None for p in peaks) else None
    merged = dataclasses.replace(main, steps=steps, phases=phases, throughput=throughput_of(phases, steps),
                                 wall_s=max(r.wall_s for r in results),
                                 distributed=dataclasses.replace(info, ranks=tuple(measures), peak_flops_sum=peak_sum))
    main_phase = merged.main_throughput()
    if main.flops_per_token is None or not peak_sum or main_phase is None:
        return dataclasses.replace(merged, mfu=None)
    source = f"sum of {len(measures)} ranks' peaks ({main.peak_flops_source})"
    achieved = achieved_flops(steps, main_phase[0], main.flops_per_token)
    if achieved is None:
        return dataclasses.replace(merged, mfu=None, peak_flops=peak_sum, peak_flops_source=source)
    mfu, note = judge_mfu(achieved, Peak(peak_sum, source, main.provenance.device, main.provenance.precision))
    return dataclasses.replace(merged, mfu=mfu, mfu_note=note, peak_flops=peak_sum, peak_flops_source=source)


def combined_steps(per_rank: Sequence[Sequence[StepSample]]) -> tuple[StepSample, ...]:
    """Step ``i`` of the run: the slowest rank's seconds, every rank's samples and tokens (rank 0's kind)."""
    out = []
    for same in zip(*per_rank):
        first = same[0]
        references = [s.reference_s for s in same if s.reference_s is not None]
        cpu = [s.cpu_s for s in same]
        out.append(StepSample(first.kind, max(s.seconds for s in same), sum(s.samples for s in same),
                              sum(s.tokens for s in same), first.phase, sum(s.input_tokens for s in same),
                              reference_s=max(references) if references else None,
                              cpu_s=sum(c for c in cpu if c is not None) if all(c is not None for c in cpu) else None))
    return tuple(out)


def combined_phases(per_rank: Sequence[Sequence[PhaseMeasure]], sum_energy: bool) -> tuple[PhaseMeasure, ...]:
    """Each phase: the longest rank's wall time, the largest rank's peaks; energy summed over the ranks'
    devices (GPUs), or rank 0's reading (CPU package counters are the whole machine's, which every rank reads)."""
    out = []
    for first in per_rank[0]:
        same = [m for phases in per_rank for m in phases if m.name == first.name]
        energy = [m.energy_j for m in same]
        out.append(PhaseMeasure(
            first.name, max(m.wall_s for m in same), _max([m.cpu_peak_rss_bytes for m in same]),
            _max([m.gpu_peak_allocated_bytes for m in same]), _max([m.gpu_peak_reserved_bytes for m in same]),
            (sum(e for e in energy if e is not None) if all(e is not None for e in energy) else None) if sum_energy
            else first.energy_j))
    return tuple(out)


def _max(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
