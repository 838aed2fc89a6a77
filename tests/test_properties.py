"""Property-based tests (hypothesis): whatever a user types or points at, the option parser, the config
reader, the results reader and bench compare's inputs give a result or a one-line BenchError, never a
traceback. Nothing here trains: a run's arguments are parsed and resolved (every strategy's config
included) but not run."""

from __future__ import annotations

import copy
import json
import math
import os
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.core.errors import BenchError
from bench.host.cli import parse, run_config
from bench.host.config import FileSettings, file_settings
from bench.host.harness import Harness

FAULTS = Path(__file__).resolve().parent / "plugins_faults"
# BENCH_HYPOTHESIS_EXAMPLES=2000 for a longer search than the suite's
SETTINGS = settings(max_examples=int(os.environ.get("BENCH_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def one_line_error(exc: BaseException) -> None:
    assert isinstance(exc, BenchError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text.strip() and "\n" not in text.strip() and "Traceback" not in text, repr(text)


@pytest.fixture(scope="module")
def harness() -> Harness:
    from bench.core.config import PluginSpec

    return Harness(PluginSpec(plugins_dir=str(FAULTS)))


# -------------------------------------------------------------------------------------------------
# The option parser: bench run's command line.
# -------------------------------------------------------------------------------------------------

WORDS = st.text(alphabet=string.ascii_letters + string.digits + "-_.:=,/ %+", max_size=12)
NUMBERS = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True)).map(str)


def _flags(harness: Harness) -> list[str]:
    flags = [f for o in harness.parser.options for f in o.flags]
    flags += [f"--{name.replace('_', '-')}" for name in harness.strategy_fields]
    return sorted(set(flags) - {"-h", "--help"})


@st.composite
def run_arguments(draw: Any, flags: list[str], strategies: list[str]) -> list[str]:
    argv: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            argv += ["-s", draw(st.sampled_from(strategies) | WORDS)]
        elif kind == 1:
            argv += ["-o", f"{draw(st.sampled_from(strategies))}.{draw(WORDS)}={draw(NUMBERS | WORDS)}"]
        elif kind in (2, 3):
            argv += [draw(st.sampled_from(flags)), draw(NUMBERS | WORDS)]
        elif kind == 4:
            argv += [draw(st.sampled_from(flags))]
        else:
            argv += [draw(WORDS)]
    assume(not any(a in ("-h", "--help") or a.startswith(("--he", "-h")) for a in argv))
    return argv


def test_run_arguments_give_a_config_or_one_line(harness):
    flags = _flags(harness)
    strategies = [*harness.registry.names(), "all-layers", "sft"]

    @SETTINGS
    @given(run_arguments(flags, strategies))
    def check(argv: list[str]) -> None:
        try:
            rest = ["run", *argv]
            config = run_config(harness, parse(harness, rest), rest, FileSettings())
            harness.selection(config)  # every selected strategy's config resolved, as before a run
        except Exception as exc:
            one_line_error(exc)

    check()


# -------------------------------------------------------------------------------------------------
# The config reader: bench.toml.
# -------------------------------------------------------------------------------------------------

TOML_KEYS = st.sampled_from(["epochs", "batch-size", "lr", "seed", "device", "precision", "strategies", "steps",
                             "mode", "warmup-steps", "timeout", "max-memory", "plugins", "plugins_dir", "tool",
                             "strategy", "no-isolate", "out", "preset", "c_grid", "stepz"]) | WORDS
TOML_SCALARS = st.one_of(st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=False, width=32),
                         st.text(max_size=10))
TOML_VALUES = st.recursive(TOML_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(TOML_KEYS, inner, max_size=3), max_leaves=8)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _config_file(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in data.items())


def test_config_files_give_settings_or_one_line(harness):
    @SETTINGS
    @given(st.one_of(st.binary(max_size=200).map(lambda b: ("bytes", b)),
                     st.dictionaries(TOML_KEYS, TOML_VALUES, max_size=5).map(lambda d: ("toml", d))))
    def check(case: tuple[str, Any]) -> None:
        kind, content = case
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            path = folder / "bench.toml"
            if kind == "bytes":
                path.write_bytes(content)
            else:
                path.write_text(_config_file(content), encoding="utf-8")
            try:
                found = file_settings(None, folder)
                config = harness.make_config({}, found.values, config_file=found.path)
                harness.selection(config)
            except Exception as exc:
                one_line_error(exc)

    check()


# -------------------------------------------------------------------------------------------------
# The results reader, and what reads results after it: the report and bench compare.
# -------------------------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False,
                                                                                          allow_infinity=False)
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def valid_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real results file of three toy runs (passed, failed, NaN metric), as data."""
    from bench.host.cli import main

    out = tmp_path_factory.mktemp("valid") / "out"
    assert main(["run", "--plugins-dir", str(FAULTS), "-s", "fault-a", "-s", "fault-b", "-o", "fault-b.mode=raise",
                 "-s", "fault-c", "-o", "fault-c.accuracy=nan", "--no-isolate", "-q", "--out", str(out)]) == 1
    return json.loads((out / "results.json").read_text())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


@st.composite
def mutated(draw: Any, base: dict[str, Any]) -> Any:
    """``base`` with up to three nodes replaced by arbitrary JSON (or deleted, or the whole replaced)."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        if not path:
            return draw(JSON)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON)
    return data


def _read_and_use(path: Path) -> None:
    """Everything that reads a results file: the reader, every report format, the plot, compare's entries."""
    from bench.compare.sources import source_from_results
    from bench.results.report import render, standard_sections
    from bench.results.store import load_results

    loaded = load_results(path)
    sections = standard_sections(loaded.results)
    for fmt in ("table", "markdown", "csv", "json"):
        render(sections, fmt, loaded.results)
    source_from_results(str(path), loaded.results)


def test_results_files_read_or_one_line(valid_results):
    @SETTINGS
    @given(st.one_of(mutated(valid_results), JSON, st.binary(max_size=64)))
    def check(content: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "results.json"
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(json.dumps(content), encoding="utf-8")
            try:
                _read_and_use(path)
            except Exception as exc:
                one_line_error(exc)

    check()


def test_comparison_inputs_compare_or_one_line(valid_results):
    from bench.compare.comparison import compare
    from bench.compare.render import render_comparison
    from bench.compare.sources import load_source

    benchmark = {"benchmarks": [{"name": "t", "fullname": "tests/t.py::t", "stats": {"median": 0.01,
                                                                                      "data": [0.01, 0.011]},
                                 "extra_info": {"samples_per_step": 8, "metrics": {"test_accuracy": 0.5},
                                                "primary_metric": "test_accuracy"}}],
                 "commit_info": {"id": "abc"}, "datetime": "2026-01-01"}

    @SETTINGS
    @given(st.one_of(mutated(valid_results), mutated(benchmark), JSON, st.binary(max_size=32)),
           st.one_of(mutated(valid_results), mutated(benchmark)))
    def check(a: Any, b: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for name, content in (("a.json", a), ("b.json", b)):
                path = Path(tmp) / name
                path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
                paths.append(path)
            try:
                cmp = compare(load_source(paths[0], tmp), load_source(paths[1], tmp))
                for fmt in ("table", "markdown", "json"):
                    render_comparison(cmp, fmt)
                assert cmp.exit_code in (0, 1)
                assert cmp.ok or "no regression" not in cmp.summary()
            except Exception as exc:
                one_line_error(exc)

    check()
