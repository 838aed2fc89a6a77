"""Faults and bad input (issue 18): nothing lost, nothing silently wrong, every error one line.

Each test reproduces one defect the reliability pass found, with the command that showed it; each
failed before the fix. The strategies that misbehave on request are ``tests/plugins_faults/faulty.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import dedent, read_results

from bench.host.cli import main

FAULTS = Path(__file__).resolve().parent / "plugins_faults"
ROOT = Path(__file__).resolve().parents[1]


def run(out: Path, *args: str) -> int:
    return main(["run", "--plugins-dir", str(FAULTS), "--out", str(out), "-p", "no:profiler", *args])


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("bench: error: ") and "Traceback" not in err, err
    return err


# -------------------------------------------------------------------------------------------------
# Data lost.
# -------------------------------------------------------------------------------------------------


def test_a_second_run_on_the_same_out_stops_naming_the_holder(tmp_path, capsys):
    """Two `bench run` with the same --out: both said "results written", the file kept the second's rows."""
    from bench.host.runfolders import claim

    out = tmp_path / "out"
    with claim(out, resume=False, command="bench run -s fault-a"):
        assert run(out, "-s", "fault-b", "--no-isolate") == 2
        err = one_line(capsys)
    assert f"--out {out} is in use by another bench run (pid {os.getpid()} on " in err
    assert "bench run -s fault-a" in err and "choose another --out" in err
    assert not (out / "results.json").exists()  # the refused run wrote nothing


def test_an_existing_results_file_is_never_emptied_and_resume_continues(tmp_path, capsys):
    """Reusing an --out folder emptied its results.json at start-up, so an interrupted run's result was gone."""
    out = tmp_path / "out"
    assert run(out, "-s", "fault-a", "-s", "fault-b", "-o", "fault-b.mode=raise", "--no-isolate") == 1
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert run(out, "-s", "fault-a", "--no-isolate") == 2
    err = one_line(capsys)
    assert f"--out {out} is not empty" in err and f"bench run --resume {out}" in err
    assert (out / "results.json").read_bytes() == before
    # --resume alone: the run's own options (recorded in the file), the passed row kept, the failed one run
    # again (plugin options are never taken from the file: given again)
    assert main(["run", "--plugins-dir", str(FAULTS), "-p", "no:profiler", "--resume", str(out)]) == 1
    rows = read_results(out)["results"]
    assert [(r["strategy"], r["status"]) for r in rows] == [("fault-a", "passed"), ("fault-b", "failed")]
    assert rows[0] == json.loads(before)["results"][0]  # kept as it was
    assert main(["run", "--plugins-dir", str(FAULTS), "-p", "no:profiler", "--resume", str(out), "-s", "fault-a",
                 "-s", "fault-b", "--no-isolate"]) == 0
    rows = read_results(out)["results"]
    assert [(r["strategy"], r["status"], r["run_dir"]) for r in rows] == [
        ("fault-a", "passed", "runs/fault-a-1"), ("fault-b", "passed", "runs/fault-b-3")]
    capsys.readouterr()
    assert main(["run", "--plugins-dir", str(FAULTS), "--resume", str(out), "-s", "fault-a",
                 "-o", "fault-a.steps=2", "--no-isolate"]) == 2
    assert "the kept result of 'fault-a' was run with steps=4, this run has steps=2" in one_line(capsys)


def test_resume_keeps_and_reruns_each_repeat_with_its_own_seed(tmp_path, capsys):
    """--repeats N writes one row and run folder per repeat (seed + r): a resume keeps each passed repeat,
    runs the failed or missing ones with their own seed, interleaved as a fresh run would."""
    out = tmp_path / "out"
    assert run(out, "-s", "fault-a", "-s", "fault-b", "-o", "fault-b.mode=raise", "--repeats", "2",
               "--no-isolate") == 1
    rows = read_results(out)["results"]
    assert [(r["strategy"], r["repeat"], r["status"]) for r in rows] == [
        ("fault-a", 0, "passed"), ("fault-b", 0, "failed"), ("fault-a", 1, "passed"), ("fault-b", 1, "failed")]
    capsys.readouterr()
    assert run(out, "--resume", str(out), "-s", "fault-a", "-s", "fault-b", "--repeats", "3", "--no-isolate") == 0
    assert "to run: fault-b (repeat 1), fault-b (repeat 2), fault-a (repeat 3), fault-b (repeat 3)" in \
        capsys.readouterr().err
    rows = read_results(out)["results"]
    assert [(r["strategy"], r["repeat"], r["provenance"]["seed"], r["status"]) for r in rows] == [
        ("fault-a", 0, 0, "passed"), ("fault-a", 1, 1, "passed"), ("fault-b", 0, 0, "passed"),
        ("fault-b", 1, 1, "passed"), ("fault-a", 2, 2, "passed"), ("fault-b", 2, 2, "passed")]
    assert len({r["run_dir"] for r in rows}) == 6  # one folder per repeat, the failed ones' kept apart
    assert run(out, "--resume", str(out), "-s", "fault-a", "--seed", "5", "--no-isolate") == 2
    assert "the kept result of 'fault-a' was run with seed=0, this run has seed=5" in one_line(capsys)


