"""Output folders and run folders: the one place that names where a run's artifacts go, and who owns them.

A ``bench run`` owns its output folder (``--out``) while it runs: :func:`claim` takes an exclusive lock
on ``<out>/.bench-lock`` (a second run on the same folder stops at once, naming the holder), refuses a
folder that already holds something unless the run resumes it (an existing ``results.json`` is never
emptied), and turns "a file, not a folder", "cannot create" and "read-only" into one line each.

Every run of a strategy gets a folder of its own, ``<out>/runs/<strategy>-<i>`` with ``i`` counting
from 1 per strategy, created exclusively (``mkdir`` without ``exist_ok``) so that two runs, even of
the same strategy in one invocation, never share one. Everything a run writes goes under it: its
``result.json``, the profiler's traces and top-operators file (``profile/``), the TensorBoard
scalars, generations, adapters, caches. The result records the folder relative to the results
file (``RunResult.run_dir``), so a results folder can be moved or copied whole.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bench.core.errors import UsageError

RUNS = "runs"
PROFILE = "profile"
RESULT_FILENAME = "result.json"
STATUS_FILENAME = "status.json"
LOCK_FILENAME = ".bench-lock"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def allocate(out_dir: Path, strategy: str) -> Path:
    """Create and return the next free ``<out_dir>/runs/<strategy>-<i>``."""
    parent = out_dir / RUNS
    parent.mkdir(parents=True, exist_ok=True)
    stem = _UNSAFE.sub("_", strategy).strip("._") or "strategy"
    i = 1
    while True:
        folder = parent / f"{stem}-{i}"
        try:
            folder.mkdir()
        except FileExistsError:
            i += 1
            continue
        return folder


def profile_dir(run_dir: Path) -> Path:
    """Where the profiler and the TensorBoard scalars of the run in ``run_dir`` write."""
    return run_dir / PROFILE


def result_path(run_dir: Path) -> Path:
    """The result file a run process writes for the host."""
    return run_dir / RESULT_FILENAME


def relative(run_dir: Path, out_dir: Path) -> str:
    """``run_dir`` relative to the results folder, as results record it (``runs/all-layers-1``)."""
    try:
        return run_dir.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        return str(run_dir)


# -------------------------------------------------------------------------------------------------
# The output folder: claimed for the length of a run.
# -------------------------------------------------------------------------------------------------


@contextmanager
def claim(out_dir: Path, *, resume: bool, command: str = "bench run") -> Iterator[Path]:
    """Own ``out_dir`` for the block: created if missing, locked against every other bench run (the lock
    file records the holder: pid, host, start time, command) and, unless ``resume``, empty but for the
    lock. Every refusal is one UsageError naming the folder."""
    what = f"--out {out_dir}"
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{what}: a file, not a folder; give a folder (it is created when missing)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{what}: cannot create it ({exc.strerror or exc}); choose a folder you can write to") \
            from None
    try:
        handle = (out_dir / LOCK_FILENAME).open("a+", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{what}: cannot write there ({exc.strerror or exc}); choose a folder you can write to") \
            from None
    with handle:
        if not _try_lock(handle):
            raise UsageError(f"{what} is in use by another bench run ({_holder(handle)}); wait for it to finish, "
                             f"or choose another --out")
        try:
            if not resume:
                held = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_FILENAME)
                if held:
                    shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
                    raise UsageError(f"{what} is not empty (it holds {shown}); continue the run it holds with "
                                     f"`bench run --resume {out_dir}`, or choose another --out")
            handle.seek(0)
            handle.truncate()
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}, handle)
            handle.flush()
            yield out_dir
        finally:
            _unlock(handle)


def _try_lock(handle: IO[str]) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(handle: IO[str]) -> None:
    try:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except (ImportError, OSError):  # pragma: no cover
        pass


def _holder(handle: IO[str]) -> str:
    try:
        handle.seek(0)
        info: Any = json.loads(handle.read() or "{}")
        return (f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
                if isinstance(info, dict) else "unknown holder")
    except (OSError, ValueError, KeyError):
        return "holder unknown"


# -------------------------------------------------------------------------------------------------
# A run's status: which process runs it, in which phase, for the host to name when it stops it.
# -------------------------------------------------------------------------------------------------


def write_status(run_dir: Path, phase: str) -> None:
    """Record the phase the run in ``run_dir`` is in (and its pid), atomically; never raises."""
    path = run_dir / STATUS_FILENAME
    tmp = path.with_name(f".{STATUS_FILENAME}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "phase": phase}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def read_status(run_dir: Path) -> dict[str, Any]:
    """The last status the run in ``run_dir`` recorded: ``{"pid": ..., "phase": ...}``, or ``{}``."""
    try:
        data = json.loads((run_dir / STATUS_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
