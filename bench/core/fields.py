"""Strategy options as dataclass fields: ``lr: float = option(2e-4, "peak learning rate")``.

Each field of a strategy's ``config_class`` becomes ``--field-name`` on ``bench run``, ``-o
STRATEGY.field=value`` and a config-file key; its ``help`` is what ``bench run --help`` shows.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def option(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse
    """A strategy config field that is a bench option, with its help text."""
    return dataclasses.field(default=default, metadata={"help": help})


def field_types(config_class: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


def field_help(config_class: type) -> dict[str, str]:
    """Field name -> its help text (``metadata["help"]``, empty when none)."""
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(config_class)}