def test_an_unserialisable_extra_fails_its_row_and_keeps_its_metrics(tmp_path):
    """A strategy whose extra was not JSON-serialisable: "ProcessDied: exited with code 1", metrics lost."""
    out = tmp_path / "out"
    assert run(out, "-s", "fault-a", "-o", "fault-a.mode=bad-extra", "--no-isolate") == 1
    (row,) = read_results(out)["results"]
    assert row["status"] == "failed" and row["error"]["type"] == "UnserialisableOutput"
    assert "StrategyOutput.extra['handle'] (object" in row["error"]["message"]
    assert row["metrics"] == {"test_accuracy": 0.5, "test_macro_f1": 0.25} and row["extra"] == {"note": "kept"}


def test_timeout_ends_a_hanging_strategy_with_a_timeout_row(tmp_path):
    """There was no per-strategy timeout: Ctrl-C was the only way out of a hang."""
    out = tmp_path / "out"
    assert run(out, "-s", "fault-a", "-o", "fault-a.mode=hang", "--timeout", "6") == 1
    (row,) = read_results(out)["results"]
    assert row["error"]["type"] == "timeout"
    assert row["error"]["message"].startswith("ran longer than --timeout 6 s in phase '")  # 'train' unless slow
    assert row["error"]["message"].endswith("; stopped it and every process it started")


def test_timeout_comes_from_the_config_file_too(tmp_path, capsys):
    Path("bench.toml").write_text("timeout = 0.5\nno-isolate = true\n")
    assert run(tmp_path / "out", "-s", "fault-a") == 2
    assert "--timeout applies to isolated run processes; drop --no-isolate" in one_line(capsys)


def test_max_memory_caps_a_cpu_run_with_an_out_of_memory_row(tmp_path):
    out = tmp_path / "out"
    assert run(out, "-s", "fault-a", "-o", "fault-a.mode=alloc", "--max-memory", "1536MiB", "--device", "cpu") == 1
    (row,) = read_results(out)["results"]
    assert row["error"]["type"] == "out of memory", row["error"]
    message = row["error"]["message"]
    assert "in phase 'train'" in message and "--max-memory 1.50 GiB" in message


def test_cuda_out_of_memory_is_an_out_of_memory_row_naming_phase_and_bytes(tmp_path):
    out = tmp_path / "out"
    assert run(out, "-s", "fault-a", "-o", "fault-a.mode=cuda-oom", "--no-isolate") == 1
    (row,) = read_results(out)["results"]
    assert row["error"]["type"] == "out of memory"
    message = row["error"]["message"]
    assert message.startswith("CUDA out of memory in phase 'train'") and "tried to allocate 2.00 GiB more" in message


