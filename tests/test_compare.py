"""``bench compare``: thresholds, the paired statistics and the three verdicts (tested on synthetic step
samples with known shifts: deterministic, no timing), work counters, refusals, baselines."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from pathlib import Path

import pytest

from bench.compare.comparison import compare, judge_interval
from bench.compare.metrics import DEFAULT_THRESHOLDS, parse_threshold, thresholds_from
from bench.compare.paired import (
    STEP_SENSITIVITY,
    Steps,
    TimeChange,
    hodges_lehmann,
    hodges_lehmann_shift,
    paired,
    steps_needed,
    with_noise_floor,
)
from bench.compare.sources import load_source, source_from_results
from bench.core.errors import UsageError
from bench.core.strategy import ParamCounts
from bench.host.cli import main
from bench.measure.meter import SpeedIndex
from bench.results.schema import (
    SCHEMA_VERSION,
    PhaseMeasure,
    Provenance,
    ResultsFile,
    RunResult,
    StepSample,
    WorkMeasure,
)
from bench.results.store import save_results

# -------------------------------------------------------------------------------------------------
# Synthetic results: step i of every run does the same work (batches of varying length), as two runs
# with the same seed and data do.
# -------------------------------------------------------------------------------------------------

LENGTHS = [20 + (i * 37) % 60 for i in range(200)]  # the batches' lengths, 20 to 79 tokens


def steps(n: int, *, factor: float = 1.0, noise: float = 0.03, seed: int = 0, load: float = 1.0,
          reference: bool = True) -> list[StepSample]:
    """``n`` timed steps whose seconds are proportional to the batch's tokens (x ``factor``), with
    multiplicative noise; ``load`` slows the speed index by ``load`` and the steps by ``load`` **
    STEP_SENSITIVITY (a busy neighbour, as calibrated: steps follow 0.9 of the index's change)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tokens = 8 * LENGTHS[i]
        secs = 1e-4 * tokens * factor * load ** STEP_SENSITIVITY * math.exp(rng.gauss(0, noise))
        ref = 2e-4 * load * math.exp(rng.gauss(0, 0.01)) if reference else None
        out.append(StepSample("timed", secs, 8, tokens, "train", tokens, ref, secs * 2))
    return out


def make_result(timed: list[StepSample], *, strategy: str = "all-layers", accuracy: float = 0.8,
                rss: int = 500 * 2**20, status: str = "passed", precision: str = "fp32",
                outcomes: str = "", work: WorkMeasure | None = None) -> RunResult:
    from bench.measure.meter import Meter

    meter = Meter()
    meter.steps = [StepSample("warmup", 1.0, 8, 80), StepSample("warmup", 1.0, 8, 80), *timed]
    meter.phases = [PhaseMeasure("setup", 1.0, rss // 2), PhaseMeasure("train", sum(s.seconds for s in timed) + 2, rss),
                    PhaseMeasure("eval", 0.5, rss // 2)]
    prov = Provenance(0, "cpu", "Test CPU", 1, precision, "3.11", "2", "4", "abc123", "p", None, None,
                      {"epochs": 3}, {"device": "cpu", "model": "m"})
    return RunResult(strategy=strategy, status=status, provenance=prov,
                     metrics={"test_accuracy": accuracy, "test_macro_f1": accuracy - 0.05},
                     params=ParamCounts(100, 10, 400, 40, 80), throughput=meter.throughput(),
                     phases=tuple(meter.phases), steps=tuple(meter.steps), wall_s=10.0,
                     outcomes={"test_accuracy": outcomes} if outcomes else {}, data_sha256="d" * 64,
                     model_sha256="m" * 64, work=work)


def source(*results: RunResult, name: str = "a"):
    return source_from_results(name, list(results))


def write(path: Path, *results: RunResult, machine: dict | None = None) -> Path:
    save_results(path, ResultsFile(SCHEMA_VERSION, "2024-01-01T00:00:00+00:00", machine or {}, tuple(results)))
    return path


def change(cmp, metric: str = "throughput", entry: str | None = None):
    return next(c for c in cmp.changes if c.metric == metric and (entry is None or c.entry == entry))


# -------------------------------------------------------------------------------------------------
# Thresholds.
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, direction, amount, unit", [
    ("throughput=-10%", -1, 10.0, "%"),
    ("throughput=10%", -1, 10.0, "%"),  # no sign: the bad direction of the metric
    ("accuracy=-1pt", -1, 1.0, "pt"),
    ("peak_memory=+5%", 1, 5.0, "%"),
    ("peak_memory=+64MiB", 1, 64 * 2**20, "abs"),
    ("step_time=+2ms", 1, 0.002, "abs"),
    ("test_loss=+0.05", 1, 0.05, "abs"),
])
def test_parse_threshold(text, direction, amount, unit):
    t = parse_threshold(text)
    assert (t.direction, t.amount, t.unit) == (direction, pytest.approx(amount), unit)


@pytest.mark.parametrize("text", ["throughput", "throughput=-10x", "=5%", "throughput=-ten%", "mystery=5%"])
def test_bad_thresholds_are_usage_errors(text):
    with pytest.raises(UsageError):
        thresholds_from([text]) if "mystery" not in text else compare(
            source(make_result(steps(20))), source(make_result(steps(20))), thresholds_from([text]))


def test_overrides_replace_defaults_and_off_drops_them():
    th = thresholds_from(["throughput=-20%", "peak_memory=off"])
    assert th["throughput"].amount == 20 and "peak_memory" not in th and "accuracy" in th
    assert set(thresholds_from()) == {t.split("=")[0] for t in DEFAULT_THRESHOLDS}


# -------------------------------------------------------------------------------------------------
# The statistics, by hand.
# -------------------------------------------------------------------------------------------------


def test_hodges_lehmann_by_hand():
    # Walsh averages of 1, 2, 3: 1, 1.5, 2, 2, 2.5, 3 -> median 2; n=3: k = floor(3 - 1.96 * sqrt(3.5)) < 0 -> 0
    assert hodges_lehmann([1.0, 2.0, 3.0]) == (2.0, 1.0, 3.0)
    est, lo, hi = hodges_lehmann([0.1] * 10)
    assert (est, lo, hi) == (pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1))
    # two samples 0, 1 and 2, 3: differences 2, 3, 1, 2 -> median 2
    assert hodges_lehmann_shift([0.0, 1.0], [2.0, 3.0])[0] == 2.0


def test_paired_estimate_recovers_a_known_shift_through_a_3x_spread_of_step_times():
    base, cur = Steps(), Steps()
    b = steps(55, seed=1)
    c = steps(55, factor=1.10, seed=2)
    base = source(make_result(b)).entries[0].steps
    cur = source(make_result(c)).entries[0].steps
    assert max(base.seconds) / min(base.seconds) > 3  # long and short batches
    result = paired(base, cur)
    assert isinstance(result, TimeChange) and result.n == 55
    assert result.estimate == pytest.approx(0.10, abs=0.015)
    assert result.low < 0.10 < result.high and result.low > 0.05
    assert result.p is not None and result.p < 1e-6 and result.method == "paired steps, load-normalised"


def test_the_speed_index_divides_a_machine_wide_slowdown_out():
    base = source(make_result(steps(55, seed=1))).entries[0].steps
    busy = source(make_result(steps(55, seed=2, load=1.4))).entries[0].steps  # same code, busier machine
    normalised = paired(base, busy)
    raw = paired(base, busy, normalise=False)
    assert isinstance(normalised, TimeChange) and isinstance(raw, TimeChange)
    assert abs(normalised.estimate) < 0.02 and raw.estimate == pytest.approx(1.4 ** STEP_SENSITIVITY - 1, abs=0.03)


def test_steps_that_did_different_work_are_not_paired():
    base = source(make_result(steps(30))).entries[0].steps
    other = dataclasses.replace(base, tokens=tuple(t + 1 for t in base.tokens))
    assert "step 1 did different work" in paired(base, other)
    assert "different numbers of steps" in paired(base, dataclasses.replace(base, seconds=base.seconds[:-1],
                                                                                  samples=base.samples[:-1],
                                                                                  tokens=base.tokens[:-1],
                                                                                  reference=base.reference[:-1],
                                                                                  cpu=base.cpu[:-1]))


@pytest.mark.parametrize("est, lo, hi, verdict", [
    (-0.20, -0.25, -0.15, "regression"),    # the whole interval past -5%
    (-0.07, -0.12, -0.02, "regression"),    # significant, estimate past -5%
    (-0.03, -0.06, -0.01, "inconclusive"),  # significant, but the interval reaches past -5%
    (-0.01, -0.03, 0.01, "ok"),             # confidently within +-5%
    (0.02, 0.01, 0.04, "ok"),               # significant, but within the threshold
    (0.10, 0.06, 0.14, "improvement"),
    (-0.04, -0.09, 0.01, "inconclusive"),   # straddles the threshold
])
def test_three_verdicts_from_an_interval(est, lo, hi, verdict):
    time = TimeChange("paired", 50, 0.0, -0.1, 0.1, 0.5)
    assert judge_interval(est, lo, hi, time, parse_threshold("throughput=-5%"))[0] == verdict


def test_steps_needed_grows_as_the_square_of_the_interval():
    wide = TimeChange("paired", 20, 0.0, -0.10, 0.10, 0.9)
    narrow = TimeChange("paired", 20, 0.0, -0.05, 0.05, 0.9)
    need_wide, need_narrow = steps_needed(wide, 0.05), steps_needed(narrow, 0.05)
    assert need_wide is not None and need_narrow is not None
    assert need_wide == pytest.approx(4 * need_narrow, rel=0.05)


# -------------------------------------------------------------------------------------------------
# Verdicts of whole comparisons.
# -------------------------------------------------------------------------------------------------


def test_identical_code_is_ok_and_a_25_percent_slowdown_is_a_regression():
    base = make_result(steps(55, seed=1))
    same = compare(source(base), source(make_result(steps(55, seed=2)), name="b"))
    assert change(same).verdict == "ok" and same.exit_code == 0
    slow = compare(source(base), source(make_result(steps(55, factor=1.25, seed=3)), name="b"))
    tp = change(slow)
    assert tp.verdict == "regression" and tp.change == pytest.approx(-20, abs=1.5) and slow.exit_code == 1
    assert tp.low is not None and tp.high is not None and tp.low < tp.change < tp.high < -15
    assert change(slow, "tokens_per_s").verdict == ""  # shown, judged through throughput only
    assert "regression" in slow.summary()


def test_a_10_percent_slowdown_with_5_percent_step_noise_is_detected():
    detected = 0
    for seed in range(20):
        base = make_result(steps(55, noise=0.05, seed=100 + seed))
        cur = make_result(steps(55, noise=0.05, factor=1.10, seed=200 + seed))
        detected += change(compare(source(base), source(cur, name="b"))).verdict == "regression"
    assert detected >= 19


def test_five_timed_steps_are_inconclusive_and_strict_makes_that_fail(tmp_path, capsys):
    a = write(tmp_path / "a.json", make_result(steps(5, seed=1)))
    b = write(tmp_path / "b.json", make_result(steps(5, factor=1.3, seed=2)))
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "inconclusive" in out and "needs at least 6 timed steps" in out
    assert main(["compare", str(a), str(b), "--strict"]) == 1
    # no interval, but the point estimate is still the data's: steps 1.3x longer, throughput about -23%
    tp = change(compare(source(make_result(steps(5, seed=1))), source(make_result(steps(5, factor=1.3, seed=2)),
                                                                          name="b")))
    assert tp.verdict == "inconclusive" and tp.low is None and tp.high is None
    assert tp.change == pytest.approx(100 * (1 / 1.3 - 1), abs=3)


def test_an_interval_across_the_threshold_says_how_many_steps_would_settle_it():
    base = make_result(steps(12, noise=0.10, seed=1))
    cur = make_result(steps(12, noise=0.10, factor=1.05, seed=7))
    tp = change(compare(source(base), source(cur, name="b")))
    assert tp.verdict == "inconclusive" and "needs about" in tp.note and "timed steps per side (has 12)" in tp.note


def test_unpairable_steps_fall_back_to_the_unpaired_test_and_say_so():
    base = make_result(steps(40, seed=1))
    cur = make_result([dataclasses.replace(s, tokens=s.tokens + 8) for s in steps(40, factor=1.3, seed=2)])
    tp = change(compare(source(base), source(cur, name="b")))
    assert tp.method.startswith("unpaired steps (per token)") and "unpaired: step 1 did different work" in tp.note
    assert tp.verdict == "regression"


def test_accuracy_is_judged_by_mcnemar_on_the_examples():
    n = 400
    good = "1" * 320 + "0" * 80
    worse = "0" * 30 + "1" * 290 + "0" * 80  # 30 examples lost, none gained: -7.5 pt
    noisy = "0" * 6 + "1" * 314 + "0" * 74 + "1" * 6  # 6 lost, 6 gained
    base = make_result(steps(20), accuracy=good.count("1") / n, outcomes=good)
    lost = make_result(steps(20), accuracy=worse.count("1") / n, outcomes=worse)
    acc = change(compare(source(base), source(lost, name="b")), "accuracy")
    assert acc.verdict == "regression" and "McNemar" in acc.note and acc.p_value < 1e-6
    same = make_result(steps(20), accuracy=noisy.count("1") / n, outcomes=noisy)
    assert change(compare(source(base), source(same, name="b")), "accuracy").verdict == "ok"
    few = "0" * 5 + "1" * 315 + "0" * 80  # 5 lost: -1.25 pt, past -1pt but p = 0.0625
    acc = change(compare(source(base), source(make_result(steps(20), accuracy=few.count("1") / n, outcomes=few),
                                               name="b")), "accuracy")
    assert acc.verdict == "inconclusive" and "not beyond noise" in acc.note


def test_cpu_memory_past_the_threshold_on_one_run_per_side_is_inconclusive():
    base = make_result(steps(20), rss=500 * 2**20)
    cur = make_result(steps(20), rss=600 * 2**20)
    mem = change(compare(source(base), source(cur, name="b")), "peak_memory")
    assert mem.verdict == "inconclusive" and "repeat the runs" in mem.note


def test_more_work_is_reported_exactly_and_fails_unless_switched_off():
    w = WorkMeasure(8, 640, 1e9, 10_000, {"mm": 10, "add": 4})
    more = WorkMeasure(8, 640, 1e9, 12_000, {"mm": 10, "add": 4, "mul": 12})
    cmp = compare(source(make_result(steps(20), work=w)), source(make_result(steps(20), work=more), name="b"))
    (wc,) = cmp.work
    assert wc.verdict == "more work" and ("mul", 0, 12) in wc.ops and cmp.exit_code == 1
    assert compare(source(make_result(steps(20), work=w)), source(make_result(steps(20), work=more), name="b"),
                   thresholds_from(["work=off"])).exit_code == 0
    other_batch = WorkMeasure(4, 320, 5e8, 5_000, {"mm": 10})
    (wc,) = compare(source(make_result(steps(20), work=w)),
                    source(make_result(steps(20), work=other_batch), name="b")).work
    assert wc.verdict == "not comparable" and "different batches" in wc.note


def test_different_precisions_are_refused_unless_allowed(tmp_path, capsys):
    a = write(tmp_path / "a.json", make_result(steps(20)))
    b = write(tmp_path / "b.json", make_result(steps(20), precision="bf16"))
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "the runs differ in precision (cpu Test CPU" not in err and "differ in precision (fp32 vs bf16)" in err
    assert "--allow-different precision" in err
    assert main(["compare", str(a), str(b), "--allow-different", "precision"]) == 0
    assert "precision differs (fp32 vs bf16), compared anyway" in capsys.readouterr().out


def test_different_machines_are_refused(tmp_path, capsys):
    m1 = {"cpu": {"model": "AMD EPYC", "flags": ["avx2"], "usable_cores": 2}}
    m2 = {"cpu": {"model": "Intel Xeon", "flags": ["avx512_bf16"], "usable_cores": 2}}
    a = write(tmp_path / "a.json", make_result(steps(20)), machine=m1)
    b = write(tmp_path / "b.json", make_result(steps(20)), machine=m2)
    assert main(["compare", str(a), str(b)]) == 2
    assert "differ in machine" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--allow-different", "machine"]) == 0


def test_different_strategies_are_refused_and_a_failed_side_is_missing(tmp_path, capsys):
    a = write(tmp_path / "a.json", make_result(steps(20), strategy="all-layers"))
    b = write(tmp_path / "b.json", make_result(steps(20), strategy="last-layers"))
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "no benchmark in common: the baseline has all-layers, the current last-layers" in err
    failed = write(tmp_path / "f.json", make_result(steps(20), status="failed"))
    assert main(["compare", str(a), str(failed)]) == 1
    assert "MISSING: all-layers: failed in the current run" in capsys.readouterr().out
    assert main(["compare", str(failed), str(a)]) == 1
    assert "failed in the baseline" in capsys.readouterr().out
    both = write(tmp_path / "both.json", make_result(steps(20)), make_result(steps(20), strategy="last-layers"))
    assert main(["compare", str(both), str(a)]) == 1
    assert "MISSING: last-layers: not in the current results" in capsys.readouterr().out


def test_an_entry_on_one_side_only_is_missing_either_way(tmp_path, capsys):
    """A benchmark the baseline lacks was compared no more than one the current run lacks: both are
    missing and fail the comparison (exit 1), never "no regression" over the rest."""
    one = write(tmp_path / "one.json", make_result(steps(20)))
    two = write(tmp_path / "two.json", make_result(steps(20)), make_result(steps(20), strategy="last-layers"))
    cmp = compare(load_source(one), load_source(two))
    assert cmp.missing == (("last-layers", "not in the baseline"),) and cmp.exit_code == 1
    assert "1 missing: last-layers" in cmp.summary() and "no regression" not in cmp.summary()
    assert main(["compare", str(one), str(two)]) == 1
    assert "MISSING: last-layers: not in the baseline" in capsys.readouterr().out


def test_repeats_pair_repeat_by_repeat():
    base = [dataclasses.replace(make_result(steps(20, seed=k)), repeat=k) for k in range(3)]
    cur = [dataclasses.replace(make_result(steps(20, seed=10 + k, factor=1.25)), repeat=k) for k in range(3)]
    cmp = compare(source(*base), source(*cur, name="b"))
    tp = change(cmp)
    assert tp.verdict == "regression"
    assert tp.method == "paired steps, load-normalised + 1.2% run-to-run noise, n=60"  # 2% / sqrt(3 repeats)


# -------------------------------------------------------------------------------------------------
# The command: inputs, formats, exit codes.
# -------------------------------------------------------------------------------------------------


def test_cli_exit_codes_and_formats(tmp_path, capsys):
    a = write(tmp_path / "a" / "results.json", make_result(steps(30, seed=1)))
    b = write(tmp_path / "b" / "results.json", make_result(steps(30, seed=2)))
    slow = write(tmp_path / "slow.json", make_result(steps(30, seed=3, factor=1.25)))
    assert main(["compare", str(a.parent), str(b)]) == 0  # a run folder or a results file
    assert "result: ok: no regression" in capsys.readouterr().out
    summary = tmp_path / "summary.md"
    assert main(["compare", str(a), str(slow), "--format", "markdown", "--output", str(summary)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("## finetune-bench comparison: :x:") and "**regression**" in out
    assert summary.read_text() == out
    assert main(["compare", str(a), str(slow), "--fail-on", "throughput=-30%"]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(slow), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    tp = next(c for c in data["changes"] if c["metric"] == "throughput")
    assert data["ok"] is False and tp["verdict"] == "regression" and tp["low"] < tp["change"] < tp["high"]


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such file or folder"),
    (lambda p: p.write_text("{not json"), "not valid JSON"),
    (lambda p: p.write_text('{"hello": 1}'), "neither a finetune-bench results file"),
    (lambda p: p.mkdir(), "a folder without results.json"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff"), "not a text file"),
    (lambda p: p.write_text('{"benchmarks": [{"stats": {"median": "fast"}}]}'), "not a pytest-benchmark JSON file"),
    (lambda p: p.write_text('{"benchmarks": [{"stats": {}, "extra_info": {"steps": {"seconds": ["x"]}}}]}'),
     "not a pytest-benchmark JSON file"),
    (lambda p: p.write_text('{"schema_version": "2.0", "results": []}'), "schema_version"),
])
def test_cli_input_errors_exit_2(tmp_path, capsys, setup, message):
    good = write(tmp_path / "good.json", make_result(steps(20)))
    bad = tmp_path / "bad.json"
    setup(bad)
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error:") and message in err


def test_list_metrics(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--list-metrics"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("throughput", "tokens_per_s", "step_time", "work", "accuracy", "peak_memory", "Threshold syntax"):
        assert name in out


# -------------------------------------------------------------------------------------------------
# pytest-benchmark files: the plugin's pair like results files; other tools' are compared unpaired.
# -------------------------------------------------------------------------------------------------


def pytest_json(path: Path, result: RunResult) -> Path:
    from bench.pytest_plugin import comparable_info

    timed = [s.seconds for s in result.steps if s.kind == "timed"]
    stats = {"min": min(timed), "max": max(timed), "mean": sum(timed) / len(timed),
             "median": sorted(timed)[len(timed) // 2], "rounds": len(timed), "iqr": 0.0, "stddev": 0.0,
             "ops": 1.0}
    extra = {"strategy": result.strategy, "primary_metric": "test_accuracy", "metrics": dict(result.metrics),
             **comparable_info(result, path)}
    bench = {"name": "test_x[all-layers]", "fullname": "t.py::test_x[all-layers]", "stats": stats,
             "extra_info": extra}
    path.write_text(json.dumps({"machine_info": {}, "commit_info": {"id": "abc", "dirty": False},
                                "benchmarks": [bench], "datetime": "2024-01-01", "version": "5.1.0"}))
    return path


def test_the_pytest_path_gives_the_same_verdicts_as_results_files(tmp_path):
    cases = [(make_result(steps(55, seed=1)), make_result(steps(55, seed=2))),
             (make_result(steps(55, seed=1)), make_result(steps(55, seed=3, factor=1.10))),
             (make_result(steps(5, seed=1)), make_result(steps(5, seed=3, factor=1.10)))]
    for i, (b, c) in enumerate(cases):
        by_results = change(compare(source(b), source(c, name="b")))
        by_pytest = change(compare(load_source(pytest_json(tmp_path / f"b{i}.json", b)),
                                   load_source(pytest_json(tmp_path / f"c{i}.json", c))))
        assert (by_pytest.verdict, by_pytest.method) == (by_results.verdict, by_results.method)
        assert by_pytest.change == pytest.approx(by_results.change)
    assert [change(compare(source(b), source(c, name="b"))).verdict for b, c in cases] == [
        "ok", "regression", "inconclusive"]


def test_other_tools_pytest_benchmark_files_are_compared_unpaired(tmp_path):
    def other(path: Path, factor: float, seed: int) -> Path:
        rng = random.Random(seed)
        data = [0.01 * factor * math.exp(rng.gauss(0, 0.03)) for _ in range(40)]
        stats = {"median": sorted(data)[20], "data": data}
        path.write_text(json.dumps({"benchmarks": [{"name": "test_y", "fullname": "t.py::test_y", "stats": stats}]}))
        return path

    tp = change(compare(load_source(other(tmp_path / "a.json", 1.0, 1)), load_source(other(tmp_path / "b.json",
                                                                                            1.25, 2))))
    assert tp.verdict == "regression" and tp.method.startswith("unpaired")


# -------------------------------------------------------------------------------------------------
# Baselines through bench run (the toy strategies of conftest: fast, no model).
# -------------------------------------------------------------------------------------------------


def toy_run(toy_dir: Path, out: Path, *args: str) -> int:
    return main(["run", "--plugins-dir", str(toy_dir), "--out", str(out), "-s", "toy-a", "--no-isolate",
                 "-p", "no:profiler", "-o", "toy-a.steps=12", *args])


def test_save_baseline_then_compare_to_it(toy_dir, tmp_path, capsys):
    assert toy_run(toy_dir, tmp_path / "r1", "--save-baseline", "main") == 0
    saved = Path(".bench/baselines/main.json")  # the default folder, relative to the working directory
    assert saved.is_file()
    assert "baseline 'main' saved" in capsys.readouterr().out
    # same code; the toy's microsecond steps are noise-dominated, so judge only what is deterministic here
    assert toy_run(toy_dir, tmp_path / "r2", "--compare-to", "main", "--fail-on", "throughput=off") == 0
    out = capsys.readouterr().out
    assert "Comparison with baseline main" in out and "no regression" in out
    code = toy_run(toy_dir, tmp_path / "r3", "--compare-to", "main", "--fail-on", "throughput=off",
                   "--fail-on", "accuracy=-1pt", "-o", "toy-a.accuracy=0.4", "--save-baseline", "main")
    # the toy keeps no per-example outcomes: one run per side cannot tell a 10-point drop from noise
    assert code == 0
    captured = capsys.readouterr()
    assert "inconclusive" in captured.out and "repeat the runs" in captured.out
    assert main(["compare", "main", str(tmp_path / "r2"), "--fail-on", "throughput=off"]) == 0


def test_baseline_dir_option_and_env(toy_dir, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "cache" / "baselines"
    monkeypatch.setenv("BENCH_BASELINE_DIR", str(folder))
    assert toy_run(toy_dir, tmp_path / "r1", "--save-baseline", "pr-1") == 0
    assert (folder / "pr-1.json").is_file()
    other = tmp_path / "committed"
    assert toy_run(toy_dir, tmp_path / "r2", "--save-baseline", "v1", "--baseline-dir", str(other)) == 0
    assert (other / "v1.json").is_file()
    md = tmp_path / "summary.md"
    assert toy_run(toy_dir, tmp_path / "r3", "--compare-to", "pr-1", "--fail-on", "throughput=off",
                   "--compare-markdown", str(md)) == 0
    assert md.read_text().startswith("## finetune-bench comparison: :white_check_mark:")


@pytest.mark.parametrize("args, message", [
    (("--compare-to", "nope"), "no baseline 'nope'"),
    (("--save-baseline", "../evil"), "baseline name '../evil'"),
    (("--fail-on", "throughput"), "--fail-on 'throughput'"),
])
def test_baseline_usage_errors_exit_2_before_running(toy_dir, tmp_path, capsys, args, message):
    assert toy_run(toy_dir, tmp_path / "r", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "results.json").exists()  # nothing ran


# -------------------------------------------------------------------------------------------------
# Work counters on real runs: one extra elementwise operation per layer norm, one run per side.
# -------------------------------------------------------------------------------------------------


def test_an_extra_operation_per_layer_is_reported_as_more_work(tiny_bert, sentiment_csv, tmp_path, capsys):
    extra = Path(__file__).resolve().parent / "plugins_work"
    common = ["-s", "all-layers", "--model", str(tiny_bert), "--dataset", str(sentiment_csv), "--epochs", "1",
              "--batch-size", "8", "--train-samples", "0", "--no-isolate", "-p", "no:profiler", "-q"]
    assert main(["run", *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["--plugins-dir", str(extra), "run", *common, "--out", str(tmp_path / "b")]) == 0
    assert main(["run", *common, "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on", "throughput=off"]) == 1
    out = capsys.readouterr().out
    assert "more work" in out  # from one run per side
    calls = re.search(r"mul (\d+)->(\d+)", out)  # the operator is named with its call counts
    assert calls is not None and int(calls.group(2)) > int(calls.group(1)), out
    cmp = compare(load_source(tmp_path / "a"), load_source(tmp_path / "c"), thresholds_from(["throughput=off"]))
    assert [w.verdict for w in cmp.work] == ["same work"]


def test_cpu_runs_whose_processes_got_very_different_cpu_shares_are_inconclusive():
    """A CPU run whose process got a quarter of the CPU the other got (a neighbour's load came and went
    between them) gives no time verdict, whatever the interval says; a modest difference still does."""
    base = make_result(steps(55, seed=1))  # 2 CPU-seconds per second
    starved = [dataclasses.replace(s, cpu_s=s.seconds * 0.5) for s in steps(55, factor=1.25, seed=3)]
    tp = change(compare(source(base), source(make_result(starved), name="b")))
    assert tp.verdict == "inconclusive" and "load differed between the runs" in tp.note
    assert "2.00 and 0.50 CPU-seconds per second" in tp.note
    busy = [dataclasses.replace(s, cpu_s=s.seconds * 1.6) for s in steps(55, factor=1.25, seed=3)]
    assert change(compare(source(base), source(make_result(busy), name="b"))).verdict == "regression"


def test_a_time_estimate_that_underflows_to_minus_100_percent_gives_no_figure_and_no_crash():
    """One step 1e14 s long against one of 0.01 s: the log ratio's expm1 is exactly -1.0 (found by hypothesis)."""
    base = make_result([dataclasses.replace(steps(1)[0], seconds=1.9e14, cpu_s=None)])
    cur = make_result([dataclasses.replace(steps(1)[0], seconds=0.01, cpu_s=None)])
    tp = change(compare(source(base), source(cur, name="b")))
    assert tp.verdict == "inconclusive" and tp.change is None and tp.low is None and tp.high is None


def test_runs_on_a_machine_that_ran_at_different_speeds_get_no_time_verdict():
    # Calibration on a quiet 2-core EPYC: two processes of identical code ran 75 to 130 ms a step and their
    # reference products 96 to 200 us, with tight paired intervals inside each run; dividing that out left
    # false alarms. A 1.4x shift of the speed index is beyond what one run per side can separate.
    base = source(make_result(steps(55, seed=1)))
    shifted = compare(base, source(make_result(steps(55, seed=2, factor=0.80, load=1.4))))  # faster code, busier machine
    c = change(shifted)
    assert c.verdict == "inconclusive" and "ran at different speeds" in c.note and "rerun both sides" in c.note
    steady = compare(base, source(make_result(steps(55, seed=2, factor=1.25, load=1.05))))  # a small shift is divided out
    assert change(steady).verdict == "regression"


def test_the_speed_index_workload_of_the_runs_decides_the_guard():
    """The transformer-block index divides a 1.4x shift of the machine's speed out (calibrated), the old
    single product did not; past 2x no verdict either way."""
    kind = SpeedIndex.name
    base = source(dataclasses.replace(make_result(steps(55, seed=1)), speed_index=kind))
    shifted = source(dataclasses.replace(make_result(steps(55, seed=2, factor=1.25, load=1.4)), speed_index=kind))
    assert change(compare(base, shifted)).verdict == "regression"
    far = source(dataclasses.replace(make_result(steps(55, seed=2, factor=1.25, load=2.2)), speed_index=kind))
    c = change(compare(base, far))
    assert c.verdict == "inconclusive" and "more than 2.0x apart" in c.note


def test_the_more_speed_shift_was_divided_out_the_wider_the_interval():
    """Calibration: steps follow STEP_SENSITIVITY (0.9) of the speed index's change, which the pairing divides
    out; what an error in that sensitivity could leave grows with the shift (SHIFT_NOISE)."""
    kind = SpeedIndex.name
    base = source(dataclasses.replace(make_result(steps(55, seed=1)), speed_index=kind))

    def measured(load, factor=1.10):
        cur = source(dataclasses.replace(make_result(steps(55, seed=2, factor=factor, load=load)), speed_index=kind))
        return change(compare(base, cur))

    steady, shifted, far = measured(1.0), measured(1.5), measured(1.8)
    assert steady.high - steady.low < shifted.high - shifted.low < far.high - far.low
    assert (shifted.high - shifted.low) - (steady.high - steady.low) > 1  # percentage points
    # the machine's shift is divided out: the same 10% slowdown reads the same behind any of them
    assert shifted.change == pytest.approx(steady.change, abs=0.5) and far.change == pytest.approx(steady.change, abs=0.5)
    assert steady.verdict == shifted.verdict == far.verdict == "regression"
    assert measured(1.8, factor=1.05).verdict == "inconclusive"  # 5% behind a 1.8x shift: too close to call
    time = paired(base.entries[0].steps, source(dataclasses.replace(
        make_result(steps(55, seed=2, load=1.5)), speed_index=kind)).entries[0].steps)
    assert isinstance(time, TimeChange) and time.speed_shift == pytest.approx(1.5, rel=0.02)
    assert abs(time.estimate) < 0.01  # identical code on a 1.5x slower machine


def test_dividing_the_whole_index_change_out_would_overcorrect(monkeypatch):
    """Steps that slow 0.9x as much as the index (the calibrated machine): dividing by the full index ratio
    reads identical code on a 1.5x slower machine as 4% faster; the calibrated sensitivity reads it as equal."""
    import bench.compare.paired as paired_module

    kind = SpeedIndex.name
    base = source(dataclasses.replace(make_result(steps(55, seed=1)), speed_index=kind)).entries[0].steps
    busy = source(dataclasses.replace(make_result(steps(55, seed=2, load=1.5)), speed_index=kind)).entries[0].steps
    calibrated = paired(base, busy)
    monkeypatch.setattr(paired_module, "STEP_SENSITIVITY", 1.0)
    full = paired(base, busy)
    assert isinstance(calibrated, TimeChange) and isinstance(full, TimeChange)
    assert abs(calibrated.estimate) < 0.01
    assert full.estimate == pytest.approx(1.5 ** (STEP_SENSITIVITY - 1) - 1, abs=0.01)  # about -4%


def test_runs_that_timed_different_speed_index_workloads_are_not_load_normalised():
    old = make_result(steps(55, seed=1))  # a file from before the block index: speed_index ""
    new = dataclasses.replace(make_result(steps(55, seed=2, load=1.3)), speed_index=SpeedIndex.name)
    time = paired(source(old).entries[0].steps, source(new).entries[0].steps)
    assert isinstance(time, TimeChange) and time.method == "paired steps"
    assert "different speed-index workloads" in time.note and "matmul-192 vs block-" in time.note
    assert time.estimate == pytest.approx(1.3 ** STEP_SENSITIVITY - 1, abs=0.03)  # the shift stays in: nothing divided it out


def test_the_noise_floor_widens_the_interval_and_the_p_value():
    """Steps of one run share the machine's state; the floor adds the run-to-run spread to the interval."""
    base = source(make_result(steps(55, seed=1))).entries[0].steps
    cur = source(make_result(steps(55, seed=2, factor=1.03))).entries[0].steps
    time = paired(base, cur)
    assert isinstance(time, TimeChange) and time.low > 0  # 3% slower, "significant" on the steps alone
    wide = with_noise_floor(time, 0.02)
    assert wide.estimate == time.estimate and wide.n == time.n
    half = (math.log1p(wide.high) - math.log1p(wide.low)) / 2
    steps_half = (math.log1p(time.high) - math.log1p(time.low)) / 2
    assert half == pytest.approx(math.hypot(steps_half, 1.959963984540054 * 0.02), rel=0.02)
    assert wide.low < 0 < wide.high and wide.p is not None and wide.p > 0.05  # no longer beyond noise
    assert "2% run-to-run noise" in wide.method
    four_runs = with_noise_floor(time, 0.02, runs=4)  # 4 repeats per side: the floor halves
    assert "1% run-to-run noise" in four_runs.method and four_runs.high - four_runs.low < wide.high - wide.low
    assert with_noise_floor(time, 0.0) == time


def test_noise_floor_option(tmp_path, capsys):
    a = write(tmp_path / "a.json", make_result(steps(55, seed=1)))
    b = write(tmp_path / "b.json", make_result(steps(55, seed=2, factor=1.03)))
    assert main(["compare", str(a), str(b), "--noise-floor", "0", "--format", "json"]) == 0
    tight = json.loads(capsys.readouterr().out)
    assert main(["compare", str(a), str(b), "--format", "json"]) == 0
    floored = json.loads(capsys.readouterr().out)

    def tp(report):
        return next(c for c in report["changes"] if c["metric"] == "throughput")

    assert tp(floored)["high"] - tp(floored)["low"] > tp(tight)["high"] - tp(tight)["low"] + 5
    assert main(["compare", str(a), str(b), "--noise-floor", "150"]) == 2
    assert "--noise-floor 150" in capsys.readouterr().err


def test_a_noise_floor_for_one_benchmark(tmp_path, capsys):
    """all-layers spread more than last-layers in calibration: ``--noise-floor all-layers=3.5`` widens its
    interval alone; names that are not in both runs, and values that are not percentages, exit 2."""
    a = write(tmp_path / "a.json", make_result(steps(55, seed=1)), make_result(steps(55, seed=3), strategy="last-layers"))
    b = write(tmp_path / "b.json", make_result(steps(55, seed=2, factor=1.03)),
              make_result(steps(55, seed=4, factor=1.03), strategy="last-layers"))

    def widths(*floors):
        args = [x for f in floors for x in ("--noise-floor", f)]
        assert main(["compare", str(a), str(b), *args, "--format", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        return {c["benchmark"]: c["high"] - c["low"] for c in report["changes"] if c["metric"] == "throughput"}

    default = widths()
    one = widths("all-layers=3.5")
    both = widths("0", "all-layers=3.5")
    assert one["all-layers"] > default["all-layers"] + 2 and one["last-layers"] == pytest.approx(default["last-layers"])
    assert both["all-layers"] == pytest.approx(one["all-layers"]) and both["last-layers"] < default["last-layers"] - 2
    assert main(["compare", str(a), str(b), "--noise-floor", "lora=3"]) == 2
    assert "--noise-floor lora=...: no such benchmark" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--noise-floor", "all-layers=big"]) == 2
    assert "not a percentage" in capsys.readouterr().err


def test_the_noise_floor_a_strategy_declared_is_its_default(tmp_path, capsys):
    """A strategy that declares ``run_to_run_noise_pct`` (all-layers: its calibration spread more than
    last-layers') gets that floor by default, said in a note; the larger of the two runs' applies; any
    ``--noise-floor`` given on the command line wins."""
    def declared(result, pct):
        return dataclasses.replace(result, run_to_run_noise_pct=pct)

    a = write(tmp_path / "a.json", declared(make_result(steps(55, seed=1)), 3.5),
              make_result(steps(55, seed=3), strategy="last-layers"))
    b = write(tmp_path / "b.json", declared(make_result(steps(55, seed=2, factor=1.03)), 3.5),
              make_result(steps(55, seed=4, factor=1.03), strategy="last-layers"))
    newer = write(tmp_path / "c.json", declared(make_result(steps(55, seed=2, factor=1.03)), 5.0),
                  make_result(steps(55, seed=4, factor=1.03), strategy="last-layers"))

    def report(current, *floors):
        args = [x for f in floors for x in ("--noise-floor", f)]
        assert main(["compare", str(a), str(current), *args, "--format", "json"]) == 0
        out = json.loads(capsys.readouterr().out)
        return {c["benchmark"]: c for c in out["changes"] if c["metric"] == "throughput"}, out["notes"]

    default, notes = report(b)
    named, _ = report(b, "all-layers=3.5")
    assert default["all-layers"]["method"] == named["all-layers"]["method"]
    assert default["all-layers"]["low"] == pytest.approx(named["all-layers"]["low"])
    assert "3.5% run-to-run noise" in default["all-layers"]["method"]
    assert "2% run-to-run noise" in default["last-layers"]["method"]  # declared nothing: the default
    assert any("all-layers: noise floor 3.5%, the run-to-run noise its strategy declared" in n for n in notes)
    assert not any(n.startswith("last-layers: noise floor") for n in notes)
    larger, _ = report(newer)
    assert "5% run-to-run noise" in larger["all-layers"]["method"]
    for given in (["2"], ["all-layers=2"]):
        overridden, notes = report(b, *given)
        assert "2% run-to-run noise" in overridden["all-layers"]["method"]
        assert not any("its strategy declared" in n for n in notes)


def test_a_run_whose_threads_got_much_less_cpu_than_they_asked_for_gets_no_time_verdict():
    """Under a neighbour's load (a test suite on the same 2 cores) a 2-thread run got about 1 CPU-second per
    second, and identical code came out 22% apart after normalisation: no time verdict from such a run."""

    def run(factor, share, seed):
        r = make_result([dataclasses.replace(s, cpu_s=s.seconds * share) for s in steps(55, factor=factor, seed=seed)])
        return dataclasses.replace(r, provenance=dataclasses.replace(
            r.provenance, settings={**r.provenance.settings, "peak_threads": 2}))

    base = source(run(1.0, 1.95, 1))
    starved = change(compare(base, source(run(1.25, 1.0, 2), name="b")))
    assert starved.verdict == "inconclusive"
    assert "current run's process got 1.00 CPU-seconds per second for its 2 threads (50%)" in starved.note
    assert change(compare(base, source(run(1.25, 1.9, 2), name="b"))).verdict == "regression"
    assert source(run(1.0, 1.9, 1)).entries[0].identity["threads"] == "2"
