"""Shared fixtures: a toy strategy plugin written to disk, a fresh plugin host per test, tiny models."""

from __future__ import annotations

import json
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _pytest import pytester as _pytester

# pytester restores sys.modules after each test that uses it, dropping every module the test imported
# first. Installed libraries must survive that: torch's C extension cannot be initialised twice in one
# process ("SystemError: bad call flags"), nor can its operator libraries register twice (c10d_functional).
# So the snapshot keeps whatever was imported from the standard library or site-packages; the modules
# that tests write (plugins in temporary folders) and this project's own are still dropped.
_LIBRARY_DIRS = tuple(sorted({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}))


def _installed_library(name: str) -> bool:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None) or ""
    return path.startswith(_LIBRARY_DIRS)


_snapshot_init = _pytester.SysModulesSnapshot.__init__


def _keep_libraries(self: Any, preserve: Any = None) -> None:
    _snapshot_init(self, preserve=lambda name: _installed_library(name) or bool(preserve and preserve(name)))


_pytester.SysModulesSnapshot.__init__ = _keep_libraries  # type: ignore[method-assign]

TOY_PLUGIN = '''
import os
import signal
from dataclasses import dataclass

from bench import ParamCounts, StrategyOutput
from bench import hookimpl


@dataclass(frozen=True)
class ToyConfig:
    steps: int = 6
    mode: str = "ok"  # ok | raise | kill
    accuracy: float = 0.5


class Toy:
    name = {name!r}
    description = "a toy strategy for tests"
    task = "classification"
    config_class = ToyConfig
    presets = {{"smoke": {{"steps": 3}}}}

    def run(self, run):
        cfg = run.config
        with run.meter.phase("train"):
            for _ in range(cfg.steps):
                with run.meter.step(samples=4, tokens=40):
                    sum(range(2000))
        if cfg.mode == "raise":
            raise ValueError("toy failure: the data was bad")
        if cfg.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return StrategyOutput(metrics={{"test_accuracy": cfg.accuracy}}, params=ParamCounts(10, 5, 40, 20, 40))


@hookimpl
def bench_register_strategies():
    return [Toy()]
'''


def write_toy(folder: Path, module: str, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(TOY_PLUGIN.format(name=name))
    return path


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    """A plugins folder with three toy strategies: toy-a, toy-b, toy-c."""
    folder = tmp_path / "plugins"
    for module, name in (("toy_a", "toy-a"), ("toy_b", "toy-b"), ("toy_c", "toy-c")):
        write_toy(folder, module, name)
    return folder


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file, no env plugins, no progress bars; cwd is a fresh folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("BENCH_PLUGINS", raising=False)
    monkeypatch.delenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    monkeypatch.setenv("BENCH_RUNTIMES_DIR", str(tmp_path / "runtimes"))  # no test adds to the user's run-time record
    monkeypatch.delenv("BENCH_QUIET", raising=False)  # `bench -q` sets it; restored after each test


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import make_sentiment_csv

    return make_sentiment_csv(tmp_path_factory.mktemp("data") / "sentiment.csv")


def read_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()
