"""bench-baselines' own tests: registration, the contract on tiny models, what each baseline does
differently (layers, padding, token counting), the pairing and ratios, and the speed command.

Run with ``pytest plugins/bench-baselines`` after ``pip install -e plugins/bench-baselines``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from bench.host.cli import main
from bench.results.schema import PhaseMeasure, Provenance, RunResult, StepSample
from bench.results.store import load_results
from bench.testing import check_strategy, default_assets, tiny_bert, tiny_sentiment_csv

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


def test_seed_loop_pads_every_batch_to_the_longest_example(tmp_path, monkeypatch):
    from bench_baselines import seed_loop

    widths: list[tuple[int, int]] = []  # (the batch's own width, the width the model gets)

    def recording_pad_to(batch, width, pad_id):
        padded = seed_loop.pad_to.__wrapped__(batch, width, pad_id)
        widths.append((batch.tensors["input_ids"].shape[1], padded.tensors["input_ids"].shape[1]))
        return padded

    recording_pad_to.__wrapped__ = seed_loop.pad_to  # type: ignore[attr-defined]
    monkeypatch.setattr(seed_loop, "pad_to", recording_pad_to)
    data = tmp_path / "lengths.csv"  # snippets of 2 to 21 words: batches of different own widths
    data.write_text("text,label\n" + "".join(f"{' '.join(['good film'] * (1 + i % 10))},{i % 2}\n"
                                             for i in range(60)))
    report = check_strategy("seed-loop", tmp_path=tmp_path, isolate=False, dataset=data, options={"epochs": 1})
    result = report.result
    width = result.extra["padded_to"]
    assert width > 0 and result.extra["stands_for"] == "all-layers"
    # every training batch reaches the model at the split's longest width, and that is the longest example's
    assert widths and {padded for _, padded in widths} == {width}
    assert max(own for own, _ in widths) == width and min(own for own, _ in widths) < width
    assert result.work is not None and result.work.padded_tokens == result.work.samples * width
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


def test_repeats_aggregate_to_the_median_of_their_own_ratios():
    def pair(ours: float, base: float, ours_q: float, base_q: float) -> ratios.Ratio:
        return ratios.Ratio("all-layers", "hf-trainer", "all", "train samples/s", ours, base, "test_accuracy",
                            ours_q, base_q, 1.3)

    # three repeats (seeds): ratios 2.0, 1.1 and 3.0; their median is 2.0, whereas the median of ours (110)
    # over the median of the baseline (100) would be 1.1
    group = [pair(100, 50, 0.80, 0.79), pair(110, 100, 0.81, 0.80), pair(300, 100, 0.79, 0.81)]
    row = speed.aggregate(group)
    assert row.ratio == pytest.approx(2.0) and row.repeat_ratios == pytest.approx((2.0, 1.1, 3.0))
    assert (row.ours_value, row.baseline_value) == (110, 100)  # medians, shown beside the ratio
    assert row.quality_delta_pt == pytest.approx(0.0)  # mean quality: 0.80 vs 0.80
    assert row.meets_target is True  # 2.0x >= 1.3x; with a ratio of medians it would be 1.1x: not met
    assert ratios.rows([row])[0][6] == "2.00x" and speed._range(group) == "1.10-3.00"
    mfu = ratios.Ratio("feature-extraction", "", "", "MFU (embedding)", 0.4, None, "test_accuracy", 0.7, None, 0.5)
    mfu_row = speed.aggregate([mfu, dataclasses.replace(mfu, ours_value=0.6), dataclasses.replace(mfu, ours_value=0.55)])
    assert mfu_row.ours_value == pytest.approx(0.55) and mfu_row.meets_target is True and mfu_row.ratio is None


def test_speed_command_runs_the_pairs_and_prints_the_ratio_table(tmp_path, capsys, monkeypatch):
    # the command's plumbing (8 bench run commands, the pairs, the table): a tiny model keeps it fast, and the
    # commands run in this process (each one's own process spent ~5 s importing torch and transformers: 8 of
    # them were 90 s of the suite); the real assets are exercised by test_a_run_with_both_sides_prints_the_ratio_table
    import subprocess
    from types import SimpleNamespace

    commands: list[list[str]] = []

    def in_process(cmd, **kwargs):
        assert cmd[1:3] == ["-m", "bench"], cmd
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, main(cmd[3:]), "", "")

    # the command's own subprocess calls only (bench run makes others: git, lscpu)
    monkeypatch.setattr(speed, "subprocess", SimpleNamespace(run=in_process))
    model = tiny_bert(tmp_path / "model")
    data = tiny_sentiment_csv(tmp_path / "data.csv")
    out = tmp_path / "speed"
    code = speed.main(["--only", "classification", "--out", str(out), "--preset", "smoke", "--",
                       "--model", str(model), "--dataset", str(data), "--max-steps", "2",
                       "--train-samples", "32", "--eval-samples", "16", "--no-isolate"])
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
    assert len(commands) == 8 and all({"no:profiler", "no:tensorboard", "--no-isolate"} <= set(c) for c in commands)


def test_a_run_with_both_sides_prints_the_ratio_table(tmp_path, capsys):
    model, data = default_assets("classification")
    out = tmp_path / "both"
    code = main(["run", "-s", "last-layers", "-s", "hf-trainer", "--train-layers", "head", "--model", str(model),
                 "--dataset", str(data), "--preset", "smoke", "--epochs", "2", "--no-isolate", "-p", "no:profiler",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    section = text.split("Speed against the baselines", 1)[1]
    row = next(line for line in section.splitlines() if line.split()[:3] == ["last-layers", "hf-trainer", "head"])
    # the printed ratio, recomputed by hand from the results file: samples over the train phase's wall time
    results = {r.strategy: r for r in load_results(out / "results.json").results}

    def rate(r: RunResult) -> float:
        return sum(s.samples for s in r.steps if s.phase == "train") / r.phase("train").wall_s

    ratio = rate(results["last-layers"]) / rate(results["hf-trainer"])
    delta = 100 * (results["last-layers"].metrics["test_accuracy"] - results["hf-trainer"].metrics["test_accuracy"])
    met = "yes" if ratio >= 3.0 and delta >= -0.5 else "NO"
    assert f"{ratio:.2f}x" in row.split() and ">= 3.0x" in row and row.split()[-1] == met, row
    assert main(["report", str(out)]) == 0  # and bench report shows it again
    assert "Speed against the baselines" in capsys.readouterr().out
