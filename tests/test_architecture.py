"""The architecture holds: layers import downwards only, nothing imports in a circle, plugins use only
the plugin API, every hook goes through pluggy, every command's --help works, and the setup owner
(the Harness) runs configure/unconfigure, quiet mode and run folders the same way for every front end."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import dedent, read_results

from bench.host.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: a module may import its own layer and the layers before it, never one after it.
LAYERS = ("core", "results", "measure", "data", "models", "speed", "training", "compare", "host",
          "pytest_plugin", "testing", "api")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "bench" or len(parts) < 2:
        return None  # bench/__init__ and __main__ are facades over the layers
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _runtime_imports(path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every bench import executed at run time (module level or in a function);
    imports under ``if TYPE_CHECKING:`` are for the type checker only and are skipped."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_checking |= {id(n) for child in node.body for n in ast.walk(child)}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "bench"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                node.module.split(".")[0] == "bench":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((node.lineno, sub if sub in known else node.module))
    return found


def _bench_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (ROOT / "bench").rglob("*.py")}


def test_layers_import_downwards_only():
    modules = _bench_modules()
    wrong = []
    for name, path in modules.items():
        here = _layer(name)
        if here is None:
            continue
        for line, target in _runtime_imports(path, set(modules)):
            there = _layer(target)
            if there is not None and there > here:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[here]}) imports {target} ({LAYERS[there]})")
    assert not wrong, "imports up the layers:\n" + "\n".join(wrong)


def test_no_module_imports_in_a_circle():
    modules = _bench_modules()
    graph = {name: {t for _, t in _runtime_imports(path, set(modules)) if t in modules and t != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_layout_shows_the_layers():
    folders = sorted(p.name for p in (ROOT / "bench").iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert folders == sorted(set(LAYERS) - {"api"})
    loose = sorted(p.name for p in (ROOT / "bench").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "api.py"]


def _plugin_sources() -> list[Path]:
    return sorted([*ROOT.glob("strategies/*.py"), *ROOT.glob("plugins/*/src/*/*.py")])


def test_shipped_plugins_import_only_the_plugin_api():
    wrong = []
    for path in _plugin_sources():
        for line, target in _runtime_imports(path, set()):
            if target != "bench.api":
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "strategies":
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module} (a built-in plugin)")
    assert not wrong, "imports outside bench.api:\n" + "\n".join(wrong)


def test_every_plugin_api_name_is_documented():
    import bench.api

    guide = (ROOT / "docs" / "writing-plugins.md").read_text(encoding="utf-8")
    missing = [n for n in bench.api.__all__ if f"`{n}`" not in guide]
    assert not missing, f"docs/writing-plugins.md does not document: {', '.join(missing)}"
    assert sorted(bench.api.__all__) == sorted(set(bench.api.__all__))
    for name in bench.api.__all__:
        assert hasattr(bench.api, name), name


def test_run_result_fields_section_and_check_strategy_parameters_are_documented():
    import dataclasses
    import inspect

    from bench.api import RunResult, Section
    from bench.testing import check_strategy

    guide = (ROOT / "docs" / "writing-plugins.md").read_text(encoding="utf-8")
    names = [f.name for f in dataclasses.fields(RunResult) if not f.metadata.get("transient")]
    names += [f.name for f in dataclasses.fields(Section)]
    names += [p for p in inspect.signature(check_strategy).parameters if p != "strategy_or_name"]
    missing = [n for n in names if f"`{n}`" not in guide]
    assert not missing, f"docs/writing-plugins.md does not document: {', '.join(missing)}"


# -------------------------------------------------------------------------------------------------
# Commands.
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["run"], ["list"], ["report"], ["compare"], ["assets"]])
def test_every_help_works_with_every_shipped_plugin_and_a_percent_in_a_plugin_help(command, tmp_path, capsys):
    folder = tmp_path / "pd"
    folder.mkdir()
    (folder / "percent.py").write_text(dedent('''
        from bench.api import hookimpl

        @hookimpl
        def bench_addoption(parser):
            parser.addoption("--share", type=float, default=0.1, help="keep 10% of the data (100% = all)")
        '''))
    with pytest.raises(SystemExit) as exit_info:
        main(["--plugins-dir", str(folder), *command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bench")
    if command == ["run"]:
        assert "keep 10% of the data (100% = all)" in " ".join(out.split())
        for shipped in ("--lora-save-adapter", "--save-baseline", "--fail-on", "--profile-active"):
            assert shipped in out


BROKEN = "raise RuntimeError('this plugin is broken at import')\n"


@pytest.fixture
def broken_env_plugin(tmp_path, monkeypatch):
    """A plugin module that raises at import, named in BENCH_PLUGINS (loaded by every plugin host)."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "bench_broken_mod.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("BENCH_PLUGINS", "bench_broken_mod")
    yield "bench_broken_mod"
    sys.modules.pop("bench_broken_mod", None)


