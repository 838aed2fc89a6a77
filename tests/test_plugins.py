"""Plugin discovery, validation and the strategy registry: a fresh plugin host per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import write_toy

from bench.core.config import PluginSpec
from bench.core.errors import PluginError, UsageError
from bench.host.cli import main
from bench.host.plugins import PluginHost
from bench.host.registry import StrategyRegistry

BUILTIN_STRATEGIES = {"all-layers", "last-layers", "feature-extraction"}


def make_distribution(root: Path, dist: str, version: str, module: str, ep_name: str, source: str) -> None:
    """A throwaway installed distribution: a module and a .dist-info with an entry point, on sys.path."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[finetune_bench]\n{ep_name} = {module}\n")


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    write_toy(root, "bench_toy_ep", "toy-ep")
    source = (root / "bench_toy_ep.py").read_text()
    (root / "bench_toy_ep.py").unlink()
    make_distribution(root, "bench-toy", "1.2.3", "bench_toy_ep", "toy-ep", source)
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.modules.pop("bench_toy_ep", None)


def test_builtins_are_discovered_through_the_entry_point_group():
    host = PluginHost().load()
    registry = StrategyRegistry.from_host(host)
    assert set(registry.names()) >= BUILTIN_STRATEGIES
    for name in BUILTIN_STRATEGIES:
        entry = registry.get(name)
        assert entry.builtin and entry.distribution == "finetune-bench"
        assert host.info(entry.plugin).source == "entry-point"
    assert {"config", "runner", "machine", "report", "profiler"} <= {i.name for i in host.plugin_infos()}


def test_third_party_entry_point_names_its_distribution(third_party, capsys):
    registry = StrategyRegistry.from_host(PluginHost().load())
    entry = registry.get("toy-ep")
    assert (entry.distribution, entry.version, entry.builtin) == ("bench-toy", "1.2.3", False)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy-ep" in out and "bench-toy 1.2.3" in out and "a toy strategy for tests" in out
    assert main(["list", "--plugins"]) == 0
    assert "bench_register_strategies" in capsys.readouterr().out


def test_disable_autoload_skips_third_party_but_keeps_builtins(third_party, monkeypatch):
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    names = set(StrategyRegistry.from_host(PluginHost().load()).names())
    assert "toy-ep" not in names and names >= BUILTIN_STRATEGIES


def test_dash_p_module_and_no_name(toy_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(toy_dir))
    host = PluginHost().load(PluginSpec(enable=("toy_a",), disable=("profiler", "last-layers")))
    names = StrategyRegistry.from_host(host).names()
    assert "toy-a" in names and "last-layers" not in names
    assert host.info("profiler") is None
    assert host.info("toy_a").source == "-p"


def test_essential_plugin_cannot_be_disabled():
    with pytest.raises(PluginError, match="essential"):
        PluginHost().load(PluginSpec(disable=("runner",)))


def test_plugins_dir_and_env_var(toy_dir, tmp_path, monkeypatch):
    env_dir = tmp_path / "envplugins"
    write_toy(env_dir, "toy_env", "toy-env")
    monkeypatch.syspath_prepend(str(env_dir))
    monkeypatch.setenv("BENCH_PLUGINS", "toy_env")
    host = PluginHost().load(PluginSpec(plugins_dir=str(toy_dir)))
    names = StrategyRegistry.from_host(host).names()
    assert {"toy-a", "toy-b", "toy-c", "toy-env"} <= set(names)
    assert host.info("toy_a").source == "plugins-dir"
    assert host.info("toy_env").source == "env"


def test_plugin_that_fails_to_import_names_plugin_and_distribution(tmp_path, monkeypatch, capsys):
    root = tmp_path / "site"
    root.mkdir()
    make_distribution(root, "bench-broken", "0.1", "bench_broken", "broken",
                      "import definitely_not_installed_xyz\n")
    monkeypatch.syspath_prepend(str(root))
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert "plugin 'broken'" in err and "bench-broken 0.1" in err
    assert "definitely_not_installed_xyz" in err and "-p no:broken" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["list", "-p", "no:broken"]) == 0  # the way out the message suggests works


def test_plugin_that_raises_on_import(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    make_distribution(root, "bench-raises", "0.2", "bench_raises", "raises", "raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError, match=r"plugin 'raises' \(distribution bench-raises 0.2\).*boom at import"):
        PluginHost().load()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from bench import hookimpl\n@hookimpl\ndef bench_register_strategies(wrong_arg):\n    return []\n",
         "wrong_arg"),
        ("from bench import hookimpl\n@hookimpl\ndef bench_register_strategys():\n    return []\n",
         "bench_register_strategys"),
    ],
    ids=["wrong-argument", "misspelt-hook"],
)
def test_hookspec_mismatch_is_one_clear_error(tmp_path, source, expected):
    folder = tmp_path / "pd"
    folder.mkdir()
    (folder / "badhooks.py").write_text(source)
    with pytest.raises(PluginError) as info:
        PluginHost().load(PluginSpec(plugins_dir=str(folder)))
    assert "badhooks" in str(info.value) and expected in str(info.value)


def test_strategy_missing_method_and_duplicate_name(tmp_path):
    folder = tmp_path / "pd"
    folder.mkdir()
    (folder / "norun.py").write_text(
        "from dataclasses import dataclass\nfrom bench import hookimpl\n"
        "@dataclass(frozen=True)\nclass C:\n    x: int = 1\n"
        "class S:\n    name='no-run'\n    description='d'\n    task='classification'\n    config_class=C\n"
        "@hookimpl\ndef bench_register_strategies():\n    return [S()]\n")
    with pytest.raises(PluginError, match=r"plugin 'norun'.*'no-run'.*missing attribute 'run'"):
        StrategyRegistry.from_host(PluginHost().load(PluginSpec(plugins_dir=str(folder))))
    (folder / "norun.py").unlink()
    write_toy(folder, "dup_one", "same-name")
    write_toy(folder, "dup_two", "same-name")
    with pytest.raises(PluginError, match=r"'same-name' is registered twice.*(dup_one.*dup_two|dup_two.*dup_one)"):
        StrategyRegistry.from_host(PluginHost().load(PluginSpec(plugins_dir=str(folder))))


def test_unknown_strategy_suggests_a_near_name():
    registry = StrategyRegistry.from_host(PluginHost().load())
    with pytest.raises(UsageError, match="did you mean 'all-layers'"):
        registry.get("al-layers")
