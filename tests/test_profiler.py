"""The profiler, TensorBoard scalars, FLOPs/MFU and the per-phase memory figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import read_results

from bench.host.cli import main
from bench.measure.flops import table_peak


@pytest.fixture(scope="module")
def profiled_run(tiny_bert, sentiment_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profiled") / "out"
    code = main(["run", "-s", "all-layers", "--model", str(tiny_bert), "--dataset", str(sentiment_csv),
                 "--epochs", "2", "--train-samples", "0", "--batch-size", "8", "--warmup-steps", "2",
                 "--profile-warmup", "1", "--profile-active", "2", "--out", str(out)])
    assert code == 0
    return out


def test_traces_load_with_torch_tb_profiler(profiled_run):
    pytest.importorskip("torch_tb_profiler")
    from torch_tb_profiler import consts
    from torch_tb_profiler.profiler.data import RunProfileData
    from torch_tb_profiler.profiler.run_generator import RunGenerator

    folder = profiled_run / "runs" / "all-layers-1" / "profile"
    traces = [p for p in folder.iterdir() if consts.WORKER_PATTERN.match(p.name)]
    assert len(traces) == 1, list(folder.iterdir())
    match = consts.WORKER_PATTERN.match(traces[0].name)
    data = RunProfileData.parse(match.group(1), None, str(traces[0]), str(folder))
    profile = RunGenerator(match.group(1), None, data).generate_run_profile()
    assert profile.views, "torch-tb-profiler found no views in the trace"
    names = {row["name"] for row in profile.operation_table_by_name["data"]}
    assert any(n.startswith("aten::") for n in names)


def test_profiled_window_apart_from_timed_window(profiled_run):
    result = read_results(profiled_run)["results"][0]
    kinds = [s["kind"] for s in result["steps"] if s["phase"] == "train"]
    assert kinds[:5] == ["warmup", "warmup", "profiled", "profiled", "profiled"]
    assert set(kinds[5:]) == {"timed"}
    tp = result["throughput"]["train"]
    assert tp["timed_steps"] == len(kinds) - 5 and tp["profiled_steps"] == 3
    timed = [s for s in result["steps"] if s["kind"] == "timed"]
    expected = sum(s["samples"] for s in timed) / sum(s["seconds"] for s in timed)
    assert tp["samples_per_s"] == pytest.approx(expected)


def test_top_operators_in_report(profiled_run, capsys):
    assert main(["report", str(profiled_run)]) == 0
    out = capsys.readouterr().out
    assert "Top operators: all-layers" in out and "aten::" in out and "ProfilerStep" not in out


def test_tensorboard_scalars_beside_traces(profiled_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(profiled_run / "runs" / "all-layers-1" / "profile"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/samples_per_s", "val_accuracy"} <= tags
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert len(losses) == len(read_results(profiled_run)["results"][0]["steps"])


def test_flops_mfu_and_memory_recorded(profiled_run):
    result = read_results(profiled_run)["results"][0]
    assert result["flops_per_token"] > 0
    # MFU and the throughput published beside it, recomputed from the run's own recorded steps and peak
    train = [s for s in result["steps"] if s["phase"] == "train"]
    timed = [s for s in train if s["kind"] == "timed"]
    seconds = sum(s["seconds"] for s in timed)
    expected = result["flops_per_token"] * sum(s["input_tokens"] for s in timed) / seconds / result["peak_flops"]
    assert 0 < result["mfu"] <= 1 and result["mfu"] == pytest.approx(expected, rel=1e-12)
    tp = result["throughput"]["train"]
    assert tp["samples_per_s"] == pytest.approx(sum(s["samples"] for s in timed) / seconds, rel=1e-12)
    wall = next(p["wall_s"] for p in result["phases"] if p["name"] == "train")
    assert tp["phase_samples_per_s"] == pytest.approx(sum(s["samples"] for s in train) / wall, rel=1e-12)
    assert result["peak_flops_source"].startswith(("measured:", "cached measurement"))
    params = result["params"]
    assert params["grad_bytes"] == params["param_bytes"]  # all layers train, fp32
    # AdamW: exp_avg + exp_avg_sq per parameter, plus one scalar `step` tensor per parameter tensor
    extra = params["optimizer_state_bytes"] - 2 * params["param_bytes"]
    assert 0 < extra <= 8 * 64
    phases = {p["name"]: p for p in result["phases"]}
    assert {"setup", "train", "eval"} <= set(phases)
    assert all(p["cpu_peak_rss_bytes"] > 0 and p["gpu_peak_allocated_bytes"] is None for p in phases.values())


def test_no_profiler_means_no_profiled_steps_and_no_traces(tiny_bert, sentiment_csv, tmp_path):
    out = tmp_path / "out"
    assert main(["run", "-s", "last-layers", "--model", str(tiny_bert), "--dataset", str(sentiment_csv),
                 "--epochs", "1", "--train-samples", "0", "--batch-size", "8", "--out", str(out),
                 "-p", "no:profiler", "--no-isolate"]) == 0
    result = read_results(out)["results"][0]
    assert "profiled" not in {s["kind"] for s in result["steps"]}
    assert not list(out.rglob("*.pt.trace.json"))


def test_peak_table_prefers_specific_names():
    assert table_peak("NVIDIA H100 PCIe", "bf16") == pytest.approx(756e12)
    assert table_peak("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert table_peak("Some Unknown GPU", "bf16") is None


@pytest.mark.parametrize(("q", "kv", "dv"), [
    ((2, 8, 33, 16), (2, 8, 40, 16), 24),  # full multi-head attention, cross lengths
    ((1, 32, 128, 64), (1, 8, 128, 64), 64),  # grouped-query attention (Llama: 32 query heads, 8 kv heads)
])
def test_fused_attention_flops_by_hand(q, kv, dv):
    """Forward: QK^T and PV, 2 FLOPs per multiply-add, over every query head (GQA does the same products)."""
    from bench.measure.flops import attention_backward_flops, attention_flops

    b, heads, s_q, d = q
    s_k = kv[2]
    v = (kv[0], kv[1], s_k, dv)
    assert attention_flops(q, kv, v) == 2 * b * heads * s_q * s_k * d + 2 * b * heads * s_q * s_k * dv
    # backward: scores recomputed (d), dP (dv), dV (dv), dQ (d), dK (d)
    grad_out = (b, heads, s_q, dv)
    assert attention_backward_flops(grad_out, q, kv, v) == 2 * b * heads * s_q * s_k * (3 * d + 2 * dv)


def test_fused_attention_kernels_counted_with_grouped_query_heads():
    """A GQA call of a fused kernel is counted (torch < 2.12's own formula raised on it)."""
    import torch

    from bench.measure.flops import _attention_mapping

    mapping = _attention_mapping()
    assert torch.ops.aten._scaled_dot_product_efficient_attention in mapping
    assert torch.ops.aten._scaled_dot_product_flash_attention_backward in mapping
    formula = mapping[torch.ops.aten._scaled_dot_product_flash_attention]
    assert formula((1, 32, 16, 8), (1, 8, 16, 8), (1, 8, 16, 8)) == 2 * 2 * 32 * 16 * 16 * 8


def test_torch_tb_profiler_and_tensorboard_are_base_dependencies():
    """The first command of the README (`pip install -e .`) installs what reads the traces and scalars."""
    import re
    from pathlib import Path

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    assert {"torch-tb-profiler", "tensorboard"} <= base
    import torch_tb_profiler  # noqa: F401  (installed with the base install, not an extra)
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401


def test_progress_lines_still_reach_stderr_while_the_profiler_silences_it(capfd, monkeypatch):
    # The trace export runs with file descriptor 2 pointed at /dev/null (to hide Kineto's native prints)
    # and can take most of a minute: a heartbeat written then was lost, and the host, told that the run
    # process had spoken, stayed silent too (40 s without a line in an sft smoke run).
    import os

    from bench.core import progress
    from bench.measure.profiler import _quiet_native_stderr

    monkeypatch.setattr(progress, "lines_enabled", lambda: True)
    act = progress.Activity()
    act.label = "sft"
    with _quiet_native_stderr():
        os.write(2, b"native kineto line\n")
        act.phase_started("train")
        progress.note("a note")
    err = capfd.readouterr().err
    assert "bench: sft: train started" in err and "a note" in err
    assert "native kineto line" not in err


def test_the_smoke_preset_records_one_profiled_step_unless_told():
    from bench.measure.profiler import _active_steps

    assert _active_steps(None, "smoke") == 1  # a 2-step sft trace took 14 s of the smoke minute to export
    assert _active_steps(None, "default") == 2 and _active_steps(None, "full") == 2
    assert _active_steps(3, "smoke") == 3 and _active_steps(0, "default") == 0  # what the user asked for wins
