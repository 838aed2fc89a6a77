"""The mistakes a plugin author makes, each stopping ``bench`` with one line that says what to fix.

tests/test_plugins.py covers a plugin that fails to import (missing dependency, or raising), a wrong
hook argument name and a misspelt hook (that the plugin is named), a missing ``run`` and a duplicate
strategy name; this file checks the fix each message suggests and fills the remaining gaps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import dedent, write_toy

from bench.host.cli import main


def plugin_dir(tmp_path: Path, **modules: str) -> Path:
    folder = tmp_path / "pd"
    folder.mkdir(exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(dedent(source))
    return folder


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bench: error: "), err
    return err


def test_wrong_hook_argument_names_what_the_hook_accepts(tmp_path, capsys):
    folder = plugin_dir(tmp_path, badconf="""
        from bench import hookimpl

        @hookimpl
        def bench_terminal_summary(config, results, writer):
            writer("hi")
        """)
    assert main(["--plugins-dir", str(folder), "list"]) == 2
    err = one_line_error(capsys)
    assert "plugin 'badconf'" in err and "bench_terminal_summary(config, results, writer) asks for 'writer'" in err
    assert "it accepts config, results, write" in err


def test_misspelt_hook_suggests_the_real_name(tmp_path, capsys):
    folder = plugin_dir(tmp_path, typo="""
        from bench import hookimpl

        @hookimpl
        def bench_addoptions(parser):
            pass
        """)
    assert main(["--plugins-dir", str(folder), "list"]) == 2
    assert "did you mean 'bench_addoption'?" in one_line_error(capsys)


def test_wrapper_that_is_not_a_generator_is_one_line(tmp_path, capsys):
    folder = plugin_dir(tmp_path, wrap="""
        from bench import hookimpl

        @hookimpl(wrapper=True)
        def bench_run_strategy(run):
            return None
        """)
    assert main(["--plugins-dir", str(folder), "list"]) == 2
    err = one_line_error(capsys)
    assert "plugin 'wrap'" in err and "bench_run_strategy" in err and "generator" in err


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("config_class = C\n    def run(self, run): pass", None),
        ("config_class = NotFrozen\n    def run(self, run): pass", "'config_class' must be a frozen dataclass"),
        ("config_class = NoDefault\n    def run(self, run): pass", "config fields without a default: x"),
        ("config_class = C\n    run = 3", "'run' is not callable"),
        ("config_class = dict\n    def run(self, run): pass", "'config_class' must be a dataclass type"),
        ("config_class = C\n    run_to_run_noise_pct = 150\n    def run(self, run): pass",
         "'run_to_run_noise_pct' must be a percentage from 0 to under 100, not 150"),
    ],
    ids=["ok", "not-frozen", "no-default", "run-not-callable", "not-a-dataclass", "noise-not-a-percentage"],
)
def test_protocol_problems_point_to_the_guide(tmp_path, capsys, body, problem):
    source = dedent("""
        from dataclasses import dataclass
        from bench import hookimpl

        @dataclass(frozen=True)
        class C:
            x: int = 1

        @dataclass
        class NotFrozen:
            x: int = 1

        @dataclass(frozen=True)
        class NoDefault:
            x: int

        class S:
            name = "proto"
            description = "d"
            task = "classification"
            BODY

        @hookimpl
        def bench_register_strategies():
            return [S()]
        """).replace("BODY", body)
    folder = plugin_dir(tmp_path)
    (folder / "proto.py").write_text(source)
    code = main(["--plugins-dir", str(folder), "list"])
    if problem is None:
        assert code == 0 and "proto" in capsys.readouterr().out
        return
    assert code == 2
    err = one_line_error(capsys)
    assert "strategy 'proto' does not satisfy the bench.api.Strategy protocol" in err and problem in err
    assert "docs/writing-plugins.md" in err


def test_duplicate_name_fix_works(tmp_path, capsys):
    folder = tmp_path / "pd"
    write_toy(folder, "dup_one", "same")
    write_toy(folder, "dup_two", "same")
    assert main(["--plugins-dir", str(folder), "list"]) == 2
    assert "uninstall or block one (-p no:PLUGIN)" in one_line_error(capsys)
    assert main(["--plugins-dir", str(folder), "-p", "no:dup_two", "list"]) == 0


@pytest.mark.parametrize(
    ("config", "args"),
    [
        ('steps = "abc"\n', []),
        ('[strategy.toy-a]\nsteps = "abc"\n', []),
        ("", ["--steps", "abc"]),
        ("", ["-o", "toy-a.steps=abc"]),
    ],
    ids=["config-file-common", "config-file-per-strategy", "cli-common", "cli-per-strategy"],
)
def test_option_type_mismatch_names_option_strategy_and_type(tmp_path, capsys, monkeypatch, config, args):
    monkeypatch.setenv("BENCH_TRUST_CONFIG_PLUGINS", "1")
    folder = tmp_path / "pd"
    write_toy(folder, "toy_a", "toy-a")
    Path("bench.toml").write_text(f'plugins-dir = "{folder}"\n' + config)
    assert main(["run", "-s", "toy-a", "--no-isolate", "--out", str(tmp_path / "o"), *args]) == 2
    err = one_line_error(capsys)
    assert "option 'steps' of strategy 'toy-a': expected int, got 'abc'" in err


def test_missing_dependency_of_a_dash_p_module(tmp_path, monkeypatch, capsys):
    (tmp_path / "needs_dep.py").write_text("import not_installed_dep_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["-p", "needs_dep", "list"]) == 2
    err = one_line_error(capsys)
    assert "needs the missing module 'not_installed_dep_xyz' (pip install it" in err


def test_undeclared_device_is_a_usage_error(tmp_path, capsys):
    folder = tmp_path / "pd"
    write_toy(folder, "toy_gpu", "toy-gpu")
    source = (folder / "toy_gpu.py").read_text().replace('task = "classification"',
                                                          'task = "classification"\n    devices = ("cuda",)')
    (folder / "toy_gpu.py").write_text(source)
    code = main(["run", "--plugins-dir", str(folder), "-s", "toy-gpu", "--device", "cpu", "--no-isolate",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the status lines
    assert err == ("bench: error: toy-gpu: strategy 'toy-gpu' supports the devices cuda, not 'cpu'; "
                   "run it with --device cuda")