def test_compare_assets_and_version_load_no_plugins(broken_env_plugin, tmp_path, capsys):
    assert main(["list"]) == 2
    assert "bench_broken_mod" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert main(["assets", "list"]) == 0
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"schema_version": 1, "created_utc": "", "machine": {}, "results": []}))
    capsys.readouterr()
    assert main(["compare", str(results), str(results)]) == 2  # nothing to compare, said without plugins
    err = capsys.readouterr().err
    assert "no benchmark in common" in err and "bench_broken_mod" not in err


def test_debug_shows_the_traceback_of_a_plugin_that_fails_to_import(broken_env_plugin, capsys):
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bench --debug shows its traceback" in err
    assert main(["--debug", "list"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "this plugin is broken at import" in err
    assert err.strip().splitlines()[-1].startswith("bench: error: plugin 'bench_broken_mod'")


def test_blocking_a_broken_plugin_works_in_the_test_kit(broken_env_plugin, tmp_path):
    from bench.testing import check_strategy

    report = check_strategy("last-layers", tmp_path=tmp_path, isolate=False, plugins=["no:bench_broken_mod"])
    assert report.ok


def test_blocking_a_broken_plugin_works_in_the_pytest_plugin(broken_env_plugin, pytester_like):
    result = pytester_like(["--bench-plugin", "no:bench_broken_mod"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.fixture
def pytester_like(tmp_path, tiny_bert, sentiment_csv):
    """Run pytest in a subprocess on one finetune_bench test with the tiny model (environment inherited)."""
    import subprocess

    test = tmp_path / "test_one.py"
    test.write_text(dedent(f'''
        import pytest

        @pytest.mark.bench_strategy("last-layers", model={str(tiny_bert)!r}, dataset={str(sentiment_csv)!r},
                                    preset="smoke", options={{"train_samples": 0}})
        def test_last_layers(finetune_bench):
            assert finetune_bench().passed
        '''))

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider",
                               "--bench-no-isolate", "--bench-plugin", "no:profiler", *args],
                              capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ))

    return run


# -------------------------------------------------------------------------------------------------
# Hooks through pluggy, option clashes.
# -------------------------------------------------------------------------------------------------


WRAPPERS = '''
import os
from bench.api import hookimpl

@hookimpl(wrapper=True)
def bench_register_strategies():
    groups = yield  # pluggy: one list per implementation
    return [[s for s in group if s.name != "toy-b"] for group in groups]   # hide toy-b

@hookimpl(wrapper=True)
def bench_run_finished(run, result):
    with open(os.path.join(run.out_dir, "wrapped.txt"), "a") as fh:
        fh.write(result.status + "\\n")
    return (yield)
'''

OBSERVER = '''
import os
from bench.api import hookimpl

@hookimpl
def bench_run_finished(run, result):
    with open(os.path.join(run.out_dir, "observed.txt"), "w") as fh:
        fh.write(result.status)
'''


def test_wrappers_work_on_every_hook_and_one_failing_observer_stops_no_other(toy_dir, tmp_path, capsys):
    (toy_dir / "wrappers.py").write_text(WRAPPERS)
    (toy_dir / "zz_failing.py").write_text(dedent('''
        from bench.api import hookimpl

        @hookimpl
        def bench_run_finished(run, result):
            raise RuntimeError("an observer that fails")
        '''))
    (toy_dir / "observer.py").write_text(OBSERVER)
    assert main(["--plugins-dir", str(toy_dir), "list"]) == 0
    listed = capsys.readouterr().out
    assert "toy-a" in listed and "toy-b" not in listed  # the wrapper filtered the registration
    out = tmp_path / "out"
    assert main(["--plugins-dir", str(toy_dir), "run", "-s", "toy-a", "--no-isolate", "-p", "no:profiler",
                 "--out", str(out)]) == 0
    run_dir = out / read_results(out)["results"][0]["run_dir"]
    assert (run_dir / "observed.txt").read_text() == "passed"  # not stopped by the failing observer
    # the wrapper wrapped each plugin's call: one per implementing plugin (observer, zz_failing, tensorboard)
    assert (run_dir / "wrapped.txt").read_text().splitlines() == ["passed"] * 3
    err = capsys.readouterr().err
    assert "plugin 'zz_failing' bench_run_finished failed: RuntimeError: an observer that fails" in err


def test_option_clash_names_both_plugins(tmp_path, capsys):
    folder = tmp_path / "pd"
    folder.mkdir()
    for name in ("first_opts", "second_opts"):
        (folder / f"{name}.py").write_text(dedent('''
            from bench.api import hookimpl

            @hookimpl
            def bench_addoption(parser):
                parser.addoption("--shared-knob", type=int, default=1, help="a knob")
            '''))
    assert main(["--plugins-dir", str(folder), "list"]) == 2
    err = capsys.readouterr().err
    assert "declares option '--shared-knob', already declared by plugin" in err
    assert "'first_opts'" in err and "'second_opts'" in err


# -------------------------------------------------------------------------------------------------
# Run folders and the lifecycle.
# -------------------------------------------------------------------------------------------------


def test_repeats_of_a_strategy_keep_their_own_run_folders_traces_and_results(tiny_bert, sentiment_csv, tmp_path,
                                                                             capsys):
    out = tmp_path / "out"
    assert main(["run", "-s", "last-layers", "-s", "last-layers", "--preset", "smoke", "--model", str(tiny_bert),
                 "--dataset", str(sentiment_csv), "-o", "last-layers.train_samples=0", "--batch-size", "8",
                 "--out", str(out)]) == 0
    rows = read_results(out)["results"]
    assert [r["run_dir"] for r in rows] == ["runs/last-layers-1", "runs/last-layers-2"]
    for row in rows:
        folder = out / row["run_dir"]
        assert json.loads((folder / "result.json").read_text())["run_dir"] == row["run_dir"]
        assert list((folder / "profile").glob("*.pt.trace.json")), f"no trace in {folder}"
        assert (folder / "profile" / "top_ops.json").is_file()
    text = capsys.readouterr().out
    assert "Top operators: last-layers (runs/last-layers-1)" in text
    assert "Top operators: last-layers (runs/last-layers-2)" in text
    assert main(["report", str(out)]) == 0  # read back from the file: each row finds its own folder
    again = capsys.readouterr().out
    assert "(runs/last-layers-1)" in again and "(runs/last-layers-2)" in again


UNCONFIGURE = '''
import os
from bench.api import hookimpl

@hookimpl
def bench_unconfigure(config):
    with open(os.environ["UNCONFIGURE_LOG"], "a") as fh:
        fh.write(f"{os.getpid()} {config.in_run_process}\\n")
'''


def test_unconfigure_runs_in_the_host_and_in_run_processes_even_after_a_failure(toy_dir, tmp_path, monkeypatch):
    log = tmp_path / "unconfigure.log"
    monkeypatch.setenv("UNCONFIGURE_LOG", str(log))
    (toy_dir / "unconf.py").write_text(UNCONFIGURE)
    assert main(["--plugins-dir", str(toy_dir), "run", "-s", "toy-a", "-o", "toy-a.mode=raise", "-p", "no:profiler",
                 "--out", str(tmp_path / "out")]) == 1
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sorted(flag for _, flag in lines) == ["False", "True"]
    assert {pid for pid, flag in lines if flag == "False"} == {str(os.getpid())}


def test_bitfit_is_head_plus_bias_on_the_shared_path(tmp_path):
    from bench.testing import check_strategy

    report = check_strategy("all-layers", tmp_path=tmp_path, isolate=False,
                            options={"train_layers": "head+bias", "train_samples": 0})
    trained = set(report.result.trained_parameters)
    assert trained and all(n.endswith(".bias") or not n.startswith("bert.") or ".pooler." in n for n in trained)
    assert any(".encoder.layer.0." in n and n.endswith(".bias") for n in trained)
    assert not any(n.endswith(".weight") and ".encoder." in n for n in trained)
    assert report.frozen is not None and report.frozen.checked > 0 and not report.frozen.changed
    assert report.result.techniques["prefix_cache"].on is False  # block 0's biases train


def test_report_says_when_rows_differ_in_speed_techniques(tmp_path, capsys):
    from bench.results.report import techniques_section
    from bench.results.schema import Provenance, RunResult, TechniqueUse

    prov = Provenance(0, "cpu", "cpu", 1, "fp32", "3", "t", "t", None, "p", None, None)
    same = {"first_token": TechniqueUse(True, "x"), "prefix_cache": TechniqueUse(False, "one epoch")}
    rows = [RunResult("a", "passed", prov, techniques=same),
            RunResult("b", "passed", prov, techniques={**same, "prefix_cache": TechniqueUse(True, "cached")})]
    section = techniques_section(rows)
    assert section.rows == (("a", "on", "off"), ("b", "on", "on"))
    assert section.note.startswith("rows differ in prefix_cache (off for a: one epoch)")
    assert techniques_section(rows[:1] * 2).note == "every row ran with the same techniques"
