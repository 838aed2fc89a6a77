"""torch.distributed: the same strategies on several processes (gloo on the CPU, world size 2, tiny models).

The pure parts (dealing batches, sharding evaluation, exact metrics from counts, combining ranks, the failed
row's message, the options) are checked without processes. Then real jobs through the elastic launcher:

* DDP and FSDP give the same per-step training losses and the same trained parameters as one process with the
  same global batch, and one results file holds the one-process reference and the distributed rows with every
  rank's memory, the report's scaling efficiency among them. Tolerance: the runs do the same arithmetic on the
  same examples except for the order of sums (each rank's half of the batch, then the all-reduce; matmuls of
  other shapes), in fp32 (eps 1.2e-7), so they differ by a few ulp: 1.2e-7 in the loss and 6e-8 in a parameter
  were measured here after 20 AdamW steps. The test allows 1e-5, still far below what any real mistake moves:
  a missing or doubled example, or a gradient not averaged, moves parameters by about one AdamW step (lr 1e-3:
  Adam's update is about lr per parameter and step).
* a rank that raises mid-training, or hangs, fails its row naming the rank; the strategies after it still run.
* ``bench run`` started by an outer launcher (torch's elastic launcher running ``bench.host.cli.main``, as
  ``torchrun -m bench run`` does) runs as one rank and rank 0 writes the results file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import read_results

from bench.core.dist import DistContext
from bench.host.cli import main


def bench_as_a_rank(env: dict[str, str], args: list[str]) -> int:
    """What ``torchrun -m bench run ...`` runs in each rank: the command line, in the test's environment."""
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return main(args)


PROBE = Path(__file__).resolve().parent / "plugins_dist"  # dist_probe.py: saves parameters, injects faults
TOLERANCE = 1e-5


def ctx(rank: int, world: int = 2) -> DistContext:
    return DistContext(rank, world, rank, world, 1, "gloo")


# -------------------------------------------------------------------------------------------------
# Without processes.
# -------------------------------------------------------------------------------------------------


