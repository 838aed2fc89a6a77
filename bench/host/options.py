"""Options: declared once, accepted from the command line and from the config file.

Plugins declare options in ``bench_addoption(parser)``. Strategy options are the fields of each
strategy's config dataclass; they become flags automatically (``train_layers`` -> ``--train-layers``).
Values are coerced by the declared type; a mismatch names the option, where it came from and the
expected type.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.text import did_you_mean

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
    bounds: Mapping[str, float] = field(default_factory=dict)  # ge / gt / le / lt, checked at configuration


class OptionParser:
    """What ``bench_addoption`` receives: ``parser.addoption("--name", type=int, default=1, help=...)``.

    ``owner`` names the plugin declaring an option (the setup owner passes one that finds the plugin
    whose ``bench_addoption`` is on the call stack), so that clashes name both plugins."""

    def __init__(self, owner: Callable[[], str] | None = None) -> None:
        self.options: list[Option] = []
        self._owner = owner or (lambda: "")

    def addoption(
        self,
        *flags: str,
        dest: str | None = None,
        type: Callable[[Any], Any] = str,  # noqa: A002 - mirrors argparse
        default: Any = None,
        help: str = "",  # noqa: A002
        choices: Sequence[Any] | None = None,
        action: str = "store",
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
        lt: float | None = None,
    ) -> None:
        """Declare an option; ``ge``/``gt``/``le``/``lt`` bound a number (a value outside stops the command
        with one line naming the option, before anything runs)."""
        plugin = self._owner() or "?"
        if not flags or not all(isinstance(f, str) and f.startswith("-") for f in flags):
            raise UsageError(f"plugin {plugin!r}: option flags must start with '-', got {flags!r}")
        long = next((f for f in flags if f.startswith("--")), flags[0])
        name = dest or long.lstrip("-").replace("-", "_")
        clash = next((o for o in self.options if o.dest == name or set(o.flags) & set(flags)), None)
        if clash is not None:
            raise UsageError(
                f"plugin {plugin!r} declares option {long!r}, already declared by plugin {clash.plugin!r}; "
                f"rename one of them (or block one plugin with -p no:NAME)"
            )
        if action == "store_true":
            type = _parse_bool  # noqa: A001
            default = bool(default)
        self.options.append(
            Option(tuple(flags), name, type, default, help, tuple(choices) if choices else None, action, plugin,
                   {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None})
        )

    def get(self, dest: str) -> Option | None:
        return next((o for o in self.options if o.dest == dest), None)

    def add_to_argparse(self, ap: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """Add every option with ``default=SUPPRESS`` so only what the user typed lands in the namespace.
        Help texts are escaped for argparse (a plugin's ``10%`` must not break ``--help``)."""
        for o in self.options:
            kwargs: dict[str, Any] = {"dest": o.dest, "help": escape_help(o.help), "default": argparse.SUPPRESS}
            if o.action == "store_true":
                kwargs["action"] = "store_true"
            else:
                kwargs["action"] = o.action
                kwargs["choices"] = o.choices
                kwargs["metavar"] = o.dest.upper() if not o.choices else None
            ap.add_argument(*o.flags, **kwargs)


class ArgumentParser(argparse.ArgumentParser):
    """argparse as ``bench`` uses it: no abbreviations (``--epoch`` is not ``--epochs``), and every error a
    :class:`UsageError` (one line, exit 2, with a suggestion for a misspelt option) instead of a usage
    text and ``SystemExit``. Subparsers made from it are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        first = message.strip().splitlines()[0] if message.strip() else "bad arguments"
        if first.startswith("unrecognized arguments:"):
            unknown = next((a for a in first.split(":", 1)[1].split() if a.startswith("-")), "")
            if unknown:
                first += did_you_mean(unknown.split("=", 1)[0], self.option_strings())
        command = self.prog.partition(" ")[2]  # "bench run" -> "run"; the top parser: ""
        raise UsageError(f"{command}: {first}" if command else first)

    def option_strings(self) -> list[str]:
        """Every long option of this parser and of its subcommands (for suggestions)."""
        found: list[str] = []
        for action in self._actions:
            found += [s for s in action.option_strings if s.startswith("--")]
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += sub.option_strings() if isinstance(sub, ArgumentParser) else []
        return list(dict.fromkeys(found))


def escape_help(text: str) -> str:
    """Help text as argparse wants it: ``%`` doubled (argparse %-formats help strings)."""
    return text.replace("%", "%%")


# -------------------------------------------------------------------------------------------------
# Coercion.
# -------------------------------------------------------------------------------------------------





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











# -------------------------------------------------------------------------------------------------
# Config files.
# -------------------------------------------------------------------------------------------------


def find_config_file(start: Path) -> Path | None:
    """``bench.toml`` in ``start``, else ``pyproject.toml`` there if it has a ``[tool.bench]`` table."""
    candidate = start / "bench.toml"
    if candidate.is_file():
        return candidate
    pyproject = start / "pyproject.toml"
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool", {})
        if isinstance(tool, dict) and "bench" in tool:
            return pyproject
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """The finetune-bench table of a config file: the whole ``bench.toml`` or ``[tool.bench]``."""
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    data: Any = _read_toml(path)
    if path.name == "pyproject.toml" or "tool" in data:
        tool = data.get("tool", {})
        data = tool.get("bench", {}) if isinstance(tool, dict) else None
        if not isinstance(data, dict):
            raise UsageError(f"{path}: [tool.bench] must be a table of options")
    return {str(k).replace("-", "_") if not isinstance(v, dict) else str(k): v for k, v in data.items()}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); TOML files "
                         "are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise UsageError(f"{path}: invalid TOML: nested too deeply") from None
