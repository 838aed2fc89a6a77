"""Run folders: the one place that names where a run's artifacts go.

Every run of a strategy gets a folder of its own, ``<out>/runs/<strategy>-<i>`` with ``i`` counting
from 1 per strategy, created exclusively (``mkdir`` without ``exist_ok``) so that two runs, even of
the same strategy in one invocation, never share one. Everything a run writes goes under it: its
``result.json``, the profiler's traces and top-operators file (``profile/``), the TensorBoard
scalars, generations, adapters, caches. The result records the folder relative to the results
file (``RunResult.run_dir``), so a results folder can be moved or copied whole.
"""

from __future__ import annotations

import re
from pathlib import Path

RUNS = "runs"
PROFILE = "profile"
RESULT_FILENAME = "result.json"
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
