"""``bench run`` / ``bench report``: isolation, failures as rows, the results file, options, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import dedent, read_results

from bench.host.cli import main
from bench.results.schema import SCHEMA_VERSION
from bench.results.store import load_results


def run(toy_dir: Path, out: Path, *args: str) -> int:
    return main(["run", "--plugins-dir", str(toy_dir), "--out", str(out), *args])


def test_run_in_process_writes_results_and_tables(toy_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(toy_dir, out, "-s", "toy-a", "-s", "toy-b", "--no-isolate", "--warmup-steps", "2",
               "-p", "no:profiler") == 0
    data = read_results(out)
    assert data["schema_version"] == SCHEMA_VERSION
    assert [r["strategy"] for r in data["results"]] == ["toy-a", "toy-b"]
    first = data["results"][0]
    assert first["status"] == "passed"
    kinds = [s["kind"] for s in first["steps"]]
    assert kinds == ["warmup", "warmup"] + ["timed"] * 4
    assert first["throughput"]["train"]["timed_steps"] == 4
    prov = first["provenance"]
    assert prov["seed"] == 0 and prov["device"] == "cpu" and prov["torch"] and prov["transformers"]
    assert prov["plugin"] == "toy_a" and prov["config"] == {"steps": 6, "mode": "ok", "accuracy": 0.5}
    assert data["machine"]["cpu"]["logical_cores"] >= 1
    text = capsys.readouterr().out
    for title in ("Task metrics", "Throughput", "Peak memory per phase", "Parameters", "Wall time per phase"):
        assert title in text


def test_profiler_window_is_apart_from_timed_steps(toy_dir, tmp_path):
    out = tmp_path / "out"
    assert run(toy_dir, out, "-s", "toy-a", "--no-isolate", "--warmup-steps", "1", "-o", "toy-a.steps=8",
               "--profile-warmup", "1", "--profile-active", "2") == 0
    steps = read_results(out)["results"][0]["steps"]
    assert [s["kind"] for s in steps] == ["warmup", "profiled", "profiled", "profiled"] + ["timed"] * 4
    assert (out / "runs" / "toy-a-1" / "profile").is_dir()


def test_raising_strategy_is_a_failed_row_and_others_still_run(toy_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = run(toy_dir, out, "-s", "toy-a", "-s", "toy-b", "-s", "toy-c", "-o", "toy-b.mode=raise", "--no-isolate")
    assert code == 1
    rows = read_results(out)["results"]
    assert [r["status"] for r in rows] == ["passed", "failed", "passed"]
    error = rows[1]["error"]
    assert error["type"] == "ValueError" and "toy failure" in error["message"]
    assert "Traceback" in error["traceback"] and "raise ValueError" in error["traceback"]
    captured = capsys.readouterr().out
    assert "Failures" in captured and "ValueError: toy failure: the data was bad" in captured


def test_killed_run_process_keeps_finished_rows(toy_dir, tmp_path):
    """Isolated processes: the middle one SIGKILLs itself; the file stays valid with every row."""
    out = tmp_path / "out"
    code = run(toy_dir, out, "-s", "toy-a", "-s", "toy-b", "-s", "toy-c", "-o", "toy-b.mode=kill",
               "-p", "no:profiler")
    assert code == 1
    loaded = load_results(out / "results.json")
    assert [r.status for r in loaded.results] == ["passed", "failed", "passed"]
    assert "SIGKILL" in loaded.results[1].error.message
    assert loaded.results[0].metrics["test_accuracy"] == 0.5
    assert not list(out.glob(".results.json.*"))  # no temporary file left behind


def test_results_file_is_saved_after_each_strategy(toy_dir, tmp_path, monkeypatch):
    import bench.host.session as runner

    out = tmp_path / "out"
    seen: list[int] = []
    original = runner.Session.add

    def spy(self, result):
        original(self, result)
        seen.append(len(json.loads(self.path.read_text())["results"]))

    monkeypatch.setattr(runner.Session, "add", spy)
    assert run(toy_dir, out, "-s", "toy-a", "-s", "toy-b", "--no-isolate", "-p", "no:profiler") == 0
    assert seen == [1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-s", "toy-aa"], "unknown strategy 'toy-aa'; did you mean 'toy-a'?"),
        (["-s", "toy-a", "-o", "toy-a.stepz=3"], "strategy 'toy-a' has no option 'stepz'; did you mean 'steps'?"),
        (["-s", "toy-a", "-o", "toy-a.steps=many"], "option 'steps' of strategy 'toy-a': expected int"),
        (["-s", "toy-a", "-o", "toy-z.steps=1"], "unknown strategy 'toy-z'"),
        (["-s", "toy-a", "-o", "steps"], "expected STRATEGY.FIELD=VALUE"),
        (["-s", "toy-a", "--preset", "smok"], "has no such preset"),
        (["-s", "toy-a", "--device", "cuda"], "--device cuda: no CUDA device"),
    ],
)
def test_usage_errors_exit_2_with_one_line(toy_dir, tmp_path, capsys, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert run(toy_dir, tmp_path / "out", "--no-isolate", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("bench: error:")


def test_config_file_then_command_line(toy_dir, tmp_path):
    Path("bench.toml").write_text(dedent(f"""
        plugins-dir = "{toy_dir}"
        strategies = ["toy-a", "toy-b"]
        warmup-steps = 1
        no-isolate = true
        steps = 3

        [strategy.toy-b]
        accuracy = 0.75
        """))
    out = tmp_path / "out"
    assert main(["--trust-config-plugins", "run", "--out", str(out), "-p", "no:profiler"]) == 0
    rows = read_results(out)["results"]
    assert [r["provenance"]["config"]["steps"] for r in rows] == [3, 3]
    assert rows[1]["metrics"]["test_accuracy"] == 0.75
    out2 = tmp_path / "out2"
    assert main(["run", "--out", str(out2), "--steps", "5", "-s", "toy-a", "-p", "no:profiler",
                 "--trust-config-plugins"]) == 0
    assert read_results(out2)["results"][0]["provenance"]["config"]["steps"] == 5


def test_pyproject_tool_bench_and_unknown_key(toy_dir, tmp_path, capsys):
    Path("pyproject.toml").write_text(f'[tool.bench]\nplugins_dir = "{toy_dir}"\nno_isolate = true\nstepps = 3\n')
    assert main(["run", "-s", "toy-a", "--out", str(tmp_path / "o"), "--trust-config-plugins"]) == 2
    assert "unknown key 'stepps'; did you mean 'steps'?" in capsys.readouterr().err


def test_preset_applies_strategy_bundle(toy_dir, tmp_path):
    out = tmp_path / "out"
    assert run(toy_dir, out, "-s", "toy-a", "--preset", "smoke", "--no-isolate", "-p", "no:profiler") == 0
    assert read_results(out)["results"][0]["provenance"]["config"]["steps"] == 3


def test_report_formats_side_by_side_and_plot(toy_dir, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run(toy_dir, first, "-s", "toy-a", "--no-isolate", "-p", "no:profiler") == 0
    assert run(toy_dir, second, "-s", "toy-a", "-o", "toy-a.accuracy=0.9", "--no-isolate", "-p", "no:profiler") == 0
    capsys.readouterr()
    assert main(["report", str(first), str(second / "results.json"), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "### Task metrics" in md and "| first " in md and "| second " in md and "0.9000" in md
    assert main(["report", str(first), "--format", "csv"]) == 0
    assert "# Task metrics" in capsys.readouterr().out
    assert main(["report", str(first), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["strategy"] == "toy-a"
    png = tmp_path / "plot.png"
    assert main(["report", str(first), str(second), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rejects_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "results": []}))
    assert main(["report", str(newer)]) == 2
    assert "upgrade finetune-bench" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json")]) == 2


def test_markdown_sections_end_their_table_before_the_note():
    # GitHub reads a line right after a table as one more row: the note would show inside the table.
    from bench.results.report import Section, render

    text = render([Section("Speed", ("strategy", "samples/s"), (("a", "1.0"),), "timed steps only")], "markdown")
    table_end = text.index("| a ")
    assert text[table_end:].split("\n")[1] == "" and "\n\n*timed steps only*" in text
