"""Strategy options as dataclass fields: ``lr: float = option(2e-4, "peak learning rate", gt=0)``.

Each field of a strategy's ``config_class`` becomes ``--field-name`` on ``bench run``, ``-o
STRATEGY.field=value`` and a config-file key; its ``help`` is what ``bench run --help`` shows. Bounds
(``ge``, ``gt``, ``le``, ``lt``) are checked when the host resolves the config, before anything runs:
``--batch-size 0`` stops with one line naming the option, its value and the bound.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

BOUNDS = ("ge", "gt", "le", "lt")
_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def option(default: Any, help: str, *, ge: float | None = None, gt: float | None = None,  # noqa: A002
           le: float | None = None, lt: float | None = None) -> Any:
    """A strategy config field that is a bench option, with its help text and optional bounds (for a tuple
    field, every item must be within them)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"help": help, **bounds})


def field_types(config_class: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


def field_help(config_class: type) -> dict[str, str]:
    """Field name -> its help text (``metadata["help"]``, empty when none)."""
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(config_class)}


def field_bounds(config_class: type) -> dict[str, dict[str, float]]:
    """Field name -> its bounds (``{"ge": 1}``), for the fields that have any. A subclass that redeclares
    a field with a new default but no bounds keeps the bounds of the base class's field."""
    out = {}
    for f in dataclasses.fields(config_class):
        for klass in config_class.__mro__:
            declared = getattr(klass, "__dataclass_fields__", {}).get(f.name)
            bounds = {k: declared.metadata[k] for k in BOUNDS if k in declared.metadata} if declared else {}
            if bounds:
                out[f.name] = bounds
                break
    return out


def bounds_problem(value: Any, bounds: Mapping[str, float]) -> str | None:
    """Why ``value`` (a number, or a tuple of numbers) is out of ``bounds``; None when it is within them.
    NaN is never within bounds."""
    if not bounds:
        return None
    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if isinstance(item, float) and math.isnan(item):
            return "must be a number, not NaN"
        for key, limit in bounds.items():
            ok = {"ge": item >= limit, "gt": item > limit, "le": item <= limit, "lt": item < limit}[key]
            if not ok:
                where = f" (item {item!r})" if len(items) > 1 or isinstance(value, (tuple, list)) else ""
                return f"must be {describe_bounds(bounds)}{where}"
    return None


def describe_bounds(bounds: Mapping[str, float]) -> str:
    """``{"gt": 0, "lt": 1}`` -> ``"> 0 and < 1"``."""
    return " and ".join(f"{_WORDS[k]} {_number(v)}" for k, v in bounds.items())


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def check_bounds(config: Any) -> None:
    """Raise ValueError when a field of the config dataclass instance ``config`` is out of its bounds."""
    for name, bounds in field_bounds(type(config)).items():
        problem = bounds_problem(getattr(config, name), bounds)
        if problem:
            raise ValueError(f"{name}={getattr(config, name)!r}: {problem}")
