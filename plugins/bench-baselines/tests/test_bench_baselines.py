"""bench-baselines' own tests: registration, the contract on tiny models, what each baseline does
differently (layers, padding, token counting), the pairing and ratios, and the speed command.

Run with ``pytest plugins/bench-baselines`` after ``pip install -e plugins/bench-baselines``.
"""

from __future__ import annotations

import json

import pytest
from bench.host.cli import main
from bench.results.schema import PhaseMeasure, Provenance, RunResult, StepSample
from bench.results.store import load_results
from bench.testing import check_strategy, default_assets

from bench_baselines import ratios, speed


@pytest.fixture(autouse=True)
def _quiet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    monkeypatch.delenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def test_registered_through_the_entry_point_group(capsys):
    assert main(["list"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    for name, task in (("hf-trainer", "classification"), ("hf-trainer-sft", "causal-lm"),
                       ("seed-loop", "classification")):
        assert rows[name][1:5] == [task, "baselines", "bench-baselines", "0.1.0"]
    assert main(["list", "-p", "no:baselines"]) == 0
    assert "hf-trainer" not in capsys.readouterr().out


def test_hf_trainer_meets_the_contract_and_freezes_what_the_selection_freezes(tmp_path):
    report = check_strategy("hf-trainer", tmp_path=tmp_path, isolate=False,
                            options={"train_layers": "head", "epochs": 2, "lr": 1e-2})
    result = report.result
    assert set(result.trained_modules) == {"bert.pooler.dense", "classifier"}
    assert report.frozen is not None and report.frozen.checked > 0 and not report.frozen.changed
    train = [s for s in result.steps if s.phase == "train"]
    assert result.extra["optimizer_steps"] == len(train) > 0  # one meter step per optimizer step
    data = result.extra["data"]
    assert sum(s.samples for s in train) == 2 * data["train"]  # every example, each epoch, counted once
    assert all(0 < s.tokens == s.input_tokens <= s.samples * 64 for s in train)
    assert [h["epoch"] for h in result.extra["history"]] == [1.0, 2.0]  # Trainer evaluated each epoch
    assert result.extra["stands_for"] == "last-layers" and result.extra["attn_implementation"] == "sdpa"
    assert result.phase("train").wall_s > 0


def test_seed_loop_pads_every_batch_to_the_longest_example(tmp_path):
    report = check_strategy("seed-loop", tmp_path=tmp_path, isolate=False, options={"epochs": 1})
    result = report.result
    width = result.extra["padded_to"]
    assert width > 0 and result.extra["stands_for"] == "all-layers"
    train = [s for s in result.steps if s.phase == "train"]
    assert sum(s.samples for s in train) == result.extra["data"]["train"]
    assert all(s.samples <= 12 for s in train)  # the seed's batch of 12
    assert result.flops_per_token is not None  # counted on padded tokens, once, in a warm-up step


def test_hf_trainer_sft_counts_the_response_tokens_it_trains_on(tmp_path):
    report = check_strategy("hf-trainer-sft", tmp_path=tmp_path, isolate=False, options={"max_steps": 0,
                                                                                         "epochs": 1})
    result = report.result
    assert result.primary_metric == "exact_match_after" and "eval_loss" in result.metrics
    train = [s for s in result.steps if s.phase == "train"]
    # same data as sft: run sft the same way and compare the work counted
    sft = check_strategy("sft", tmp_path=tmp_path / "sft", isolate=False, options={"max_steps": 0, "epochs": 1})
    sft_train = [s for s in sft.result.steps if s.phase == "train"]
    assert sum(s.samples for s in train) == sum(s.samples for s in sft_train)
    assert sum(s.tokens for s in train) == sum(s.tokens for s in sft_train)  # response tokens
    assert sum(s.input_tokens for s in train) == sum(s.input_tokens for s in sft_train)
    assert result.extra["train_input_tokens"] == sft.result.extra["train_input_tokens"]


# ------------------------------------------------------------------------------------------ ratios


def _result(strategy: str, *, layers: str = "all", samples: int = 100, wall: float = 1.0, quality: float = 0.8,
            stands_for: str | None = None, metric: str = "test_accuracy", mfu: float | None = None) -> RunResult:
    prov = Provenance(0, "cpu", "", 0, "bf16", "", "", "", None, strategy, None, None)
    extra = {"train_layers": layers, **({"stands_for": stands_for} if stands_for else {})}
    steps = (StepSample("timed", wall / 2, samples // 2, 0, "train", samples * 5),
             StepSample("timed", wall / 2, samples - samples // 2, 0, "train", samples * 5))
    return RunResult(strategy, "passed", prov, metrics={metric: quality}, primary_metric=metric,
                     phases=(PhaseMeasure("train", wall, None),), steps=steps, extra=extra, mfu=mfu)


def test_ratios_pair_same_layers_and_hold_quality_to_half_a_point():
    results = [
        _result("all-layers", wall=10.0, quality=0.790),
        _result("hf-trainer", wall=14.0, quality=0.792, stands_for="all-layers"),
        _result("last-layers", layers="head", wall=1.0, quality=0.690),
        _result("hf-trainer", layers="head", wall=5.0, quality=0.700, stands_for="last-layers"),
        _result("hf-trainer", layers="head+last:1", wall=5.0, stands_for="last-layers"),  # no partner
        _result("feature-extraction", mfu=0.61),
    ]
    got = {(r.ours, r.layers): r for r in ratios.ratios(results)}
    assert set(got) == {("all-layers", "all"), ("last-layers", "head"), ("feature-extraction", "")}
    full = got[("all-layers", "all")]
    assert full.ratio == pytest.approx(1.4) and full.quality_delta_pt == pytest.approx(-0.2)
    assert full.target == 1.3 and full.meets_target is True
    head = got[("last-layers", "head")]
    assert head.ratio == pytest.approx(5.0) and head.meets_target is False  # 1 point worse: not a win
    assert got[("feature-extraction", "")].meets_target is True
    section = ratios.ratio_section(results)
    assert section is not None and len(section.rows) == 2 and section.rows[0][-1] == "yes"
    assert ratios.ratio_section(results[:1]) is None


def test_sft_is_compared_on_input_tokens_per_second():
    ours = _result("sft", samples=10, wall=2.0, metric="exact_match_after", quality=0.8)
    base = _result("hf-trainer-sft", samples=10, wall=3.0, metric="exact_match_after", quality=0.8,
                   stands_for="sft")
    (r,) = ratios.ratios([ours, base])
    assert r.measure == "train tokens/s" and r.ours_value == pytest.approx(100 / 2.0)
    assert r.ratio == pytest.approx(1.5) and r.meets_target is True


def test_speed_command_runs_the_pairs_and_prints_the_ratio_table(tmp_path, capsys):
    model, data = default_assets("classification")
    out = tmp_path / "speed"
    code = speed.main(["--only", "classification", "--out", str(out), "--preset", "smoke", "--",
                       "--model", str(model), "--dataset", str(data), "--max-steps", "2"])
    assert code == 0
    text = capsys.readouterr().out
    assert "all-layers" in text and "hf-trainer" in text and "head+last:1" in text
    rows = json.loads((out / "speed.json").read_text())
    pairs = {(r["strategy"], r["baseline"], r["layers"]) for r in rows}
    assert {("all-layers", "hf-trainer", "all"), ("last-layers", "hf-trainer", "head"),
            ("last-layers", "hf-trainer", "head+last:1"), ("all-layers", "seed-loop", "all"),
            ("feature-extraction", "-", "-")} <= pairs
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(folders) == 8 and all(load_results(out / f / "results.json").results[0].passed for f in folders)
    assert (out / "speed.md").read_text().startswith("| strategy")


def test_a_run_with_both_sides_prints_the_ratio_table(tmp_path, capsys):
    model, data = default_assets("classification")
    out = tmp_path / "both"
    code = main(["run", "-s", "last-layers", "-s", "hf-trainer", "--train-layers", "head", "--model", str(model),
                 "--dataset", str(data), "--preset", "smoke", "--epochs", "2", "--no-isolate", "-p", "no:profiler",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    section = text.split("Speed against the baselines", 1)[1]
    assert "last-layers" in section and "hf-trainer" in section and "head" in section
    assert main(["report", str(out)]) == 0  # and bench report shows it again
    assert "Speed against the baselines" in capsys.readouterr().out
