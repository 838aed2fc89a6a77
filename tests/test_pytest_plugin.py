"""The pytest plugin: the finetune_bench fixture, its marker and options, and pytest-benchmark's own
outputs (--benchmark-json, autosave/compare/compare-fail, ``pytest-benchmark compare``) on real step times.

Everything runs through pytester on the tiny model: the shipped example file, and small test files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.host.cli import main

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "test_finetune_benchmark.py"
PLUGINS_SLOW = Path(__file__).parent / "plugins_slow"

ONE_TEST = """
import pytest

@pytest.mark.bench_strategy("all-layers")
def test_one(finetune_bench):
    result = finetune_bench()
    assert result.passed
"""


@pytest.fixture(autouse=True)
def _one_thread():
    """The runs happen in this process (pytester, --bench-no-isolate): one torch thread, so a loaded 2-core
    machine slows them by a share instead of stalling two threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_args(tiny_bert, sentiment_csv):
    """Options that make every run small: the tiny model and data, one epoch, in-process, no profiler."""
    return [f"--bench-model={tiny_bert}", f"--bench-dataset={sentiment_csv}", "--bench-option=batch_size=8",
            "--bench-option=max_length=32", "--bench-option=eval_samples=16", "--bench-option=epochs=1",
            "--bench-option=device=cpu", "--bench-option=precision=fp32", "--bench-plugin=no:profiler",
            "--bench-no-isolate", "-p", "no:cacheprovider"]


def timed_steps(results_file: str) -> list[float]:
    data = json.loads(Path(results_file).read_text())
    return [s["seconds"] for s in data["results"][0]["steps"] if s["kind"] == "timed"]


def test_example_file_runs_and_writes_real_step_times(pytester, tiny_args, tmp_path, capsys):
    pytester.makepyfile(test_finetune_benchmark=EXAMPLE.read_text())
    out = tmp_path / "bench.json"
    res = pytester.runpytest(*tiny_args, f"--benchmark-json={out}")
    res.assert_outcomes(passed=3)
    data = json.loads(out.read_text())
    names = sorted(b["name"] for b in data["benchmarks"])
    assert names == ["test_finetune[all-layers]", "test_finetune[last-layers]", "test_head_and_last_block[all-layers]"]
    for b in data["benchmarks"]:
        info = b["extra_info"]
        assert b["options"]["timer"] == "finetune_bench.step_clock"
        # the rounds are exactly the run's timed steps (warm-up excluded), not a re-timing of anything
        steps = timed_steps(info["results_file"])
        assert b["stats"]["rounds"] == len(steps) == info["timed_steps"] > 0
        assert b["stats"]["data"] == pytest.approx(steps, rel=1e-9, abs=1e-12)
        assert b["stats"]["min"] == pytest.approx(min(steps))
        for key in ("accuracy", "samples_per_s", "real_tokens_per_s", "peak_memory_bytes", "params_total",
                    "params_trainable", "metrics", "config"):
            assert info[key] is not None, key
        assert 0.0 <= info["accuracy"] <= 1.0 and info["samples_per_s"] > 0 and info["peak_memory_bytes"] > 0
        assert info["strategy"] in b["name"]
        # the strategy's declared run-to-run noise travels with the file: bench compare's floor for it
        declared = json.loads(Path(info["results_file"]).read_text())["results"][0]["run_to_run_noise_pct"]
        assert info["run_to_run_noise_pct"] == declared == ({"all-layers": 4.0}.get(info["strategy"]))
    partial = next(b for b in data["benchmarks"] if b["name"].startswith("test_head_and_last_block"))
    assert partial["extra_info"]["config"]["train_layers"] == "head+last:1"
    assert partial["extra_info"]["params_trainable"] < partial["extra_info"]["params_total"]
    # pytest-benchmark's own CLI and bench compare both read the file
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test_finetune[all-layers]" in proc.stdout
    capsys.readouterr()
    assert main(["compare", str(out), str(out)]) == 0
    text = capsys.readouterr().out
    assert "test_finetune_benchmark.py::test_finetune[last-layers]" in text
    assert "test_finetune[all-layers]: noise floor 4%, the run-to-run noise its strategy declared" in text


