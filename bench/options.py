"""Options: declared once, accepted from the command line and from the config file.

Plugins declare options in ``bench_addoption(parser)``. Strategy options are the fields of each
strategy's config dataclass; they become flags automatically (``train_layers`` -> ``--train-layers``).
Values are coerced by the declared type; a mismatch names the option, where it came from and the
expected type.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Option:
    """One declared option. ``dest`` is the key in config files and in ``config.options``."""

    flags: tuple[str, ...]
    dest: str
    type: Callable[[Any], Any] = str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    action: str = "store"
    plugin: str = ""


class OptionParser:
    """What ``bench_addoption`` receives: ``parser.addoption("--name", type=int, default=1, help=...)``."""

    def __init__(self) -> None:
        self.options: list[Option] = []
        self._current_plugin = ""

    def addoption(
        self,
        *flags: str,
        dest: str | None = None,
        type: Callable[[Any], Any] = str,  # noqa: A002 - mirrors argparse
        default: Any = None,
        help: str = "",  # noqa: A002
        choices: Sequence[Any] | None = None,
        action: str = "store",
    ) -> None:
        if not flags or not all(f.startswith("-") for f in flags):
            raise UsageError(f"plugin {self._current_plugin!r}: option flags must start with '-', got {flags!r}")
        long = next((f for f in flags if f.startswith("--")), flags[0])
        name = dest or long.lstrip("-").replace("-", "_")
        if any(o.dest == name for o in self.options):
            other = next(o for o in self.options if o.dest == name)
            raise UsageError(
                f"plugin {self._current_plugin!r} declares option {long!r}, already declared by plugin "
                f"{other.plugin!r}; rename one of them"
            )
        if action == "store_true":
            type = _parse_bool  # noqa: A001
            default = bool(default)
        self.options.append(
            Option(tuple(flags), name, type, default, help, tuple(choices) if choices else None, action,
                   self._current_plugin)
        )

    def get(self, dest: str) -> Option | None:
        return next((o for o in self.options if o.dest == dest), None)

    def add_to_argparse(self, ap: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """Add every option with ``default=SUPPRESS`` so only what the user typed lands in the namespace."""
        for o in self.options:
            kwargs: dict[str, Any] = {"dest": o.dest, "help": o.help, "default": argparse.SUPPRESS}
            if o.action == "store_true":
                kwargs["action"] = "store_true"
            else:
                kwargs["action"] = o.action
                kwargs["choices"] = o.choices
                kwargs["metavar"] = o.dest.upper() if not o.choices else None
            ap.add_argument(*o.flags, **kwargs)


# -------------------------------------------------------------------------------------------------
# Coercion.
# -------------------------------------------------------------------------------------------------


def option(default: Any, help: str) -> Any:  # noqa: A002
    """A strategy config field that is a bench option: ``lr: float = option(2e-4, "peak learning rate")``.

    Each field of a strategy's ``config_class`` becomes ``--field-name`` on ``bench run``, ``-o
    STRATEGY.field=value`` and a config-file key; ``help`` is what ``bench run --help`` shows."""
    import dataclasses

    return dataclasses.field(default=default, metadata={"help": help})


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def coerce(value: Any, annotation: Any, *, what: str) -> Any:
    """Coerce ``value`` (a string from the CLI or a TOML value) to ``annotation``; ``what`` names it."""
    try:
        return _coerce(value, annotation)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: expected {_type_name(annotation)}, got {value!r} ({exc})") from None


def _coerce(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", ""))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == str(value):
                return choice
        raise ValueError(f"choose one of {', '.join(map(str, args))}")
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, args[0]) for v in items if v != "")
    if annotation is bool:
        return _parse_bool(value)
    if annotation is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("not an integer")
        return int(value)
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError("not a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError("not a string")
        return str(value)
    if annotation is Path:
        return Path(value)
    if callable(annotation) and annotation is not Any:
        return annotation(value)
    return value


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + "|".join(map(str, typing.get_args(annotation)))
    if origin is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def field_types(config_class: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


def field_help(config_class: type) -> dict[str, str]:
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(config_class)}


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a close candidate exists, else ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# -------------------------------------------------------------------------------------------------
# Config files.
# -------------------------------------------------------------------------------------------------


def find_config_file(start: Path) -> Path | None:
    """``bench.toml`` in ``start``, else ``pyproject.toml`` there if it has a ``[tool.bench]`` table."""
    candidate = start / "bench.toml"
    if candidate.is_file():
        return candidate
    pyproject = start / "pyproject.toml"
    if pyproject.is_file() and "bench" in _read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """The finetune-bench table of a config file: the whole ``bench.toml`` or ``[tool.bench]``."""
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    data = _read_toml(path)
    if path.name == "pyproject.toml" or "tool" in data:
        data = data.get("tool", {}).get("bench", {})
    return {str(k).replace("-", "_") if not isinstance(v, dict) else str(k): v for k, v in data.items()}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
