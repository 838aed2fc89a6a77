"""The results file's JSON Schema (``bench/results/results.schema.json``): generated from the result types,
a valid draft 2020-12 schema, met by what ``bench run`` writes, and what the reader checks every file against.

``python tests/test_results_file.py --write`` regenerates the schema file after a change to the types.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import read_results

from bench.host.cli import main
from bench.results.schema import SCHEMA_FILE, json_schema

FAULTS = Path(__file__).resolve().parent / "plugins_faults"


def test_the_schema_file_is_generated_from_the_types():
    shipped = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert shipped == json_schema(), "run `python tests/test_results_file.py --write` after changing the result types"


def test_the_schema_is_a_valid_json_schema_that_requires_what_the_types_require():
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    run_result = schema["$defs"]["RunResult"]
    assert run_result["required"] == ["strategy", "status", "provenance"]
    assert run_result["properties"]["status"]["enum"] == ["passed", "failed"]
    assert "base_dir" not in run_result["properties"]  # transient: where a loaded file lives
    assert schema["properties"]["schema_version"] == {"type": "integer", "const": 1}


def test_what_bench_run_writes_meets_the_schema(tmp_path):
    import jsonschema

    out = tmp_path / "out"
    assert main(["run", "--plugins-dir", str(FAULTS), "-s", "fault-a", "-s", "fault-b", "-o", "fault-b.mode=raise",
                 "-s", "fault-c", "-o", "fault-c.accuracy=nan", "--no-isolate", "--out", str(out)]) == 1
    data = read_results(out)
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))).validate(data)
    assert [r["status"] for r in data["results"]] == ["passed", "failed", "failed"]
    assert data["results"][2]["metrics"]["test_accuracy"] is None  # NaN is written as null, and allowed there


@pytest.mark.parametrize(("path", "value", "message"), [
    (("results", 0, "steps", 0, "kind"), "fast", "results[0].steps[0].kind: \"fast\" is not one of 'warmup', "
                                                 "'profiled', 'timed'"),
    (("results", 0, "provenance", "seed"), "0", "results[0].provenance.seed: \"0\" is not an integer"),
    (("results", 0, "wall_s"), None, "results[0].wall_s: null is not a number"),
    (("machine",), [], "machine: [] is not an object"),
    (("machine", "cpu", "flags"), "avx2", "machine.cpu.flags: \"avx2\" is not an array or null"),
    (("machine", "peak", "flops"), "fast", "machine.peak.flops: \"fast\" is not a number"),
    (("results", 0, "repeat"), 1.5, "results[0].repeat: 1.5 is not an integer"),
    (("results", 0, "outcomes", "test_accuracy"), [1, 0], "results[0].outcomes.test_accuracy: [1, 0] is not a string"),
    (("results", 0, "run_to_run_noise_pct"), 150, "results[0].run_to_run_noise_pct: 150 is greater than or equal to the maximum of 100"),
])
def test_the_reader_names_the_first_problem_on_one_line(tmp_path, capsys, path, value, message):
    out = tmp_path / "out"
    assert main(["run", "--plugins-dir", str(FAULTS), "-s", "fault-a", "--no-isolate", "--out", str(out)]) == 0
    data = read_results(out)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["report", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"bench: error: {bad}: not a valid results file: {message}"
    assert main(["compare", str(out), str(bad)]) == 2  # bench compare reads through the same reader
    assert capsys.readouterr().err.strip() == f"bench: error: {bad}: not a valid results file: {message}"


def test_the_machine_schema_knows_what_the_host_writes():
    """``machine`` is a plain dict; its hand-written schema names every key the host writes (so a reader
    can rely on their types), the peak's included."""
    import dataclasses

    from bench.measure.machine import machine_info
    from bench.measure.peak import Peak
    from bench.results.schema import MACHINE_SCHEMA

    props = MACHINE_SCHEMA["properties"]
    assert set(machine_info()) <= set(props)
    assert set(props["peak"]["properties"]) == {f.name for f in dataclasses.fields(Peak)}


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}")
    else:
        sys.exit("usage: python tests/test_results_file.py --write")
