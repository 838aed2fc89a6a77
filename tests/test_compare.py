"""``bench compare``, thresholds, the Mann-Whitney noise guard, baselines, and the measured behaviour:
two runs of the same code do not flag; a run whose steps are 25% slower does."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.compare.comparison import compare
from bench.compare.metrics import DEFAULT_THRESHOLDS, parse_threshold, thresholds_from
from bench.compare.sources import load_source, source_from_results
from bench.compare.statistics import mann_whitney_p
from bench.core.errors import UsageError
from bench.core.strategy import ParamCounts
from bench.host.cli import main
from bench.results.schema import (
    SCHEMA_VERSION,
    PhaseMeasure,
    Provenance,
    ResultsFile,
    RunResult,
    StepSample,
)
from bench.results.store import save_results

# -------------------------------------------------------------------------------------------------
# Synthetic results.
# -------------------------------------------------------------------------------------------------


def make_result(step_s: list[float], *, strategy: str = "all-layers", accuracy: float = 0.8,
                rss: int = 500 * 2**20, status: str = "passed", warmup: int = 2) -> RunResult:
    steps = [StepSample("warmup", 1.0, 8, 80) for _ in range(warmup)]
    steps += [StepSample("timed", s, 8, 80) for s in step_s]
    from bench.measure.meter import Meter

    meter = Meter()
    meter.steps = steps
    meter.phases = [PhaseMeasure("setup", 1.0, rss // 2), PhaseMeasure("train", sum(step_s) + 2.0, rss),
                    PhaseMeasure("eval", 0.5, rss // 2)]
    prov = Provenance(0, "cpu", "Test CPU", 1, "fp32", "3.11", "2", "4", "abc123", "p", None, None,
                      {"epochs": 3}, {"device": "cpu", "model": "m"})
    return RunResult(strategy=strategy, status=status, provenance=prov,
                     metrics={"test_accuracy": accuracy, "test_macro_f1": accuracy - 0.05},
                     params=ParamCounts(100, 10, 400, 40, 80), throughput=meter.throughput(),
                     phases=tuple(meter.phases), steps=tuple(steps), wall_s=10.0)


def noisy(median: float, n: int = 40, spread: float = 0.05, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [median * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def write(path: Path, *results: RunResult) -> Path:
    save_results(path, ResultsFile(SCHEMA_VERSION, "2024-01-01T00:00:00+00:00", {}, tuple(results)))
    return path


def verdicts(cmp, metric: str) -> list[str]:
    return [c.verdict for c in cmp.changes if c.metric == metric]


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
    assert (t.direction, t.unit) == (direction, unit)
    assert t.amount == pytest.approx(amount)


@pytest.mark.parametrize("text", ["throughput", "throughput=-10x", "=5%", "throughput=-ten%", "mystery=5%"])
def test_bad_thresholds_are_usage_errors(text):
    with pytest.raises(UsageError, match="--fail-on"):
        parse_threshold(text)


def test_overrides_replace_defaults_and_off_drops_them():
    th = thresholds_from(["throughput=-20%", "peak_memory=off"])
    assert th["throughput"].text == "-20%"
    assert "peak_memory" not in th and "accuracy" in th
    assert set(thresholds_from()) == {t.split("=")[0] for t in DEFAULT_THRESHOLDS}


# -------------------------------------------------------------------------------------------------
# The comparison.
# -------------------------------------------------------------------------------------------------


def test_same_distribution_is_ok_and_every_metric_is_listed():
    cmp = compare(source_from_results("a", [make_result(noisy(0.01, seed=1))]),
                  source_from_results("b", [make_result(noisy(0.01, seed=2))]))
    assert cmp.ok and cmp.exit_code == 0
    metrics = {c.metric for c in cmp.changes}
    assert {"throughput", "tokens_per_s", "step_time", "accuracy", "peak_memory", "cpu_peak_rss", "trainable_params",
            "total_params", "test_macro_f1", "train_time", "wall_time"} <= metrics
    assert verdicts(cmp, "throughput") == ["ok"]
    assert verdicts(cmp, "tokens_per_s") == [""]  # no default threshold: shown, not judged


def test_slowdown_past_threshold_and_significant_is_a_regression():
    cmp = compare(source_from_results("a", [make_result(noisy(0.010, seed=1))]),
                  source_from_results("b", [make_result(noisy(0.0125, seed=2))]))
    (tp,) = [c for c in cmp.changes if c.metric == "throughput"]
    assert tp.verdict == "REGRESSION" and tp.change == pytest.approx(-20, abs=2)
    assert tp.p_value is not None and tp.p_value < 1e-6
    assert cmp.exit_code == 1 and "throughput" in cmp.summary()


def test_change_within_the_noise_is_not_significant():
    """Bimodal steps (a run contended half the time): one step more on the slow side moves the median
    from 10 ms to 20 ms, but the samples are nearly the same; Mann-Whitney cannot tell them apart."""
    base = [0.010] * 8 + [0.020] * 7
    cur = [0.010] * 7 + [0.020] * 8
    cmp = compare(source_from_results("a", [make_result(base)]), source_from_results("b", [make_result(cur)]))
    (tp,) = [c for c in cmp.changes if c.metric == "throughput"]
    assert tp.change == pytest.approx(-50)
    assert tp.p_value > 0.5 and tp.verdict == "not significant" and cmp.ok


def test_too_few_samples_fall_back_to_the_threshold():
    assert mann_whitney_p([1.0, 1.1], [2.0, 2.1]) is None  # min two-sided p = 1/3: can never reach alpha
    cmp = compare(source_from_results("a", [make_result([0.010, 0.011])]),
                  source_from_results("b", [make_result([0.020, 0.021])]))
    (tp,) = [c for c in cmp.changes if c.metric == "throughput"]
    assert tp.verdict == "REGRESSION" and "threshold only" in tp.note


def test_improvement_is_reported_not_failed():
    cmp = compare(source_from_results("a", [make_result(noisy(0.02, seed=1))]),
                  source_from_results("b", [make_result(noisy(0.01, seed=2))]))
    assert verdicts(cmp, "throughput") == ["improvement"] and cmp.ok


def test_accuracy_in_points_and_memory_in_percent():
    base = make_result(noisy(0.01, seed=1), accuracy=0.80, rss=500 * 2**20)
    cur = make_result(noisy(0.01, seed=1), accuracy=0.785, rss=560 * 2**20)
    cmp = compare(source_from_results("a", [base]), source_from_results("b", [cur]))
    (acc,) = [c for c in cmp.changes if c.metric == "accuracy"]
    assert acc.change == pytest.approx(-1.5) and acc.change_unit == "pt" and acc.verdict == "REGRESSION"
    assert verdicts(cmp, "peak_memory") == ["REGRESSION"]
    relaxed = thresholds_from(["accuracy=-2pt", "peak_memory=+15%"])
    assert compare(source_from_results("a", [base]), source_from_results("b", [cur]), relaxed).ok


def test_repeated_runs_of_a_strategy_are_pooled():
    base = [make_result(noisy(0.010, n=10, seed=k), accuracy=0.8 + k / 100) for k in range(3)]
    cur = [make_result(noisy(0.0125, n=10, seed=10 + k)) for k in range(3)]
    a, b = source_from_results("a", base), source_from_results("b", cur)
    (entry,) = a.entries
    assert entry.runs == 3 and len(entry.step_seconds) == 30
    assert entry.values["accuracy"] == pytest.approx(0.81)
    cmp = compare(a, b)
    assert verdicts(cmp, "throughput") == ["REGRESSION"]
    assert any("pooled 3 baseline run(s) (30 timed steps)" in n for n in cmp.notes)
    failed = source_from_results("c", [*cur[:2], make_result([0.01] * 10, status="failed")])
    assert not failed.entries[0].passed and "1 of 3 runs failed" in failed.entries[0].error


def test_failed_or_unmatched_entries_are_missing_and_fail_the_comparison():
    base = [make_result(noisy(0.01), strategy="a"), make_result(noisy(0.01), strategy="b")]
    cur = [make_result(noisy(0.01), strategy="a", status="failed"), make_result(noisy(0.01), strategy="c")]
    cmp = compare(source_from_results("x", base), source_from_results("y", cur))
    assert [e for e, _ in cmp.missing] == ["a", "b", "c"] and cmp.exit_code == 1
    why = dict(cmp.missing)
    assert why["a"].startswith("failed in the current run") and why["b"] == "not in the current run"
    assert why["c"] == "not in the baseline"
    assert "3 missing" in cmp.summary() and "no regression" not in cmp.summary()


def test_unknown_metric_in_fail_on_suggests_a_name():
    with pytest.raises(UsageError, match="did you mean 'throughput'"):
        compare(source_from_results("a", [make_result(noisy(0.01))]),
                source_from_results("b", [make_result(noisy(0.01))]), thresholds_from(["througput=-5%"]))


# -------------------------------------------------------------------------------------------------
# The command: inputs, formats, exit codes.
# -------------------------------------------------------------------------------------------------


def test_cli_exit_codes_and_markdown(tmp_path, capsys):
    a = write(tmp_path / "a" / "results.json", make_result(noisy(0.01, seed=1)))
    b = write(tmp_path / "b" / "results.json", make_result(noisy(0.01, seed=2)))
    slow = write(tmp_path / "slow.json", make_result(noisy(0.0125, seed=3)))
    assert main(["compare", str(a.parent), str(b)]) == 0  # a run folder or a results file
    assert "no regression" in capsys.readouterr().out
    summary = tmp_path / "summary.md"
    assert main(["compare", str(a), str(slow), "--format", "markdown", "--output", str(summary)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("## finetune-bench comparison: :x:")
    assert "| benchmark" in out and "**regression**" in out
    assert summary.read_text() == out
    assert main(["compare", str(a), str(slow), "--fail-on", "throughput=-30%"]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(slow), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and any(c["verdict"] == "REGRESSION" for c in data["changes"])


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such file or folder"),
    (lambda p: p.write_text("{not json"), "not valid JSON"),
    (lambda p: p.write_text('{"hello": 1}'), "neither a finetune-bench results file"),
    (lambda p: p.mkdir(), "a folder without results.json"),
])
def test_cli_input_errors_exit_2(tmp_path, capsys, setup, message):
    good = write(tmp_path / "good.json", make_result(noisy(0.01)))
    bad = tmp_path / "bad.json"
    setup(bad)
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error:") and message in err


def test_cli_bad_threshold_exits_2(tmp_path, capsys):
    a = write(tmp_path / "a.json", make_result(noisy(0.01)))
    assert main(["compare", str(a), str(a), "--fail-on", "throughput=fast"]) == 2
    assert "--fail-on 'throughput=fast'" in capsys.readouterr().err


def test_list_metrics(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--list-metrics"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("throughput", "tokens_per_s", "step_time", "accuracy", "peak_memory", "Threshold syntax"):
        assert name in out


def pytest_benchmark_json(path: Path, median_s: float, n: int = 30, seed: int = 0, with_data: bool = True) -> Path:
    data = noisy(median_s, n, seed=seed)
    stats = {"min": min(data), "max": max(data), "mean": sum(data) / n, "median": sorted(data)[n // 2],
             "rounds": n, "iqr": 0.0, "stddev": 0.0, "ops": n / sum(data)}
    if with_data:
        stats["data"] = data
    bench = {"name": "test_x[all-layers]", "fullname": "t.py::test_x[all-layers]", "group": None, "params": None,
             "param": "all-layers", "options": {}, "stats": stats,
             "extra_info": {"strategy": "all-layers", "samples_per_step": 8, "tokens_per_step": 80.0,
                            "primary_metric": "test_accuracy", "metrics": {"test_accuracy": 0.8},
                            "accuracy": 0.8, "peak_memory_bytes": 5e8, "params_total": 100, "params_trainable": 10}}
    path.write_text(json.dumps({"machine_info": {}, "commit_info": {"id": "abc", "dirty": False},
                                "benchmarks": [bench], "datetime": "2024-01-01", "version": "5.1.0"}))
    return path


def test_pytest_benchmark_json_is_compared_with_its_round_data(tmp_path, capsys):
    a = pytest_benchmark_json(tmp_path / "a.json", 0.010, seed=1)
    b = pytest_benchmark_json(tmp_path / "b.json", 0.010, seed=2)
    slow = pytest_benchmark_json(tmp_path / "slow.json", 0.0125, seed=3)
    assert main(["compare", str(a), str(b)]) == 0
    assert main(["compare", str(a), str(slow)]) == 1
    out = capsys.readouterr().out
    assert "t.py::test_x[all-layers]" in out and "REGRESSION" in out
    source = load_source(a)
    (entry,) = source.entries
    assert len(entry.step_seconds) == 30 and entry.values["throughput"] == pytest.approx(8 / 0.010, rel=0.1)
    assert entry.values["accuracy"] == 0.8 and entry.values["peak_memory"] == 5e8
    # saved without data (--benchmark-autosave without --benchmark-save-data): the threshold alone decides
    nodata = pytest_benchmark_json(tmp_path / "nodata.json", 0.0125, with_data=False)
    cmp = compare(load_source(a), load_source(nodata))
    (tp,) = [c for c in cmp.changes if c.metric == "throughput"]
    assert tp.verdict == "REGRESSION" and "no raw step samples" in tp.note


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
    # an accuracy drop of 10 points is a regression: exit 1, reported on stderr
    code = toy_run(toy_dir, tmp_path / "r3", "--compare-to", "main", "--fail-on", "throughput=off",
                   "-o", "toy-a.accuracy=0.4", "--save-baseline", "main")
    assert code == 1
    captured = capsys.readouterr()
    assert "REGRESSION" in captured.out and "not saved: the run regressed" in captured.out
    assert "regression against baseline 'main'" in captured.err
    assert json.loads(saved.read_text())["results"][0]["metrics"]["test_accuracy"] == 0.5  # kept the old one
    # bench compare accepts the saved name too
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
# Measured behaviour on the tiny model: same code does not flag; a 25% slowdown does.
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timing_runs(tmp_path_factory, tiny_bert):
    """Real ``bench run`` invocations of the timing workload (tests/tiny.py): base-a, slow, base-b.

    ``slow`` loads tests/plugins_slow/slowdown.py: every step 25% longer, inside the timed region. They
    run interleaved (a, slow, b, a, slow, b, ...), three rounds, and each name's results are pooled in
    one file, as ``bench run -s all-layers -s all-layers -s all-layers`` would write; while the runs
    spread too much for a precise comparison (whatever its outcome), rounds are added, up to ten. On a
    2-core machine that other jobs load, one run measured after another can differ by more than any
    threshold (docs/ci.md, calibration); interleaved repeats sample the same stretches of that load on
    both sides, and the run-level check sees how much whole runs move.
    """
    return _measure_timing(tmp_path_factory, tiny_bert)


def _measure_timing(tmp_path_factory, tiny_bert):
    from tiny import TIMING_ROWS, make_sentiment_csv, run_timing_protocol

    root = tmp_path_factory.mktemp("timing")
    data = make_sentiment_csv(root / "data.csv", rows=TIMING_ROWS)
    return run_timing_protocol(tiny_bert, data, root)


def test_two_runs_of_the_same_code_do_not_flag(timing_runs, tmp_path_factory, tiny_bert, capsys):
    capsys.readouterr()
    for attempt in range(3):
        code = main(["compare", str(timing_runs["base-a"]), str(timing_runs["base-b"])])
        out = capsys.readouterr().out
        if code == 0:
            break
        # As in the slowdown test: a burst of load from other jobs during one side's runs can move it
        # past the threshold; measure again, at most twice (docs/ci.md counts how often that happens).
        if attempt < 2:
            timing_runs = _measure_timing(tmp_path_factory, tiny_bert)
    assert code == 0, out
    cmp = compare(load_source(timing_runs["base-a"]), load_source(timing_runs["base-b"]))
    (acc,) = [c for c in cmp.changes if c.metric == "accuracy"]
    assert acc.change == 0  # same seed, same code: the same model


def test_a_run_slowed_by_25_percent_flags(timing_runs, tmp_path_factory, tiny_bert, capsys):
    capsys.readouterr()
    for attempt in range(3):
        code = main(["compare", str(timing_runs["base-a"]), str(timing_runs["slow"]), "--format", "markdown"])
        out = capsys.readouterr().out
        if code == 1:
            break
        # A burst of load from other jobs can make whole runs spread so much that the run-level check
        # cannot separate the sides (run-level p >= 0.2: "not significant", never a false verdict).
        # Measure again, at most twice; the calibration in docs/ci.md counts how often that happens.
        if attempt < 2:
            timing_runs = _measure_timing(tmp_path_factory, tiny_bert)
    assert code == 1, out
    cmp = compare(load_source(timing_runs["base-a"]), load_source(timing_runs["slow"]))
    (tp,) = [c for c in cmp.changes if c.metric == "throughput"]
    assert tp.verdict == "REGRESSION", out
    assert [c.metric for c in cmp.regressions] == ["throughput"]  # accuracy and memory unchanged
    runs = json.loads((timing_runs["slow"] / "results.json").read_text())["results"]
    assert len(runs) >= 3 and all(sum(s["kind"] == "timed" for s in r["steps"]) >= 30 for r in runs)
