"""Numbers a user can decide on: one peak per run, repeats with intervals, verdicts on differences between
strategies and the rows that should not be compared (tiny models; no timing in any assertion)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from conftest import read_results

from bench.host.cli import main
from bench.measure import peak as peak_mod
from bench.measure.peak import Peak, judge_mfu, machine_peak, theoretical_peak
from bench.results.report import standard_sections
from bench.results.schema import Provenance, RunResult, TechniqueUse
from bench.results.stats import mcnemar, t_interval, welch_p, wilson_interval
from bench.results.verdicts import accuracy_verdict, comparability_rows

# -------------------------------------------------------------------------------------------------
# The statistics, against values computed by hand.
# -------------------------------------------------------------------------------------------------


def test_t_interval_by_hand():
    ci = t_interval([1.0, 2.0, 3.0])
    assert ci is not None and ci.n == 3 and ci.value == pytest.approx(2.0)
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) x sd / sqrt(n)
    assert (ci.low, ci.high) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    one = t_interval([0.5])
    assert one is not None and one.n == 1 and one.low == one.high == 0.5
    assert t_interval([]) is None


def test_wilson_interval_by_hand():
    ci = wilson_interval(0.8, 1308)  # the default test split: about +/-2.2 points at 0.80
    z = 1.959963984540054
    center = (0.8 + z * z / 2616) / (1 + z * z / 1308)
    half = z * math.sqrt(0.8 * 0.2 / 1308 + z * z / (4 * 1308**2)) / (1 + z * z / 1308)
    assert (ci.low, ci.high) == (pytest.approx(center - half), pytest.approx(center + half))
    assert 0.021 < (ci.high - ci.low) / 2 < 0.023
    edge = wilson_interval(1.0, 10)  # never past [0, 1], and not zero-width at 100%
    assert edge.high == 1.0 and 0.6 < edge.low < 0.75


def test_mcnemar_exact_by_hand():
    # 6 discordant examples, all one way: p = 2 x (1/2)^6
    test = mcnemar([1] * 6 + [1, 0], [0] * 6 + [1, 0])
    assert (test.a_only, test.b_only) == (6, 0) and test.p == pytest.approx(2 / 64)
    # 3 vs 3: no evidence either way
    assert mcnemar([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]).p == 1.0
    assert mcnemar([1, 0], [1, 0]).p == 1.0
    with pytest.raises(ValueError, match="same examples"):
        mcnemar([1], [1, 0])


def test_welch_needs_two_values_per_side():
    assert welch_p([1.0], [2.0, 3.0]) is None
    assert welch_p([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]) < 0.001
    assert welch_p([1.0, 1.2, 0.8], [1.1, 0.9, 1.0]) > 0.5


# -------------------------------------------------------------------------------------------------
# One peak per machine.
# -------------------------------------------------------------------------------------------------


def test_an_mfu_above_100_percent_is_refused_with_the_reason():
    peak = Peak(1e9, "measured: test", "cpu", "fp32")
    assert judge_mfu(5e8, peak) == (0.5, "")
    mfu, note = judge_mfu(3e9, peak)
    assert mfu is None and "300%" in note and "too low" in note and "--remeasure-peak" in note


def test_the_peak_is_cached_per_machine_and_a_remeasure_keeps_the_best(tmp_path, monkeypatch):
    probes = iter([(2e9, {"repeats": 3}), (1e9, {"repeats": 3}), (4e9, {"repeats": 3})])
    monkeypatch.setattr(peak_mod, "probe_peak", lambda device, precision: next(probes))
    first = machine_peak("cpu", "fp32", tmp_path)
    assert first.flops == 2e9 and first.source.startswith("measured:")
    again = machine_peak("cpu", "fp32", tmp_path)  # cached: no probe
    assert again.flops == 2e9 and again.source.startswith("cached measurement")
    lower = machine_peak("cpu", "fp32", tmp_path, remeasure=True)  # a disturbed probe is only slower
    assert lower.flops == 2e9
    higher = machine_peak("cpu", "fp32", tmp_path, remeasure=True)
    assert higher.flops == 4e9
    assert machine_peak("cpu", "fp32", tmp_path).flops == 4e9
    assert len(list((tmp_path / "peaks").glob("*.json"))) == 1


def test_a_damaged_cache_entry_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(peak_mod, "probe_peak", lambda device, precision: (3e9, {"repeats": 3}))
    first = machine_peak("cpu", "fp32", tmp_path)
    (tmp_path / "peaks" / f"{first.fingerprint}.json").write_text("{not json")
    assert machine_peak("cpu", "fp32", tmp_path).source.startswith("measured:")


def test_theoretical_cpu_peak_names_how_it_was_derived():
    flops, how = theoretical_peak("cpu", "fp32")
    if flops is None:
        assert how  # says why not
    else:
        assert flops > 1e9 and "cores x" in how and "FLOP/cycle" in how
    assert theoretical_peak("cuda", "bf16") == (None, "")


def test_every_row_of_a_run_uses_the_one_peak_of_the_machine(tiny_bert, sentiment_csv, tmp_path, monkeypatch):
    probes = []

    def probe(device: str, precision: str) -> tuple[float, dict]:
        probes.append((device, precision))
        return 5e13, {"repeats": 3, "rates_flops": {}}  # far above what the tiny model reaches

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(peak_mod, "probe_peak", probe)
    out = tmp_path / "out"
    assert main(["run", "-s", "all-layers", "-s", "last-layers", "-s", "feature-extraction", "--model", str(tiny_bert),
                 "--dataset", str(sentiment_csv), "--epochs", "1", "--train-samples", "0", "--batch-size", "8",
                 "--no-isolate", "--out", str(out)]) == 0
    data = read_results(out)
    assert probes == [("cpu", data["machine"]["peak"]["precision"])]  # once, in the host, before the first
    assert data["machine"]["peak"]["flops"] == 5e13
    rows = data["results"]
    assert len(rows) == 3 and {r["peak_flops"] for r in rows} == {5e13}
    for r in rows:  # an MFU where timed steps were measured, else the reason
        assert (r["mfu"] is not None and 0 < r["mfu"] <= 1) or r["mfu_note"], r["strategy"]
    assert all(r["mfu"] is not None for r in rows if r["strategy"] != "feature-extraction")


def test_a_peak_too_low_is_named_instead_of_an_mfu_over_100_percent(tiny_bert, sentiment_csv, tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(peak_mod, "probe_peak", lambda device, precision: (1e3, {"repeats": 3}))  # 1 kFLOP/s
    out = tmp_path / "out"
    assert main(["run", "-s", "all-layers", "--model", str(tiny_bert), "--dataset", str(sentiment_csv), "--epochs",
                 "1", "--train-samples", "0", "--batch-size", "8", "--no-isolate", "-p", "no:profiler",
                 "--out", str(out)]) == 0
    row = read_results(out)["results"][0]
    assert row["mfu"] is None and "too low" in row["mfu_note"]
    assert "peak too low" in capsys.readouterr().out


# -------------------------------------------------------------------------------------------------
# Repeats.
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repeated(tmp_path_factory, tiny_bert, sentiment_csv) -> Path:
    """``--repeats 3 -s all-layers -s last-layers --preset smoke`` on the tiny model, in-process."""
    out = tmp_path_factory.mktemp("repeats") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_PROGRESS", "0")
        assert main(["run", "--repeats", "3", "-s", "all-layers", "-s", "last-layers", "--preset", "smoke",
                     "--model", str(tiny_bert), "--dataset", str(sentiment_csv), "--batch-size", "8", "-o",
                     "all-layers.train_samples=0", "-o", "last-layers.train_samples=0", "--no-isolate",
                     "-p", "no:profiler", "--seed", "7", "--out", str(out)]) == 0
    return out


def test_repeats_are_interleaved_with_their_own_seeds_and_run_folders(repeated):
    rows = read_results(repeated)["results"]
    assert [(r["strategy"], r["repeat"], r["provenance"]["seed"]) for r in rows] == [
        ("all-layers", 0, 7), ("last-layers", 0, 7), ("all-layers", 1, 8), ("last-layers", 1, 8),
        ("all-layers", 2, 9), ("last-layers", 2, 9)]
    folders = sorted(p.name for p in (repeated / "runs").iterdir())
    assert folders == [f"{s}-{i}" for s in ("all-layers", "last-layers") for i in (1, 2, 3)]
    assert sorted(r["run_dir"] for r in rows) == [f"runs/{f}" for f in folders]
    for r in rows:  # each example's outcome kept, for the paired tests
        assert len(r["outcomes"]["test_accuracy"]) == r["metric_samples"]["test_accuracy"] > 0


def test_the_report_shows_one_row_per_strategy_with_intervals_and_raw_shows_every_run(repeated, capsys):
    capsys.readouterr()
    assert main(["report", str(repeated)]) == 0
    text = capsys.readouterr().out
    summary = text.split("Strategies over repeats", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in summary.splitlines() if line.startswith(("all-layers", "last-layers"))]
    assert len(lines) == 2 and all(" 3 " in line and "[" in line for line in lines)
    rows = read_results(repeated)["results"]
    mean = sum(r["metrics"]["test_accuracy"] for r in rows if r["strategy"] == "all-layers") / 3
    assert f"{mean:.4f} [" in summary
    assert "Against the best strategy" in text and "McNemar" in text
    assert main(["report", "--raw", str(repeated)]) == 0
    raw = capsys.readouterr().out
    task = raw.split("Task metrics", 1)[1].split("\n\n", 1)[0]
    assert sum(line.startswith(("all-layers", "last-layers")) for line in task.splitlines()) == 6
    assert "Strategies over repeats" not in raw


def test_a_single_run_carries_the_wilson_interval_of_its_test_set(tiny_bert, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "-s", "last-layers", "--model", str(tiny_bert), "--dataset", str(sentiment_csv), "--epochs",
                 "1", "--train-samples", "0", "--batch-size", "8", "--no-isolate", "-p", "no:profiler",
                 "--out", str(out)]) == 0
    row = read_results(out)["results"][0]
    acc, n = row["metrics"]["test_accuracy"], row["metric_samples"]["test_accuracy"]
    ci = wilson_interval(acc, n)
    assert f"{acc:.4f} [{ci.low:.3f}, {ci.high:.3f}]" in capsys.readouterr().out


# -------------------------------------------------------------------------------------------------
# Verdicts on differences and comparability (synthetic results: the verdict logic, exactly).
# -------------------------------------------------------------------------------------------------


def result(strategy: str, acc: float, outcomes: str, precision: str = "fp32", data: str = "d" * 64,
           techniques: dict[str, bool] | None = None) -> RunResult:
    prov = Provenance(seed=0, device="cpu", device_name="", device_count=1, precision=precision, python="3",
                      torch="2", transformers="4", git_commit=None, plugin="test", distribution=None,
                      plugin_version=None)
    return RunResult(strategy=strategy, status="passed", metrics={"test_accuracy": acc},
                     primary_metric="test_accuracy", provenance=prov,
                     metric_samples={"test_accuracy": len(outcomes)}, outcomes={"test_accuracy": outcomes},
                     data_sha256=data, techniques={k: TechniqueUse(v) for k, v in (techniques or {}).items()})


def test_accuracy_differences_are_judged_on_the_same_examples():
    best = result("a", 0.9, "1" * 90 + "0" * 10)
    close = result("b", 0.88, "1" * 88 + "0" * 12)  # 2 discordant: within noise
    far = result("c", 0.6, "1" * 60 + "0" * 40)  # 30 discordant, all one way
    assert accuracy_verdict(best, close, "test_accuracy").startswith("within noise")
    assert accuracy_verdict(best, far, "test_accuracy").startswith("beyond noise")
    other_data = dataclasses.replace(far, data_sha256="e" * 64)
    assert accuracy_verdict(best, other_data, "test_accuracy") == "different data: not comparable"


def test_rows_that_differ_in_precision_data_or_techniques_are_flagged():
    rows = [result("a", 0.9, "1"), result("b", 0.8, "1", precision="bf16")]
    flagged = comparability_rows(rows, lambda label, name: (name,))
    assert ("a", "precision", "fp32") in flagged and ("b", "precision", "bf16") in flagged
    same = [result("a", 0.9, "1", techniques={"x": True}), result("b", 0.8, "1", techniques={"x": True, "y": False})]
    assert comparability_rows(same, lambda label, name: (name,)) == []  # y is only b's
    differ = [result("a", 0.9, "1", techniques={"x": True}), result("b", 0.8, "1", techniques={"x": False})]
    assert ("b", "speed techniques", "x off") in comparability_rows(differ, lambda label, name: (name,))
    sections = {s.title for s in standard_sections(rows)}
    assert "Rows that differ in what their numbers depend on" in sections


def test_fp32_and_bf16_runs_of_the_same_code_are_refused_in_one_line(tiny_bert, sentiment_csv, tmp_path, capsys):
    common = ["-s", "last-layers", "--model", str(tiny_bert), "--dataset", str(sentiment_csv), "--epochs", "1",
              "--train-samples", "0", "--batch-size", "8", "--no-isolate", "-p", "no:profiler"]
    assert main(["run", *common, "--precision", "fp32", "--out", str(tmp_path / "fp32")]) == 0
    assert main(["run", *common, "--precision", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "fp32"), str(tmp_path / "bf16")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "precision" in err[0] and "fp32" in err[0] and "bf16" in err[0]
    assert main(["compare", str(tmp_path / "fp32"), str(tmp_path / "bf16"), "--allow-different", "precision"]) in (0, 1)
    out = capsys.readouterr().out
    assert "precision" in out and "last-layers" in out
    json.loads((tmp_path / "bf16" / "results.json").read_text())  # both files stay valid results


def test_the_peak_probe_shrinks_shapes_it_cannot_afford_and_keeps_the_others():
    """bf16 on an AVX2-only CPU ran the full 2048-row probe for 6 minutes; a shape whose products would take
    far past the budget is probed on fewer rows (never below 64), one within it keeps its size."""
    import torch

    from bench.measure.peak import _affordable_rows

    assert _affordable_rows(2048, 384, 1536, torch.float32, "cpu", budget_s=1e3, calls=5) == 2048
    assert _affordable_rows(2048, 384, 1536, torch.float32, "cpu", budget_s=1e-9, calls=5) == 64
    middle = _affordable_rows(4096, 512, 512, torch.float32, "cpu", budget_s=1e-4, calls=5)
    assert 64 <= middle <= 4096 and middle % 16 == 0
