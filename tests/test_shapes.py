"""Shape-only runs (--weights random), bench plan against measured bytes, and energy counters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_results

from bench.host.cli import main

# -------------------------------------------------------------------------------------------------
# Shapes.
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "head", "count"), [
    ("llama-1b", "causal-lm", 1_235_814_400),      # Llama-3.2-1B
    ("llama-8b", "causal-lm", 8_030_261_248),      # Llama-3.1-8B
    ("smollm2-135m", "causal-lm", 134_515_008),    # the sft default
    ("minilm-l6", "classification", 22_713_986),   # the classification default, with its 2-class head
    ("bert-base", "classification", 109_483_778),  # bert-base-uncased + a 2-class head
    ("distilbert-base", "classification", 66_955_010),
])
def test_shipped_shapes_have_the_published_parameter_counts(shape, head, count):
    from bench.models import random_init

    config = random_init.load_config(f"shape:{shape}")
    assert random_init.num_parameters(config, head) == count


def test_unknown_shape_and_a_shape_without_random_weights_are_one_line(capsys, tmp_path):
    assert main(["plan", "-s", "sft", "--model", "shape:llama-2b", "-p", "no:baselines"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model shape:llama-2b: no such shape" in err
    assert "(shapes: bert-base, distilbert-base, llama-1b, llama-8b, minilm-l6, smollm2-135m)" in err
    assert main(["run", "-s", "sft", "--model", "shape:llama-1b", "--out", str(tmp_path / "o")]) == 2
    assert "a shape has no weights; add --weights random" in capsys.readouterr().err
    assert main(["run", "-s", "sft", "--seq-len", "64", "--out", str(tmp_path / "o")]) == 2
    assert "--seq-len sets the length of synthetic batches: it needs --weights random" in capsys.readouterr().err


def test_random_weights_are_the_same_on_every_run_of_a_shape():
    import torch

    from bench.models import random_init

    config = random_init.load_config("shape:minilm-l6", num_labels=2)
    a = random_init.build(config, "classification", "cpu", "eager")
    b = random_init.build(config, "classification", "cpu", "eager")
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
    inv = a.bert.embeddings.position_ids if hasattr(a.bert.embeddings, "position_ids") else None
    assert inv is None or torch.equal(inv[0, :4], torch.arange(4))  # buffers initialised, not garbage


# -------------------------------------------------------------------------------------------------
# Shape-only runs.
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_run(tmp_path_factory) -> Path:
    from bench.testing import tiny_bert

    root = tmp_path_factory.mktemp("shapes")
    model = tiny_bert(root / "tiny-bert")
    out = root / "out"
    code = main(["run", "-s", "all-layers", "-s", "last-layers", "-s", "lora", "--model", str(model), "--weights",
                 "random", "--seq-len", "16", "--batch-size", "4", "--max-steps", "5", "--out", str(out),
                 "-p", "no:baselines", "-q", "--no-isolate"])  # in this process: 3 fewer imports of torch (~25 s)
    assert code == 0
    return out


def test_random_weight_runs_measure_everything_but_accuracy(random_run, capsys):
    rows = read_results(random_run)["results"]
    assert [r["strategy"] for r in rows] == ["all-layers", "last-layers", "lora"]
    for r in rows:
        assert r["status"] == "passed" and r["metrics"] == {}
        assert r["provenance"]["settings"]["weights"] == "random"
        tp = r["throughput"]["train"]
        assert tp["timed_steps"] == 3 and tp["warmup_steps"] == 2 and tp["profiled_steps"] == 0  # too short to profile
        assert tp["samples_per_s"] > 0 and r["mfu"] is not None and 0 < r["mfu"] < 1
        assert r["activations"]["batch_size"] == 4 and r["activations"]["seq_len"] == 16
        assert r["activations"]["bytes"] > 0
        assert {s["samples"] for s in r["steps"]} == {4} and {s["tokens"] for s in r["steps"]} == {64}
    assert main(["report", str(random_run)]) == 0
    text = capsys.readouterr().out
    assert text.count("accuracy not measured (random weights)") == 3


def test_energy_says_why_it_is_not_measured_here(random_run, capsys):
    from bench.measure.energy import counter_for

    counter, availability = counter_for("cpu")
    rows = read_results(random_run)["results"]
    for r in rows:
        assert r["energy"]["measured"] is availability.measured
        if not availability.measured:
            assert r["energy"]["detail"] == availability.detail and availability.detail
            assert all(p["energy_j"] is None for p in r["phases"])
    main(["report", str(random_run)])
    text = capsys.readouterr().out
    if not availability.measured:
        assert f"not measured: {availability.detail}" in text


# -------------------------------------------------------------------------------------------------
# bench plan against what runs measure.
# -------------------------------------------------------------------------------------------------


def _plans(args: list[str], capsys) -> dict[str, dict]:
    code = main(["plan", *args, "--plan-format", "json", "-p", "no:baselines"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    return {p["strategy"]: p for p in json.loads(out)}


def test_plan_matches_the_measured_bytes_of_a_run(random_run, capsys):
    rows = {r["strategy"]: r for r in read_results(random_run)["results"]}
    model = rows["all-layers"]["provenance"]["settings"]["model"]
    plans = _plans(["-s", "all-layers", "-s", "last-layers", "-s", "lora", "--model", model, "--seq-len", "16",
                    "--batch-size", "4", "--max-steps", "5"], capsys)
    for name, row in rows.items():
        f = plans[name]["figures"]
        params = row["params"]
        assert (f["params_total"], f["params_trainable"]) == (params["total"], params["trainable"])
        assert (f["param_bytes"], f["grad_bytes"], f["optimizer_bytes"]) == (
            params["param_bytes"], params["grad_bytes"], params["optimizer_state_bytes"]), name
        measured = row["activations"]["bytes"]
        assert abs(f["activation_bytes"] - measured) <= 0.25 * measured, (name, f["activation_bytes"], measured)
        assert f["cache_bytes"] == 0  # --max-steps 5: one epoch, no prefix cache, in the plan as in the run
        assert plans[name]["fits"] is True


def test_plan_of_a_minilm_sized_shape_matches_a_run(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["-s", "all-layers", "--model", "shape:minilm-l6", "--seq-len", "32", "--batch-size", "8", "--max-steps",
            "3"]
    assert main(["run", *args, "--weights", "random", "--out", str(out), "-p", "no:baselines", "-p", "no:profiler",
                 "-q", "--warmup-steps", "1"]) == 0
    (row,) = read_results(out)["results"]
    capsys.readouterr()
    f = _plans(args, capsys)["all-layers"]["figures"]
    assert f["optimizer_bytes"] == row["params"]["optimizer_state_bytes"]
    assert f["param_bytes"] == row["params"]["param_bytes"] == 22_713_986 * 4
    measured = row["activations"]["bytes"]
    assert abs(f["activation_bytes"] - measured) <= 0.25 * measured


def test_a_run_that_does_not_fit_is_refused_before_it_starts(tmp_path, capsys, monkeypatch):
    from bench.measure import plan

    monkeypatch.setattr(plan, "_meminfo_available", lambda: 10 * 2**20)  # 10 MiB free
    monkeypatch.setattr(plan, "_cgroup_limit", lambda: None)
    out = tmp_path / "out"
    assert main(["run", "-s", "all-layers", "--weights", "random", "--model", "shape:minilm-l6", "--max-steps", "2",
                 "--out", str(out), "-p", "no:baselines"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "strategy 'all-layers' does not fit cpu: it needs" in err and "MemAvailable 0.0 GiB" in err
    assert not (out / "results.json").exists()  # refused before anything ran
    assert main(["plan", "-s", "all-layers", "--model", "shape:minilm-l6", "-p", "no:baselines"]) == 1
    assert " NO" in capsys.readouterr().out


def test_a_strategy_off_the_shared_path_cannot_be_planned(capsys):
    assert main(["plan", "-s", "feature-extraction", "-p", "no:baselines"]) == 2
    err = capsys.readouterr().err
    assert "bench plan: strategy 'feature-extraction'" in err


# -------------------------------------------------------------------------------------------------
# Energy counters, on a fake powercap tree.
# -------------------------------------------------------------------------------------------------


def _zone(root: Path, name: str, label: str, energy: int, max_range: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "name").write_text(label + "\n")
    (folder / "energy_uj").write_text(f"{energy}\n")
    (folder / "max_energy_range_uj").write_text(f"{max_range}\n")
    return folder


def test_rapl_sums_packages_and_undoes_a_wrap_around(tmp_path):
    from bench.measure.energy import rapl_counter

    p0 = _zone(tmp_path, "intel-rapl:0", "package-0", 900_000, 1_000_000)
    p1 = _zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000, 10_000_000)
    _zone(tmp_path, "intel-rapl:0:0", "core", 1, 10)  # a sub-zone: already inside its package
    counter, why = rapl_counter(tmp_path)
    assert counter is not None and why == "" and [z.name for z in counter.zones] == ["package-0", "package-1"]
    start = counter.read()
    (p0 / "energy_uj").write_text("100000\n")  # wrapped: 900,000 -> 1,000,000 -> 100,000 = 200,000 uJ
    (p1 / "energy_uj").write_text("5500000\n")  # +500,000 uJ
    assert counter.delta_j(start, counter.read()) == pytest.approx(0.7)


def test_rapl_unreadable_and_missing_say_why(tmp_path, monkeypatch):
    from bench.measure import energy

    assert "does not exist" in energy.rapl_counter(tmp_path / "none")[1]
    _zone(tmp_path, "intel-rapl:0", "package-0", 1, 10)
    real_read = Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    counter, why = energy.rapl_counter(tmp_path)
    assert counter is None and "readable by root only" in why and "intel-rapl:0" in why
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no RAPL package zone" in energy.rapl_counter(empty)[1]


def test_meter_records_energy_per_phase_from_a_counter():
    from bench.measure.meter import Meter

    class Counter:
        source = "fake"

        def __init__(self) -> None:
            self.value = 0

        def read(self) -> list[int]:
            self.value += 1_000_000
            return [self.value]

        def delta_j(self, start, end) -> float:
            return (end[0] - start[0]) / 1e6

    meter = Meter("cpu", 0, energy=Counter())
    with meter.phase("train"):
        pass
    with meter.phase("train"):
        pass
    (train,) = meter.phases
    assert train.energy_j == pytest.approx(2.0)  # 1 J per phase entry, summed


def test_a_short_phase_is_not_profiled_so_that_steps_are_timed():
    from bench.measure.meter import Meter

    class Window:
        window_steps = 3

        def start(self): ...
        def step(self): ...
        def stop(self): ...

    short = Meter("cpu", 2, profiler=Window())
    short.expect_steps("train", 5)
    with short.phase("train"):
        for _ in range(5):
            with short.step(1, 1):
                pass
    assert [s.kind for s in short.steps] == ["warmup", "warmup", "timed", "timed", "timed"]
    long = Meter("cpu", 2, profiler=Window())
    long.expect_steps("train", 6)
    with long.phase("train"):
        for _ in range(6):
            with long.step(1, 1):
                pass
    assert [s.kind for s in long.steps] == ["warmup", "warmup", "profiled", "profiled", "profiled", "timed"]
