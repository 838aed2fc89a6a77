"""The results file on disk: written atomically (temporary file + ``os.replace``) after every strategy,
read back with its schema version checked and every problem named with the file."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.plain import to_data
from bench.results.schema import RESULTS_FILENAME, SCHEMA_VERSION, ResultsFile, RunResult, from_data

# -------------------------------------------------------------------------------------------------
# The results file.
# -------------------------------------------------------------------------------------------------


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_results(path: Path, results: ResultsFile) -> None:
    write_json_atomic(path, to_data(results))


def load_results(path: str | Path) -> ResultsFile:
    """Read a results file (or a folder holding ``results.json``); errors name the file."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILENAME
    if not p.exists():
        raise UsageError(f"results file not found: {p} (give a results.json or the --out folder of a run)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}); is it a finetune-bench results file?") from None
    if not isinstance(data, dict) or "schema_version" not in data or "results" not in data:
        raise UsageError(f"{p}: not a finetune-bench results file (no schema_version/results keys)")
    if int(data["schema_version"]) > SCHEMA_VERSION:
        raise UsageError(
            f"{p}: schema version {data['schema_version']} is newer than this finetune-bench understands "
            f"({SCHEMA_VERSION}); upgrade finetune-bench"
        )
    try:
        loaded = from_data(ResultsFile, data)
    except (TypeError, KeyError, ValueError) as exc:
        raise UsageError(f"{p}: malformed results file: {exc}") from exc
    base = str(p.resolve().parent)
    return dataclasses.replace(loaded, results=tuple(dataclasses.replace(r, base_dir=base) for r in loaded.results))


def result_from_data(data: Mapping[str, Any]) -> RunResult:
    return from_data(RunResult, data)