def test_autosave_compare_and_compare_fail_work_unchanged(pytester, tiny_args, monkeypatch):
    """Save a run; compare the same code, then a 10x slower one (the slowdown plugin), with
    --benchmark-compare-fail: pytest-benchmark judges the replayed step times as its own."""
    pytester.makepyfile(test_one=ONE_TEST)
    storage = pytester.path / "storage"
    res = pytester.runpytest(*tiny_args, "--benchmark-autosave", "--benchmark-save-data",
                             f"--benchmark-storage={storage}")
    res.assert_outcomes(passed=1)
    saved = list(storage.rglob("0001_*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["benchmarks"][0]["stats"]["data"]
    res = pytester.runpytest(*tiny_args, f"--benchmark-storage={storage}", "--benchmark-compare=0001",
                             "--benchmark-compare-fail=median:1000%")
    res.assert_outcomes(passed=1)
    assert res.ret == 0
    monkeypatch.setenv("BENCH_SLOWDOWN", "9.0")
    res = pytester.runpytest(*tiny_args, f"--benchmark-storage={storage}", "--benchmark-compare=0001",
                             "--benchmark-compare-fail=median:100%", f"--bench-plugins-dir={PLUGINS_SLOW}")
    assert res.ret != 0
    assert "Performance has regressed" in res.stdout.str() + res.stderr.str()


def test_command_line_selects_strategies_and_parametrizes(pytester, tiny_args):
    pytester.makepyfile(test_cli="""
        def test_any(finetune_bench, benchmark):
            result = finetune_bench()
            assert benchmark.extra_info["strategy"] == result.strategy
    """)
    res = pytester.runpytest(*tiny_args, "--bench-strategy", "last-layers", "--bench-strategy", "all-layers",
                             "--benchmark-disable", "-v")
    res.assert_outcomes(passed=2)
    res.stdout.fnmatch_lines(["*test_any?last-layers? PASSED*", "*test_any?all-layers? PASSED*"])


def test_call_arguments_override_the_marker(pytester, tiny_args):
    pytester.makepyfile(test_call="""
        import pytest

        @pytest.mark.bench_strategy("all-layers", options={"max_length": 16})
        def test_call(finetune_bench):
            result = finetune_bench("last-layers", options={"n_last": 1})
            assert result.strategy == "last-layers"
            assert result.provenance.config["n_last"] == 1
            assert result.provenance.config["max_length"] == 16  # marker over --bench-option
    """)
    pytester.runpytest(*tiny_args, "--benchmark-disable").assert_outcomes(passed=1)


@pytest.mark.slow  # a spawned run process imports torch and transformers again
def test_isolated_run_by_default(pytester, tiny_bert, sentiment_csv):
    """Without --bench-no-isolate the strategy runs in its own process, as with bench run."""
    pytester.makepyfile(test_iso="""
        import os, pytest

        @pytest.mark.bench_strategy("last-layers", options={"epochs": 1, "max_length": 32, "batch_size": 8})
        def test_iso(finetune_bench):
            result = finetune_bench()
            assert result.passed and result.provenance.settings["isolate"] is True
    """)
    res = pytester.runpytest(f"--bench-model={tiny_bert}", f"--bench-dataset={sentiment_csv}",
                             "--bench-plugin=no:profiler", "-p", "no:cacheprovider", "--benchmark-disable")
    res.assert_outcomes(passed=1)


@pytest.mark.parametrize("body, message", [
    ('@pytest.mark.bench_strategy("all-layers", modle="x")\ndef test_x(finetune_bench):\n    finetune_bench()\n',
     "has no keyword 'modle'"),
    ('@pytest.mark.bench_strategy("all-layers", options={"epoch": 1})\ndef test_x(finetune_bench):\n'
     '    finetune_bench()\n', "option 'epoch': not a strategy or bench run option; did you mean 'epochs'?"),
    ('@pytest.mark.bench_strategy("al-layers")\ndef test_x(finetune_bench):\n    finetune_bench()\n',
     "unknown strategy 'al-layers'; did you mean 'all-layers'?"),
])
def test_mistakes_are_named(pytester, tiny_args, body, message):
    pytester.makepyfile(test_bad="import pytest\n\n" + body)
    res = pytester.runpytest(*tiny_args)
    assert res.ret != 0
    assert message in res.stdout.str() + res.stderr.str()


def test_failed_strategy_fails_the_test_with_its_error(pytester, tiny_args, tmp_path):
    missing = tmp_path / "missing.csv"
    pytester.makepyfile(test_fail=ONE_TEST)
    args = [a if not a.startswith("--bench-dataset=") else f"--bench-dataset={missing}" for a in tiny_args]
    res = pytester.runpytest(*args)
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*strategy 'all-layers' failed: DataError: *missing.csv: file not found*"])
    assert "Traceback" not in res.stdout.str()  # bad input: one line, no traceback


IDLE_CHECK = """
import sys

import pytest


def test_plain(request):
    # no harness built, no plugin discovery, no torch: the plugin only declared its options and marker
    assert "bench.host.harness" not in sys.modules and "bench.host.plugins" not in sys.modules
    assert "torch" not in sys.modules
    # and pytest-benchmark's timer was left alone for a test without the fixture
    assert request.node.get_closest_marker("benchmark") is None


@pytest.mark.benchmark(min_rounds=3)
def test_own_benchmark(benchmark, request):
    assert request.node.get_closest_marker("benchmark").kwargs == {"min_rounds": 3}
    benchmark(lambda: None)
"""


def test_plugin_is_idle_without_its_fixture(pytester):
    pytester.makepyfile(test_plain=IDLE_CHECK)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-disable")
    res.assert_outcomes(passed=2)
    assert "bench_strategy" in pytester.runpytest_subprocess("--markers").stdout.str()
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--bench-strategy" in help_text and "--bench-model" in help_text
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--bench-strategy" in help_text and "--bench-model" in help_text