def test_each_step_is_dealt_to_the_ranks_with_similar_lengths():
    from bench.data.batching import length_grouped_order
    from bench.training.parallel import batches_per_epoch, deal

    lengths = [3 + (i * 7) % 40 for i in range(103)]
    order = length_grouped_order(lengths, 8, seed=1)
    shares = [deal(order, lengths, ctx(r)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == batches_per_epoch(103, 8, ctx(0)) == 13  # 103 = 12 x 8 + 7
    for batch, a, b in zip([b for b in order if len(b) >= 2], *shares):
        assert sorted(a + b) == sorted(batch)  # the step's global batch, split, nothing lost or repeated
        assert abs(len(a) - len(b)) <= 1
        assert abs(sum(lengths[i] for i in a) - sum(lengths[i] for i in b)) <= max(lengths[i] for i in batch)
    assert deal(order, lengths, None) == order
    assert batches_per_epoch(97, 8, ctx(0)) == 12  # the last batch has 1 example for 2 ranks: dropped
    assert batches_per_epoch(97, 8, None) == 13


def test_evaluation_shards_run_the_same_number_of_forwards():
    from bench.training.parallel import shard, stand_in

    order = [[0, 1], [2, 3], [4, 5], [6]]
    ranks = [shard(order, ctx(r, 3)) for r in range(3)]
    assert [len(s) for s in ranks] == [2, 2, 2]
    real = [i for s in ranks for b in s for i in stand_in(b, order)[0] if stand_in(b, order)[1]]
    assert sorted(real) == list(range(7))
    assert stand_in([], order) == ([0, 1], False)


def test_metrics_from_counts_are_scikit_learns():
    import numpy as np
    from sklearn.metrics import f1_score

    from bench.training.classify import confusion_metrics

    rng = np.random.default_rng(0)
    for classes in (2, 3, 5):
        y_true = rng.integers(0, classes, 200)
        y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, classes - 1, 200))  # a class never predicted
        cells = np.bincount(y_true * classes + y_pred, minlength=classes * classes).tolist()
        got = confusion_metrics(cells)
        assert got["accuracy"] == float((y_true == y_pred).mean())
        assert got["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-15)


def test_ranks_combine_into_one_result():
    from bench.measure.ranks import combine, rank_measure
    from bench.results.schema import DistributedInfo, PhaseMeasure, Provenance, RunResult, StepSample

    def result(seconds: list[float], rss: int) -> RunResult:
        steps = tuple(StepSample("timed", s, 4, 40, "train", 50) for s in seconds)
        prov = Provenance(0, "cpu", "cpu", 1, "fp32", "", "", "", None, "p", None, None, {"parallel": "ddp"})
        return RunResult("s", "passed", prov, steps=steps, phases=(PhaseMeasure("train", sum(seconds), rss),),
                         flops_per_token=10.0, peak_flops=1000.0, peak_flops_source="probe")

    ranks = [result([1.0, 2.0], 100), result([1.5, 1.0], 300)]
    measures = [rank_measure(r, i, i, "h", 1, None) for i, r in enumerate(ranks)]
    merged = combine(ranks, measures, DistributedInfo(2, 1, 2, "gloo", "ddp", "bench"))
    assert [s.seconds for s in merged.steps] == [1.5, 2.0]  # the slowest rank's
    assert [s.samples for s in merged.steps] == [8, 8]  # every rank's work
    assert merged.throughput["train"].samples_per_s == pytest.approx(16 / 3.5)
    assert merged.phase("train").cpu_peak_rss_bytes == 300
    assert merged.peak_flops == 2000.0  # the sum of the ranks' peaks
    assert merged.mfu == pytest.approx(10.0 * 200 / 3.5 / 2000.0) and merged.mfu_note == ""
    assert [m.step_seconds for m in merged.distributed.ranks] == [(1.0, 2.0), (1.5, 1.0)]


def test_a_rank_takes_the_hosts_peak_without_probing_again():
    """On CUDA each rank's GPU has the host's per-device peak (the sum: world size x it); on the CPU the ranks
    share the cores the host's peak was measured on, each its threads' share (the sum: the host's peak)."""
    from bench.core.config import BenchConfig
    from bench.host.launch import rank_peak

    gpu = BenchConfig(device="cuda", peak_flops=989.4e12, peak_source="datasheet: H200", peak_threads=0)
    assert rank_peak(gpu, 1) == gpu
    cpu = BenchConfig(peak_flops=100e9, peak_source="measured: probe", peak_threads=2)
    mine = rank_peak(cpu, 1)
    assert mine.peak_flops == 50e9 and mine.peak_source == "1/2 threads of the host's peak (measured: probe)"
    assert rank_peak(cpu, 2) == cpu and rank_peak(BenchConfig(), 1) == BenchConfig()


def test_a_distributed_run_is_a_series_of_its_own():
    """A distributed row and its one-process reference share the strategy's name but are not repeats of each
    other: the report names them apart and neither averages them nor compares them as one entry."""
    from bench.compare.sources import source_from_results
    from bench.results import verdicts
    from bench.results.schema import DistributedInfo, Provenance, RunResult

    prov = Provenance(0, "cpu", "cpu", 1, "fp32", "", "", "", None, "p", None, None, {})
    one = RunResult("all-layers", "passed", prov)
    spread = RunResult("all-layers", "passed", prov, distributed=DistributedInfo(2, 1, 2, "gloo", "ddp", "bench"))
    assert (one.series, spread.series) == ("all-layers", "all-layers [ddp x2]")
    assert not verdicts.has_repeats([one, spread]) and verdicts.has_repeats([one, spread, one])
    assert [e.key for e in source_from_results("r.json", [one, spread]).entries] == ["all-layers",
                                                                                    "all-layers [ddp x2]"]


def test_a_failed_job_names_the_rank_that_failed_first(tmp_path):
    from types import SimpleNamespace

    from bench.core.config import BenchConfig, LaunchSettings
    from bench.host.launch import RANKS_DIR, _job_failed
    from bench.results.schema import ErrorInfo
    from bench.results.store import write_json_atomic

    config = BenchConfig(out_dir=tmp_path, launch=LaunchSettings(nproc_per_node=3))
    write_json_atomic(tmp_path / RANKS_DIR / "rank-0.json",
                      {"type": "RuntimeError", "message": "[gloo] Timed out waiting 5000ms for recv operation"})
    write_json_atomic(tmp_path / RANKS_DIR / "rank-2.json", {"type": "ValueError", "message": "bad data"})
    row = _job_failed(config, "s", tmp_path, {0: SimpleNamespace(), 2: SimpleNamespace()}, 1.0)
    assert row.error.message.startswith("rank 2 of 3: bad data; then rank 0: RuntimeError: [gloo] Timed out")
    assert row.error.message.endswith("; rank 1 stopped by the launcher") and row.error.type == "ValueError"
    died = SimpleNamespace(exitcode=-9, signal_name=lambda: "SIGKILL", error_file_data={})
    row = _job_failed(config, "s", tmp_path / "other", {1: died}, 1.0)
    assert row.error.summary == ("ProcessDied: rank 1 of 3: its process was killed by SIGKILL (often the kernel's "
                                 "out-of-memory killer) before it gave an error; ranks 0, 2 stopped by the launcher")
    (tmp_path / RANKS_DIR / "rank-2.json").unlink()
    row = _job_failed(config, "s", tmp_path, {0: SimpleNamespace()}, 1.0)
    assert row.error.message.startswith("ranks 1, 2 of 3 gave no error and did not answer (hung or died): rank 0 "
                                        "waited in a collective until --dist-timeout 300 s")
    assert isinstance(row.error, ErrorInfo)


def test_launch_options_are_checked(monkeypatch, tmp_path, capsys):
    for args, message in ((["--nnodes", "2", "--nproc-per-node", "2"], "give --rdzv-endpoint HOST:PORT"),
                          (["--nnodes", "2", "--node-rank", "2", "--nproc-per-node", "1", "--rdzv-endpoint", "h:1"],
                           "--node-rank 2: must be 0 to 1"),
                          (["--nproc-per-node", "-1"], "--nproc-per-node must be >= 0")):
        assert main(["run", "-s", "all-layers", "--out", str(tmp_path), *args]) == 2
        assert message in capsys.readouterr().err
    for key, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
    assert main(["run", "-s", "all-layers", "--nproc-per-node", "2", "--out", str(tmp_path)]) == 2
    assert "already rank 1 of a torch.distributed job of 2" in capsys.readouterr().err


def test_the_launchers_signal_handlers_are_put_back():
    """The elastic launcher installs its own SIGINT/SIGTERM handlers and leaves them: after a job the host's are
    back, a Ctrl-C the launcher turned into its ``SignalException`` is a ``KeyboardInterrupt`` again, and a
    SIGTERM goes to the host's handler (``timeout`` or a scheduler ending bench ends it, as outside a job)."""
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException

    from bench.host.launch import launcher_signals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), launcher_signals():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SignalException("stopped", sigval=signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    seen: list[int] = []  # a SIGTERM the launcher caught reaches the host's own handler (by default: the end)
    host = signal.signal(signal.SIGTERM, lambda sig, frame: seen.append(sig))
    try:
        with pytest.raises(SignalException), launcher_signals():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise SignalException("stopped", sigval=signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, host)
    assert seen == [signal.SIGTERM]


def test_parallel_must_be_ddp_or_fsdp():
    from bench.training.classify import TrainingConfig
    from bench.training.sft_recipe import SftConfig

    for cls in (TrainingConfig, SftConfig):
        with pytest.raises(ValueError, match="parallel must be one of ddp, fsdp"):
            cls(parallel="zero3")


# -------------------------------------------------------------------------------------------------
# Jobs through the elastic launcher (gloo, 2 ranks, one thread each).
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exact_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny BERT without dropout: training is deterministic, so runs can be compared number for number."""
    from bench.testing import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("exact-bert") / "bert", dropout=0.0)


def _params(result: dict, out: Path) -> dict:
    import torch

    return torch.load(out / result["run_dir"] / "params.pt")


def _same_training(one: dict, other: dict, out: Path) -> None:
    assert other["extra"]["train_losses"] == pytest.approx(one["extra"]["train_losses"], rel=TOLERANCE, abs=TOLERANCE)
    mine, theirs = _params(one, out), _params(other, out)
    assert mine.keys() == theirs.keys()
    for name, value in mine.items():
        assert (value - theirs[name]).abs().max().item() <= TOLERANCE, name


def test_ddp_and_fsdp_train_as_one_process(exact_bert, sentiment_csv, tmp_path, monkeypatch, capsys):
    """all-layers in DDP, last-layers training every layer in FSDP, both accumulating two micro-batches a step
    (the ranks reduce once a step): each after its one-process reference, all in one results file."""
    monkeypatch.setenv("BENCH_TEST_SAVE_PARAMS", "1")
    out = tmp_path / "out"
    code = main(["run", "-s", "all-layers", "-s", "last-layers", "-o", "last-layers.train_layers=all",
                 "-o", "last-layers.parallel=fsdp", "--lr", "1e-3", "--model", str(exact_bert),
                 "--dataset", str(sentiment_csv), "--epochs", "2", "--batch-size", "4", "--grad-accum", "2",
                 "--train-samples", "0",
                 "--precision", "fp32", "--nproc-per-node", "2", "--no-isolate", "--plugins-dir", str(PROBE),
                 "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    rows = read_results(out)["results"]
    assert [(r["strategy"], (r["distributed"] or {}).get("parallel")) for r in rows] == [
        ("all-layers", None), ("all-layers", "ddp"), ("last-layers", None), ("last-layers", "fsdp")]
    for one, spread in ((rows[0], rows[1]), (rows[2], rows[3])):
        assert len(one["extra"]["train_losses"]) == 20  # 76 examples, 19 micro-batches of 4: 10 steps an epoch
        _same_training(one, spread, out)
        assert spread["metrics"]["test_accuracy"] == one["metrics"]["test_accuracy"]  # counts reduced exactly
        assert spread["metrics"]["test_loss"] == pytest.approx(one["metrics"]["test_loss"], rel=TOLERANCE)
        d = spread["distributed"]
        assert (d["world_size"], d["backend"], d["launcher"], d["batch_size_is"]) == (2, "gloo", "bench", "global")
        assert [r["rank"] for r in d["ranks"]] == [0, 1] and all(r["threads"] >= 1 for r in d["ranks"])
        for rank in d["ranks"]:  # every rank's own memory, steps and parameter bytes
            train = next(p for p in rank["phases"] if p["name"] == "train")
            assert train["cpu_peak_rss_bytes"] > 0
            assert len(rank["step_seconds"]) == len(spread["steps"])
        steps = [s["samples"] for s in spread["steps"]]
        assert steps == [s["samples"] for s in one["steps"]]  # the same global batch per step
        assert spread["outcomes"] == one["outcomes"]  # every test example's outcome, each from its rank
        host_peak, host_threads = one["peak_flops"], one["provenance"]["settings"]["peak_threads"]
        assert host_peak == read_results(out)["machine"]["peak"]["flops"]  # one peak, settled by the host
        for rank in d["ranks"]:  # not probed again: the host's, a CPU rank's share by its threads
            assert rank["peak_flops"] == pytest.approx(host_peak * rank["threads"] / host_threads)
        assert spread["peak_flops"] == pytest.approx(sum(rank["peak_flops"] for rank in d["ranks"]))
        assert spread["peak_flops_source"].startswith("sum of 2 ranks' peaks")
    full = rows[1]["distributed"]["ranks"][0]["params"]
    shard = rows[3]["distributed"]["ranks"][0]["params"]
    assert shard["param_bytes"] < full["param_bytes"] and shard["optimizer_state_bytes"] < full["optimizer_state_bytes"]
    assert rows[3]["techniques"]["cast_frozen"]["on"] is False or rows[3]["provenance"]["precision"] == "fp32"
    from bench.results.report import distributed_section
    from bench.results.store import load_results

    section = distributed_section(load_results(out / "results.json").results)
    assert [row[2] for row in section.rows] == ["1 (reference)", "2 (gloo)", "1 (reference)", "2 (gloo)"]
    assert section.rows[1][-1].endswith("%") and section.rows[1][-2].endswith("x")  # scaling efficiency, speed-up


def test_sft_in_fsdp_trains_as_one_process_with_less_memory_per_rank(tmp_path, monkeypatch, capsys):
    from bench.testing import default_assets

    model, data = default_assets("causal-lm")
    monkeypatch.setenv("BENCH_TEST_SAVE_PARAMS", "1")
    out = tmp_path / "out"
    code = main(["run", "-s", "sft", "--parallel", "fsdp", "--model", str(model), "--dataset", str(data),
                 "--max-steps", "4", "--batch-size", "8", "--train-samples", "48", "--eval-samples", "12",
                 "--precision", "fp32", "--nproc-per-node", "2", "--no-isolate", "--plugins-dir", str(PROBE),
                 "--out", str(out), "-q", "-p", "no:profiler"])
    assert code == 0, capsys.readouterr().err
    one, spread = read_results(out)["results"]
    _same_training(one, spread, out)  # losses are means over response tokens of every rank's examples
    for key in ("eval_loss", "exact_match_after", "exact_match_before"):
        assert spread["metrics"][key] == pytest.approx(one["metrics"][key], rel=TOLERANCE)
    held = [r["params"]["param_bytes"] + r["params"]["grad_bytes"] + r["params"]["optimizer_state_bytes"]
            for r in spread["distributed"]["ranks"]]
    whole = one["params"]["param_bytes"] + one["params"]["grad_bytes"] + one["params"]["optimizer_state_bytes"]
    assert max(held) < 0.6 * whole and sum(held) >= whole  # about half each, nothing lost
    generations = [json.loads(line) for line in (out / spread["run_dir"] / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == spread["extra"]["data"]["test"]  # every rank's answers, written once


def test_a_failing_rank_fails_its_row_and_the_next_strategies_run(tiny_bert, sentiment_csv, tmp_path, monkeypatch,
                                                                  capsys):
    """all-layers: rank 1 raises after two training forwards; last-layers: rank 1 hangs (the collective timeout
    ends the job); lora still runs."""
    monkeypatch.setenv("BENCH_TEST_FAIL", "all-layers:1:raise:2,last-layers:1:hang:0")
    out = tmp_path / "out"
    code = main(["run", "-s", "all-layers", "-s", "last-layers", "-s", "lora", "--model", str(tiny_bert),
                 "--dataset", str(sentiment_csv), "--epochs", "1", "--batch-size", "8", "--nproc-per-node", "2",
                 "--no-scaling-reference", "--dist-timeout", "6", "--plugins-dir", str(PROBE), "--out", str(out),
                 "-q", "-p", "no:profiler"])
    assert code == 1
    raised, hung, lora = read_results(out)["results"]
    assert raised["status"] == "failed" and raised["error"]["type"] == "ValueError"
    assert raised["error"]["message"] == "rank 1 of 2: injected failure on rank 1; rank 0 stopped by the launcher"
    assert "injected failure" in raised["error"]["traceback"]
    assert hung["status"] == "failed"
    assert hung["error"]["message"].startswith("rank 1 of 2 gave no error and did not answer (hung or died)")
    assert lora["status"] == "passed" and lora["distributed"]["world_size"] == 2
    assert "Failures" in capsys.readouterr().out


def test_bench_run_under_an_outer_launcher_runs_as_one_rank(tiny_bert, sentiment_csv, tmp_path):
    """torch's elastic launcher runs ``bench run`` twice, as ``torchrun -m bench run`` would: each process is a
    rank; a strategy with a parallel option runs on both, one without it on rank 0; rank 0 writes the file."""
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from bench.host.launch import _start_method, launcher_signals  # the forkserver of a test before: fast

    out = tmp_path / "out"
    args = ["run", "-s", "all-layers", "-s", "feature-extraction", "--model", str(tiny_bert), "--dataset",
            str(sentiment_csv), "--epochs", "1", "--batch-size", "8", "--repeats", "2", "--out", str(out), "-q",
            "-p", "no:profiler"]
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id=uuid.uuid4().hex, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method=_start_method())
    with launcher_signals():
        codes = elastic_launch(config, bench_as_a_rank)(dict(os.environ), args)
    assert codes == {0: 0, 1: 0}
    results = read_results(out)
    rows = results["results"]
    assert [(r["strategy"], r["status"], r["repeat"], r["provenance"]["seed"]) for r in rows] == [
        ("all-layers", "passed", 0, 0), ("feature-extraction", "passed", 0, 0),
        ("all-layers", "passed", 1, 1), ("feature-extraction", "passed", 1, 1)]  # repeats interleaved
    assert rows[0]["distributed"]["launcher"] == "outer" and rows[0]["distributed"]["world_size"] == 2
    assert rows[1]["distributed"] is None
    peak = results["machine"]["peak"]["flops"]  # rank 0's, taken by rank 1: each rank's peak is it
    assert [r["peak_flops"] for r in rows[0]["distributed"]["ranks"]] == [peak, peak]
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["all-layers-1", "all-layers-2", "feature-extraction-1",
                                                                "feature-extraction-2"]
