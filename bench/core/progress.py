"""Progress output on stderr: bars for long loops, and one-line notes.

Bars are drawn on a TTY and hidden when stderr is piped; ``BENCH_PROGRESS=0|1`` forces them either
way (a user setting, read at each bar). Quiet mode (``bench -q``) silences bars and notes; it is part
of the invocation's configuration (``BenchConfig.quiet``) and the object that owns setup applies it
with :func:`configure`, in the host and in every run process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

ENV_PROGRESS = "BENCH_PROGRESS"


class _State:
    quiet = False


def configure(*, quiet: bool) -> None:
    """Apply the invocation's quiet mode to this process (called by the setup owner)."""
    _State.quiet = bool(quiet)


def quiet() -> bool:
    return _State.quiet


def enabled() -> bool:
    """True when bars should be drawn: never when quiet; else as BENCH_PROGRESS forces; else on a TTY."""
    if _State.quiet:
        return False
    forced = os.environ.get(ENV_PROGRESS)
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
    if _State.quiet:
        return
    print(message, file=sys.stderr, flush=True)
