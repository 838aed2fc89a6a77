"""Every hook in bench/hookspecs.py, called when and where its docstring says: one observer plugin
implements them all and logs each call with its process id; and, per hook, a recording plugin
(tests/hook_recorder.py) checks it is called with every argument its spec documents."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import dedent, read_results, write_toy

from bench.host.cli import main

OBSERVER = '''
import json
import os

from bench import UsageError
from bench import hookimpl
from bench.results.report import Section


def log(*event):
    with open(os.environ["HOOK_LOG"], "a") as fh:
        fh.write(json.dumps([os.getpid(), *event]) + "\\n")


@hookimpl
def bench_addoption(parser, pluginmanager):
    parser.addoption("--observer-tag", type=str, default="none", help="a tag the observer logs")
    log("addoption", type(pluginmanager).__name__)


@hookimpl
def bench_configure(config):
    if config.getoption("observer_tag") == "bad":
        raise UsageError("--observer-tag bad: not allowed; use any other tag")
    log("configure", config.getoption("observer_tag"))


@hookimpl
def bench_unconfigure(config):
    log("unconfigure")


class OneStepProfiler:
    window_steps = 1

    def start(self):
        log("profiler.start")

    def step(self):
        log("profiler.step")

    def stop(self):
        log("profiler.stop")


@hookimpl
def bench_make_profiler(run):
    log("make_profiler", run.strategy.name)
    return OneStepProfiler()


@hookimpl(wrapper=True)
def bench_run_strategy(run):
    log("run_strategy.before", run.strategy.name)
    output = yield
    log("run_strategy.after", output.metrics["test_accuracy"])
    return output


@hookimpl
def bench_run_finished(run, result):
    (run.out_dir / "observer.txt").write_text(result.status)
    log("run_finished", result.status)


@hookimpl(tryfirst=True)
def bench_generate_machine_info():
    log("generate_machine_info")
    return {"observer": True}


@hookimpl
def bench_update_machine_info(config, machine_info):
    machine_info["node"] = "test-node"
    log("update_machine_info")


@hookimpl
def bench_result_ready(config, result):
    log("result_ready", result.strategy, result.status)


@hookimpl
def bench_report_sections(config, results):
    log("report_sections", len(results))
    return [Section("Observer", ("strategy", "steps"), tuple((r.strategy, len(r.steps)) for r in results))]


@hookimpl
def bench_terminal_summary(config, results, write):
    write(f"observer saw {len(results)} result(s)")
'''

RUN_HOOKS = ["make_profiler", "run_strategy.before", "profiler.start", "profiler.step", "profiler.stop",
             "run_strategy.after", "run_finished"]


@pytest.fixture
def observed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    folder = tmp_path / "observed"
    write_toy(folder, "toy_a", "toy-a")
    (folder / "observer.py").write_text(OBSERVER)
    log = tmp_path / "hooks.jsonl"
    monkeypatch.setenv("HOOK_LOG", str(log))
    return folder, log


def events(log: Path) -> list[list]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_every_hook_in_one_in_process_run(observed, tmp_path, capsys):
    folder, log = observed
    out = tmp_path / "out"
    assert main(["run", "--plugins-dir", str(folder), "-s", "toy-a", "--no-isolate", "--observer-tag", "x",
                 "--warmup-steps", "1", "--out", str(out)]) == 0
    names = [e[1] for e in events(log)]
    assert names == ["addoption", "configure", "generate_machine_info", "update_machine_info", *RUN_HOOKS,
                     "result_ready", "report_sections", "unconfigure"]
    assert {e[0] for e in events(log)} == {os.getpid()}
    assert events(log)[0][2] == "PluginHost" and events(log)[1][2] == "x"
    data = read_results(out)
    peak = data["machine"].pop("peak")  # the host's one peak for every row, after the hooks
    assert peak["flops"] > 0 and peak["precision"] == "fp32"
    assert data["machine"] == {"observer": True, "node": "test-node"}  # tryfirst: first result wins
    assert [s["kind"] for s in data["results"][0]["steps"]][:3] == ["warmup", "profiled", "timed"]
    assert (out / "runs" / "toy-a-1" / "observer.txt").read_text() == "passed"
    text = capsys.readouterr().out
    assert "Observer\n" in text and "Task metrics" in text  # own section next to the built-in ones
    assert "observer saw 1 result(s)" in text


def test_run_hooks_are_called_in_the_run_process(observed, tmp_path):
    folder, log = observed
    assert main(["run", "--plugins-dir", str(folder), "-s", "toy-a", "--observer-tag", "iso",
                 "--out", str(tmp_path / "out")]) == 0
    calls = events(log)
    host = os.getpid()
    child = {e[0] for e in calls if e[1] in RUN_HOOKS}
    assert len(child) == 1 and host not in child
    # the run process sets up as the host does, and unconfigures at the end
    assert [e[1] for e in calls if e[0] in child] == ["addoption", "configure", *RUN_HOOKS, "unconfigure"]
    assert [e[2] for e in calls if e[1] == "configure"] == ["iso", "iso"]  # the option reached the child
    assert [e[1:] for e in calls if e[1] == "result_ready"] == [["result_ready", "toy-a", "passed"]]
    assert next(e[0] for e in calls if e[1] == "result_ready") == host


def test_plugin_option_from_the_config_file_and_configure_errors(observed, tmp_path, capsys):
    folder, log = observed
    Path("bench.toml").write_text(dedent(f"""
        plugins-dir = "{folder}"
        observer-tag = "from-file"
        """))
    assert main(["--trust-config-plugins", "run", "-s", "toy-a", "--no-isolate", "-p", "no:profiler", "--out",
                 str(tmp_path / "o")]) == 0
    assert [e[2] for e in events(log) if e[1] == "configure"] == ["from-file"]
    capsys.readouterr()
    assert main(["--trust-config-plugins", "run", "-s", "toy-a", "--no-isolate", "--observer-tag", "bad", "--out",
                 str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "bench: error: --observer-tag bad: not allowed; use any other tag"


# -------------------------------------------------------------------------------------------------
# One test per hook in bench/host/hookspecs.py: a plugin that implements it is called, with every
# argument its spec documents, each of the documented type (recorded by tests/hook_recorder.py).
# -------------------------------------------------------------------------------------------------


def _documented_types() -> dict[str, object]:
    from collections.abc import Sequence

    from bench.core.config import BenchConfig
    from bench.core.context import RunContext
    from bench.host.options import OptionParser
    from bench.host.plugins import PluginHost
    from bench.results.schema import RunResult

    return {"parser": OptionParser, "pluginmanager": PluginHost, "config": BenchConfig, "run": RunContext,
            "result": RunResult, "machine_info": dict, "results": Sequence, "raw": bool, "write": callable}


def _spec_names() -> list[str]:
    from bench.host import hookspecs

    return sorted(n for n, f in vars(hookspecs).items() if n.startswith("bench_") and callable(f))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, dict]]:
    """One in-process ``bench run`` of a toy strategy with the recorder loaded, then ``bench report``."""
    import hook_recorder

    folder = tmp_path_factory.mktemp("recorded")
    write_toy(folder / "plugins", "toy_a", "toy-a")
    hook_recorder.CALLS.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_PROGRESS", "0")
        mp.delenv("BENCH_PLUGINS", raising=False)
        mp.chdir(folder)
        assert main(["run", "-p", "hook_recorder", "--plugins-dir", str(folder / "plugins"), "-s", "toy-a",
                     "--no-isolate", "-p", "no:profiler", "-q", "--warmup-steps", "1", "--out", str(folder / "out")]) == 0
    return list(hook_recorder.CALLS)


@pytest.mark.parametrize("hook", _spec_names())
def test_hook_is_called_with_its_documented_arguments(hook, recorded):
    import inspect

    from bench.host import hookspecs

    documented = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    calls = [kwargs for name, kwargs in recorded if name == hook]
    assert calls, f"{hook} was never called in a bench run"
    types = _documented_types()
    for kwargs in calls:
        assert list(kwargs) == documented
        for arg, value in kwargs.items():
            expected = types[arg]
            ok = expected(value) if expected is callable else isinstance(value, expected)  # type: ignore[arg-type]
            assert ok, f"{hook}: {arg}={value!r} is not a {expected}"
    if hook == "bench_result_ready":
        assert [kw["result"].strategy for kw in calls] == ["toy-a"]
    if hook in ("bench_report_sections", "bench_terminal_summary"):
        assert [r.strategy for r in calls[0]["results"]] == ["toy-a"]