def _wait_for_phase(run_dir: Path, phase: str, proc: subprocess.Popen[str], limit_s: float = 120) -> int:
    """The pid of the run process once its status file says ``phase``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            status = json.loads((run_dir / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        if status.get("phase") == phase:
            return int(status["pid"])
        time.sleep(0.2)
    raise AssertionError(f"the run never reached phase {phase!r}")


def _gone(pid: int) -> bool:
    """Not in the process table, or only as a zombie (dead, waiting for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _start_hanging_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    out = tmp_path / "out"
    env = {**os.environ, "BENCH_PROGRESS": "0"}
    command = [sys.executable, "-m", "bench", "run", "--plugins-dir", str(FAULTS), "-p", "no:profiler", "-q",
               "--out", str(out), "-s", "fault-a", "-o", "fault-a.mode=hang"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), out


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and shells")
def test_sigterm_from_a_parent_shell_keeps_results_and_leaves_no_process(tmp_path):
    """SIGTERM to `bench run` alone (as a CI runner or a job scheduler sends it): exit 143 with no message
    and no row for the running strategy, and the run process ran on, orphaned."""
    out = tmp_path / "out"
    script = dedent(f"""
        {sys.executable} -m bench run --plugins-dir {FAULTS} -p no:profiler -q --out {out} -s fault-a \\
            -s fault-b -o fault-b.mode=hang -s fault-c >{tmp_path}/stdout 2>{tmp_path}/stderr &
        bench=$!
        for i in $(seq 1 900); do
            grep -q '"train"' {out}/runs/fault-b-1/status.json 2>/dev/null && break
            sleep 0.2
        done
        child=$(sed 's/.*"pid": \\([0-9]*\\).*/\\1/' {out}/runs/fault-b-1/status.json)
        kill -TERM $bench
        wait $bench
        echo "exit $? child $child"
        """)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BENCH_PROGRESS": "0"})
    words = done.stdout.split()
    assert words[:2] == ["exit", "143"], (done, (tmp_path / "stderr").read_text())
    child = int(words[3])
    assert _gone(child), f"run process {child} is still in the process table"
    assert (tmp_path / "stderr").read_text().strip().splitlines() == [
        f"bench: interrupted (SIGTERM); 1 finished result(s) kept in {out / 'results.json'} (continue with "
        f"`bench run --resume {out}`)"]
    rows = read_results(out)["results"]
    assert [(r["strategy"], r["status"]) for r in rows] == [("fault-a", "passed"), ("fault-b", "failed")]
    assert (rows[1]["error"]["type"], rows[1]["error"]["message"]) == ("interrupted",
                                                                       "stopped by SIGTERM in phase 'train'")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_run_process_dies_with_bench_run(tmp_path):
    """A `bench run` killed outright (SIGKILL: no handler runs) takes its run process with it."""
    proc, out = _start_hanging_run(tmp_path)
    try:
        child = _wait_for_phase(out / "runs" / "fault-a-1", "train", proc)
        proc.kill()
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _gone(child), f"run process {child} was orphaned"


# -------------------------------------------------------------------------------------------------
# Silently wrong.
# -------------------------------------------------------------------------------------------------


def test_a_corrupt_feature_cache_is_noticed_and_rebuilt(tiny_bert, sentiment_csv, tmp_path, monkeypatch):
    """With bytes flipped in a cached .npy, feature-extraction "passed" with accuracy 0.531 instead of 0.625."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    args = ["run", "-s", "feature-extraction", "--model", str(tiny_bert), "--dataset", str(sentiment_csv),
            "--train-samples", "0", "--no-isolate", "-p", "no:profiler"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    cached = sorted((tmp_path / "cache" / "features").glob("test-*.npy"))
    assert len(cached) == 1 and cached[0].with_name(cached[0].name + ".sha256.json").is_file()
    data = bytearray(cached[0].read_bytes())
    for i in range(200, len(data), 7):  # past the .npy header: the numbers themselves
        data[i] ^= 0x5A
    cached[0].write_bytes(bytes(data))
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = (read_results(tmp_path / x)["results"][0] for x in "ab")
    assert b["extra"]["features_cached"] == {"train": True, "validation": True, "test": False}
    assert b["metrics"]["test_accuracy"] == a["metrics"]["test_accuracy"]


def test_the_derived_model_folder_is_verified_by_checksum_and_rebuilt(tmp_path, monkeypatch):
    """The de-quantised SmolLM2 folder was checked by size only: 4 MiB overwritten, sft "passed", loss NaN."""
    from bench.data import assets

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    built = []

    def dequantise(gguf: Path, out_dir: Path) -> None:
        built.append(out_dir)
        (out_dir / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(assets, "_dequantise_gguf", dequantise)
    monkeypatch.setattr(assets, "smollm2_gguf_path", lambda: tmp_path / "model.gguf")
    folder = assets.smollm2_model_dir()
    assert len(built) == 1 and assets.smollm2_model_dir() == folder and len(built) == 1
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100:200] = bytes(100)  # same size, other bytes
    weights.write_bytes(bytes(data))
    assert "model.safetensors has sha256" in assets._derived_problem(folder, assets.default_specs()["smollm2"].sha256)
    assert assets.smollm2_model_dir() == folder and len(built) == 2  # rebuilt
    assert weights.read_bytes() == bytes(range(256)) * 64


@pytest.mark.parametrize(("option", "message"), [
    ("fault-a.accuracy=nan", "the primary metric 'test_accuracy' is nan, not a finite number"),
    ("fault-a.accuracy=inf", "the primary metric 'test_accuracy' is inf, not a finite number"),
    ("fault-a.mode=no-primary", "the primary metric 'test_accuracy' is missing (metrics: test_macro_f1)"),
])
def test_a_nan_inf_or_missing_primary_metric_fails_the_row(tmp_path, option, message):
    """A NaN or missing metric counted as a pass."""
    out = tmp_path / "out"
    assert run(out, "-s", "fault-a", "-o", option, "-s", "fault-b", "--no-isolate") == 1
    rows = read_results(out)["results"]
    assert [r["status"] for r in rows] == ["failed", "passed"]
    assert rows[0]["error"]["type"] == "InvalidMetric" and rows[0]["error"]["message"].startswith(message)
    assert rows[0]["metrics"]["test_macro_f1"] == 0.25  # the rest is kept


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".tsv"])
def test_float_labels_are_refused_in_every_format(tiny_bert, tmp_path, capsys, suffix):
    """A CSV whose labels are floats became 87 classes and accuracy 0.0 (JSONL was refused)."""
    data = tmp_path / f"scores{suffix}"
    rows = [(f"review {i} {'good' if i % 2 else 'bad'}", f"{i % 7 / 7:.3f}") for i in range(40)]
    if suffix == ".jsonl":
        data.write_text("".join(json.dumps({"text": t, "label": float(v)}) + "\n" for t, v in rows))
    else:
        sep = "\t" if suffix == ".tsv" else ","
        data.write_text(f"text{sep}label\n" + "".join(f"{t}{sep}{v}\n" for t, v in rows))
    assert main(["run", "--model", str(tiny_bert), "--dataset", str(data), "-s", "all-layers", "--no-isolate",
                 "--out", str(tmp_path / "out")]) == 2
    err = one_line(capsys)
    assert str(data) in err and "has label" in err and "labels must be strings or integers" in err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_whole_number_labels_are_one_class_in_every_spelling(tmp_path):
    from bench.data.classification import load_classification_file

    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"t{i},{v}\n" for i, v in enumerate(["1", "1.0", "0", "0.0", "+1"] * 4)))
    assert load_classification_file(data).label_map == {"0": 0, "1": 1}


def test_compare_refuses_to_pair_different_strategies(tmp_path, capsys):
    """`bench compare` of two runs of different strategies paired them and reported two regressions."""
    assert run(tmp_path / "a", "-s", "fault-a", "--no-isolate") == 0
    assert run(tmp_path / "b", "-s", "fault-b", "--no-isolate") == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = one_line(capsys)
    assert "no benchmark in common: the baseline has fault-a, the current fault-b" in err


def test_compare_with_a_failed_baseline_is_missing_not_no_regression(tmp_path, capsys):
    """When the baseline's strategy failed it said "no regression (0 benchmarks compared)", exit 0."""
    assert run(tmp_path / "a", "-s", "fault-a", "-o", "fault-a.mode=raise", "--no-isolate") == 1
    assert run(tmp_path / "b", "-s", "fault-a", "--no-isolate") == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "no regression" not in out
    assert "result: FAIL: 1 missing: fault-a" in out
    assert "MISSING: fault-a: failed in the baseline: ValueError: fault: the data was bad" in out
    assert main(["compare", str(tmp_path / "b"), str(tmp_path / "a"), "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["missing"][0]["why"].startswith("failed in the current run")


def test_abbreviated_options_are_refused(tmp_path, capsys):
    """`--epoch 7` was accepted as `--epochs 7`."""
    assert main(["run", "-s", "all-layers", "--epoch", "7", "--out", str(tmp_path / "o")]) == 2
    assert one_line(capsys) == "bench: error: unrecognized arguments: --epoch 7; did you mean '--epochs'?"
    assert main(["compare", "a", "b", "--fail", "throughput=-1%"]) == 2
    assert "unrecognized arguments: --fail" in one_line(capsys)
    assert main(["report", "x", "--form", "json"]) == 2
    assert "unrecognized arguments: --form" in one_line(capsys)


def test_no_argument_parser_in_the_repository_allows_abbreviations():
    import ast

    loose = []
    for path in [*ROOT.glob("bench/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("plugins/*/src/**/*.py"),
                 *ROOT.glob("tests/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("argparse.ArgumentParser") and \
                    not any(k.arg == "allow_abbrev" and ast.unparse(k.value) == "False" for k in node.keywords):
                loose.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not loose, "argparse.ArgumentParser without allow_abbrev=False: " + ", ".join(loose)


# -------------------------------------------------------------------------------------------------
# Tracebacks, or errors that named no culprit: one line, exit 2, before anything runs.
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["-s", "all-layers", "--batch-size", "0"], "strategy 'all-layers': --batch-size 0: must be >= 1"),
    (["-s", "all-layers", "--lr", "-1"], "strategy 'all-layers': --lr -1.0: must be > 0"),
    (["-s", "all-layers", "--warmup-ratio", "1.5"], "strategy 'all-layers': --warmup-ratio 1.5: must be >= 0 and <= 1"),
    (["-s", "sft", "--test-fraction", "0"], "strategy 'sft': --test-fraction 0.0: must be > 0 and < 1"),
    (["-s", "lora", "--dropout", "1"], "strategy 'lora': --dropout 1.0: must be >= 0 and < 1"),
    (["-s", "feature-extraction", "--c-grid", "1,0"],
     "strategy 'feature-extraction': --c-grid 1.0,0.0: must be > 0 (item 0.0)"),
    (["-s", "all-layers", "--seed", "-3"], "option --seed: -3 must be >= 0"),
    (["-s", "all-layers", "--warmup-steps", "-1"], "option --warmup-steps: -1 must be >= 0"),
    (["-s", "all-layers", "--max-memory", "lots"], "--max-memory 'lots': expected a size such as 4GiB"),
    (["-s", "all-layers", "-o", "all-layers.batch_size=0"], "strategy 'all-layers': --batch-size 0: must be >= 1"),
])
def test_option_values_are_checked_at_configuration(tmp_path, capsys, args, message):
    """`--batch-size 0` was a ZeroDivisionError, `--lr -1` exit 1 after the run started."""
    out = tmp_path / "out"
    assert main(["run", *args, "--out", str(out), "--device", "cpu"]) == 2
    assert one_line(capsys).startswith(f"bench: error: {message}")
    assert not out.exists()


@pytest.mark.parametrize("case", ["not-utf8", "huge-cell"])
def test_bad_csv_files_are_one_line_naming_file_and_row(tiny_bert, tmp_path, capsys, case):
    """A non-UTF-8 CSV and a CSV with a 1 MB cell: tracebacks naming neither the file nor the row."""
    data = tmp_path / "data.csv"
    good = "".join(f"text {i},{i % 2}\n" for i in range(10))
    if case == "not-utf8":
        data.write_bytes(("text,label\n" + good).encode() + "caf\xe9 au lait,1\n".encode("latin-1"))
        expected = f"{data}: not UTF-8 text: byte 0xe9 at offset"
    else:
        data.write_text("text,label\n" + good + '"' + "x" * 1_000_000 + '",1\n')
        expected = f"{data}: row 12 has a cell over 131,072 characters"
    assert main(["run", "--model", str(tiny_bert), "--dataset", str(data), "-s", "all-layers", "--no-isolate",
                 "--out", str(tmp_path / "out")]) == 2
    assert expected in one_line(capsys)


def test_a_truncated_safetensors_file_is_named_before_anything_runs(tiny_bert, sentiment_csv, tmp_path, capsys):
    """A truncated safetensors file: exit 1, file unnamed."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["run", "--model", str(model), "--dataset", str(sentiment_csv), "-s", "all-layers",
                 "--out", str(tmp_path / "out")]) == 2
    err = one_line(capsys)
    assert f"{weights}: truncated safetensors file:" in err and "its header says" in err
    weights.write_bytes(b"\xff" * 8 + b"junk")
    assert main(["run", "--model", str(model), "-s", "all-layers", "--out", str(tmp_path / "out")]) == 2
    assert f"{weights}: not a valid safetensors file" in one_line(capsys)


@pytest.mark.parametrize(("content", "message"), [
    ({"schema_version": "2.0", "results": []}, "schema_version '2.0' is not a whole number"),
    ({"schema_version": 1, "created_utc": "x", "machine": {}, "results": 5}, "not a valid results file: results: 5 is "
                                                                            "not an array"),
    (7, "not a finetune-bench results file (no schema_version/results keys: a JSON number)"),
    ({"schema_version": 1, "created_utc": "x", "machine": {}, "results": [{"strategy": "a", "status": "done",
                                                                           "provenance": {}}]},
     "not a valid results file: results[0].status: \"done\" is not one of 'passed', 'failed'"),
])
def test_report_on_a_bad_results_file_is_one_line(tmp_path, capsys, content, message):
    """`bench report` on a results file whose schema_version is "2.0" or whose results holds a number."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    assert main(["report", str(bad)]) == 2
    assert one_line(capsys).startswith(f"bench: error: {bad}: {message}")


def test_compare_on_a_binary_file_is_one_line(tmp_path, capsys):
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)))
    assert run(tmp_path / "a", "-s", "fault-a", "--no-isolate") == 0
    capsys.readouterr()
    assert main(["compare", str(binary), str(tmp_path / "a")]) == 2
    assert f"{binary}: not a text file (byte 0x80 at offset 128 is not UTF-8)" in one_line(capsys)


