"""Every published throughput and utilisation formula, on hand-made steps with values worked out by hand
(no timing): samples/s and tokens/s (real and input) over the timed steps, samples/s over the whole phase,
and MFU. The speed ratio and its aggregation over repeats are tested in plugins/bench-baselines/tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.host.worker import _mfu
from bench.measure.meter import Meter, phase_rate, timed_rate
from bench.measure.peak import Peak, achieved_flops, judge_mfu
from bench.results.schema import PhaseMeasure, StepSample
from bench.training.sft import input_tokens_per_s

# kind, seconds, samples, real tokens, phase, input tokens
STEPS = [
    StepSample("warmup", 1.0, 8, 100, "train", 160),
    StepSample("profiled", 0.5, 8, 100, "train", 160),
    StepSample("timed", 0.2, 8, 100, "train", 150),
    StepSample("timed", 0.3, 4, 60, "train", 90),
    StepSample("timed", 0.5, 8, 140, "train", 200),
]
# timed: 1.0 s in all; 20 samples, 300 real tokens, 440 input tokens. Every step: 36 samples.
# (The mean of the per-step rates, 40, 13.3 and 16 samples/s, would be 23.1: not what is published.)


def test_samples_per_s_is_timed_samples_over_timed_seconds():
    assert timed_rate(STEPS) == pytest.approx(20 / 1.0)
    assert timed_rate(STEPS[:2]) is None  # no timed step: no figure, not a division by zero


def test_real_and_input_tokens_per_s_over_the_timed_steps():
    assert timed_rate(STEPS, "tokens") == pytest.approx(300.0)
    assert timed_rate(STEPS, "input_tokens") == pytest.approx(440.0)
    assert input_tokens_per_s(STEPS) == pytest.approx(440.0)  # sft's published "input tokens/s"
    assert input_tokens_per_s(STEPS, phase="eval") is None


def test_phase_samples_per_s_counts_every_step_over_the_phase_wall_time():
    assert phase_rate(STEPS, 4.0) == pytest.approx(36 / 4.0)
    assert phase_rate(STEPS, 0.0) is None


def test_the_meter_publishes_those_formulas():
    meter = Meter()
    meter.steps = [*STEPS, StepSample("timed", 9.0, 99, 999, "eval", 999)]  # another phase's step: not counted
    meter.phases = [PhaseMeasure("train", 4.0, None), PhaseMeasure("eval", 10.0, None)]
    tp = meter.throughput()["train"]
    assert tp.samples_per_s == pytest.approx(20.0)
    assert tp.real_tokens_per_s == pytest.approx(300.0)
    assert tp.phase_samples_per_s == pytest.approx(9.0)
    assert (tp.timed_steps, tp.warmup_steps, tp.profiled_steps) == (3, 1, 1)
    assert tp.step is not None and tp.step.median_s == pytest.approx(0.3)


def test_mfu_is_flops_per_token_times_input_tokens_per_s_over_the_peak():
    # 2e6 FLOPs per token x 440 input tokens / 1.0 s = 8.8e8 FLOP/s; peak 2e9 FLOP/s: 44%
    assert achieved_flops(2e6, 440, 1.0) == pytest.approx(8.8e8)
    peak = Peak(2e9, "measured: test", "cpu", "fp32")
    assert judge_mfu(8.8e8, peak) == (pytest.approx(0.44), "")
    mfu, note = judge_mfu(4e9, peak)  # 200%: the peak is wrong, no MFU is published
    assert mfu is None and "remeasure" in note


def test_a_run_reports_that_mfu_from_its_own_timed_steps():
    meter = Meter()
    meter.steps = list(STEPS)
    meter.flops_per_token = {"train": 2e6}
    config = SimpleNamespace(peak_flops=2e9, peak_source="measured: test", device="cpu", precision="fp32")
    got = _mfu(meter, config)  # type: ignore[arg-type]
    assert got["mfu"] == pytest.approx(0.44) and got["flops_per_token"] == 2e6
    assert got["peak_flops"] == 2e9 and got["peak_flops_source"] == "measured: test"
