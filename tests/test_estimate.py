"""The whole-run estimate `bench run` prints before the first strategy: record first, reference scaled by peak."""

from __future__ import annotations

from bench.host import estimate


def test_the_record_wins_and_its_median_is_used(tmp_path):
    path = tmp_path / "runtimes" / "fp.json"
    for seconds in (100.0, 300.0, 120.0):
        estimate.add_to_record(path, "k1", seconds)
    record = estimate.read_record(path)
    guess = estimate.estimate([("all-layers", "k1")], record, preset="default", device="cpu", peak_flops=1e11,
                              custom=False)
    assert guess.guesses[0].source == "record" and guess.guesses[0].seconds == 120.0
    assert "median of 3 earlier runs here" in guess.line(1e11)


def test_the_record_keeps_the_last_runs_only(tmp_path):
    path = tmp_path / "fp.json"
    for i in range(estimate.KEEP + 3):
        estimate.add_to_record(path, "k", float(i))
    assert estimate.read_record(path)["k"] == [float(i) for i in range(3, estimate.KEEP + 3)]


def test_a_damaged_record_is_ignored(tmp_path):
    path = tmp_path / "fp.json"
    path.write_text("{not json")
    assert estimate.read_record(path) == {}


def test_without_a_record_the_reference_is_scaled_by_the_peak():
    ref = estimate.REFERENCE_SECONDS[("all-layers", "default")]
    twice_as_fast = 2 * estimate.REFERENCE_PEAK_FLOPS
    guess = estimate.estimate([("all-layers", "x")], {}, preset="default", device="cpu", peak_flops=twice_as_fast,
                              custom=False, repeats=3)
    assert guess.guesses[0].source == "reference"
    assert guess.total_s == 3 * ref / 2
    assert "reference 2-core AMD EPYC" in guess.line(twice_as_fast) and "x 3 repeats" in guess.line(twice_as_fast)


def test_custom_sizes_a_gpu_or_an_unknown_strategy_get_no_reference_estimate():
    for kwargs in ({"custom": True, "device": "cpu"}, {"custom": False, "device": "cuda"}):
        guess = estimate.estimate([("all-layers", "x")], {}, preset="default", peak_flops=1e11, **kwargs)
        assert guess.guesses[0].seconds is None
    mixed = estimate.estimate([("all-layers", "x"), ("my-plugin", "y")], {}, preset="default", device="cpu",
                              peak_flops=1e11, custom=False)
    assert "unknown: my-plugin" in mixed.line(1e11)


def test_run_keys_change_with_what_the_run_does():
    settings = {"model": None, "dataset": None, "device": "cpu", "precision": "fp32", "weights": "pretrained",
                "seq_len": 0}
    base = estimate.run_key("sft", {"epochs": 1}, settings)
    assert base == estimate.run_key("sft", {"epochs": 1}, dict(settings, seed=5))  # the seed does not change the work
    assert base != estimate.run_key("sft", {"epochs": 2}, settings)
    assert base != estimate.run_key("sft", {"epochs": 1}, dict(settings, precision="bf16"))