def test_out_that_is_a_file_or_read_only(tmp_path, capsys):
    """A read-only --out folder and an --out that is a file: tracebacks."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert run(a_file, "-s", "fault-a", "--no-isolate") == 2
    assert one_line(capsys) == f"bench: error: --out {a_file}: a file, not a folder; give a folder (it is created " \
                               "when missing)"
    assert run(a_file / "below", "-s", "fault-a", "--no-isolate") == 2
    assert f"--out {a_file / 'below'}: cannot create it (" in one_line(capsys)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    undo = _make_read_only(read_only)
    try:
        assert run(read_only, "-s", "fault-a", "--no-isolate") == 2
        assert f"--out {read_only}: cannot write there (" in one_line(capsys)
    finally:
        undo()


def _make_read_only(folder: Path):  # noqa: ANN202
    """chmod for a user; for root (whom modes do not stop) the immutable attribute, where it can be set."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: no folder is read-only to this process")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unexpected_exceptions_are_one_line_too(tmp_path, capsys, monkeypatch):
    import bench.host.cli as cli

    def broken(*args: object) -> int:
        raise RuntimeError("something broke\nacross lines")

    monkeypatch.setattr(cli, "cmd_list", broken)
    assert main(["list"]) == 3
    err = capsys.readouterr().err.strip()
    assert err == ("bench: internal error: RuntimeError: something broke across lines (a bug in bench or a plugin; "
                   "`bench --debug ...` shows the traceback)")
    with pytest.raises(RuntimeError):
        main(["--debug", "list"])


