"""Progress bars on stderr: shown on a TTY, hidden when piped or with ``-q``.

One switch for the whole process: the CLI calls :func:`set_enabled` from ``-q``; the environment
variable ``BENCH_PROGRESS=0|1`` forces it either way (child processes inherit it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_ENV = "BENCH_PROGRESS"


def set_enabled(enabled: bool) -> None:
    """Turn progress bars on or off for this process and the child processes it starts."""
    os.environ[_ENV] = "1" if enabled else "0"


def enabled() -> bool:
    """True when bars should be drawn: forced by BENCH_PROGRESS, else only when stderr is a TTY."""
    forced = os.environ.get(_ENV)
    if forced is not None:
        return forced == "1"
    return sys.stderr.isatty()


def bar(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when bars are enabled, else yield it unchanged."""
    if not enabled():
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


def note(message: str) -> None:
    """A one-line status message on stderr (what is being fetched, where it goes), unless quiet."""
    if os.environ.get(_ENV) == "0" and os.environ.get("BENCH_QUIET") == "1":
        return
    print(message, file=sys.stderr, flush=True)
