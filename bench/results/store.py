"""The results file on disk: written atomically (temporary file + ``os.replace``) after every strategy,
read back with its schema version checked, validated against its JSON Schema (``results.schema.json``),
and every problem named with the file, on one line."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.plain import to_data
from bench.results.schema import (
    RESULTS_FILENAME,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    ResultsFile,
    RunResult,
    from_data,
)

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


def read_json(path: Path, what: str) -> Any:
    """The JSON in ``path``, or a UsageError naming the file and what is wrong with it (missing, unreadable,
    not text, not JSON, NaN/Infinity, nested too deeply); ``what`` says what the file should be."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{path}: a folder, not a file; give {what}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror or exc}); give {what}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not a text file (byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8); "
                         f"give {what}") from None

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    try:
        return json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); give {what}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); give {what}") from None
    except RecursionError:
        raise UsageError(f"{path}: JSON nested too deeply to read; give {what}") from None


def validate(data: Any, schema: Mapping[str, Any], where: str) -> None:
    """Check ``data`` against a JSON Schema; the first problem (the most relevant one) becomes a one-line
    UsageError: ``<where>: results[0].status: 'done' is not one of 'passed', 'failed'``."""
    import jsonschema

    try:
        error = jsonschema.exceptions.best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(data))
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply to check") from None
    if error is None:
        return
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    raise UsageError(f"{where}: {path or 'the top level'}: {_describe(error)}")


@functools.lru_cache(maxsize=8)
def _validator(schema_text: str) -> Any:
    import jsonschema

    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _describe(error: Any) -> str:
    """A short reason: the offending value cut to a few characters, never the whole document."""
    value = _short(error.instance)
    kind = error.validator
    if kind == "type":
        expected = error.validator_value if isinstance(error.validator_value, str) else \
            " or ".join(error.validator_value)
        return f"{value} is not {_article(expected)}{expected}"
    if kind == "enum":
        return f"{value} is not one of {', '.join(map(repr, error.validator_value))}"
    if kind == "const":
        return f"{value} is not {error.validator_value!r}"
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        return f"the key {missing[0] if missing else error.validator_value!r} is missing"
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    return " ".join(message.split())


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, default=str)
    kind = "an object" if isinstance(value, dict) else "an array" if isinstance(value, list) else None
    if len(text) > limit:
        return kind or f"{text[:limit - 3]}..."
    return text


def _article(word: str) -> str:
    return "an " if word[:1] in "aeiou" else "a "


def results_schema() -> dict[str, Any]:
    """The JSON Schema every results file is checked against (``bench/results/results.schema.json``)."""
    return dict(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def load_results(path: str | Path) -> ResultsFile:
    """Read a results file (or a folder holding ``results.json``), checked against its JSON Schema; any
    problem is one UsageError naming the file and the culprit (never a traceback)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILENAME
    if not p.exists():
        raise UsageError(f"results file not found: {p} (give a results.json or the --out folder of a run)")
    data = read_json(p, "a finetune-bench results.json or a run's --out folder")
    if not isinstance(data, dict) or "schema_version" not in data or "results" not in data:
        shape = f"a JSON {_json_kind(data)}" if not isinstance(data, dict) else "an object without them"
        raise UsageError(f"{p}: not a finetune-bench results file (no schema_version/results keys: {shape})")
    version = data["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise UsageError(f"{p}: schema_version {version!r} is not a whole number; this is not a results file "
                         f"that finetune-bench wrote (it writes {SCHEMA_VERSION})")
    if version > SCHEMA_VERSION:
        raise UsageError(
            f"{p}: schema version {version} is newer than this finetune-bench understands "
            f"({SCHEMA_VERSION}); upgrade finetune-bench"
        )
    validate(data, results_schema(), f"{p}: not a valid results file")
    try:
        loaded = from_data(ResultsFile, data)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:  # pragma: no cover - the schema catches these
        raise UsageError(f"{p}: malformed results file: {exc}") from None
    base = str(p.resolve().parent)
    return dataclasses.replace(loaded, results=tuple(dataclasses.replace(r, base_dir=base) for r in loaded.results))


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null", int: "number",
            float: "number"}.get(type(value), "value")


def result_from_data(data: Mapping[str, Any]) -> RunResult:
    return from_data(RunResult, data)