# -------------------------------------------------------------------------------------------------
# Security: a config file in the working folder runs no code.
# -------------------------------------------------------------------------------------------------


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A bench.toml naming a plugins folder whose plugin leaves a mark when it is imported."""
    folder = tmp_path / "planted"
    folder.mkdir()
    mark = tmp_path / "ran"
    (folder / "evil.py").write_text(f"from pathlib import Path\nPath({str(mark)!r}).write_text('ran')\n")
    (folder / "faulty.py").write_text((FAULTS / "faulty.py").read_text())
    Path("bench.toml").write_text(f'plugins_dir = "{folder}"\nplugins = ["evil_module_name"]\n')
    return mark


@pytest.mark.parametrize("args", [["--version"], ["list"], ["list", "--plugins"], ["report", "RESULTS"],
                                  ["compare", "RESULTS", "RESULTS"], ["assets", "list"]])
def test_commands_other_than_run_never_import_config_plugins(planted, tmp_path, capsys, args):
    """A plugins_dir key in bench.toml imported and ran code for every command, --version and report included."""
    results = tmp_path / "r"
    if "RESULTS" in args:
        (tmp_path / "empty.toml").write_text("")
        assert main(["--config", str(tmp_path / "empty.toml"), "run", "--plugins-dir", str(FAULTS), "-s", "fault-a",
                     "--no-isolate", "--out", str(results)]) == 0
    code = None
    try:
        code = main([str(results) if a == "RESULTS" else a for a in args])
    except SystemExit as exc:  # --version
        code = exc.code
    assert code == 0
    assert not planted.exists()


def test_run_refuses_config_plugins_without_the_opt_in(planted, tmp_path, capsys, monkeypatch):
    assert run(tmp_path / "o", "-s", "fault-a", "--no-isolate") == 2
    err = one_line(capsys)
    assert "names plugins to load" in err and "--trust-config-plugins" in err and "BENCH_TRUST_CONFIG_PLUGINS=1" in err
    assert main(["plan", "-s", "all-layers"]) == 2
    assert not planted.exists()
    monkeypatch.setenv("BENCH_TRUST_CONFIG_PLUGINS", "1")
    Path("bench.toml").write_text(Path("bench.toml").read_text().replace('plugins = ["evil_module_name"]\n', ""))
    assert main(["run", "-s", "fault-a", "--no-isolate", "--out", str(tmp_path / "o2")]) == 0
    assert planted.exists()  # trusted: loaded
