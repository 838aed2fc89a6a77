"""Saved baselines on disk: ``<dir>/<NAME>.json``, a copy of a run's ``results.json``.

``<dir>`` is ``--baseline-dir``, else ``$BENCH_BASELINE_DIR``, else ``.bench/baselines`` (relative to the
working directory). Read by ``bench compare NAME ...`` and written by ``bench run --save-baseline``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from bench.core.errors import UsageError

ENV_BASELINE_DIR = "BENCH_BASELINE_DIR"
DEFAULT_BASELINE_DIR = Path(".bench") / "baselines"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")



def resolve_baseline_dir(option: str | Path | None = None) -> Path:
    """``--baseline-dir``, else ``$BENCH_BASELINE_DIR``, else ``.bench/baselines``."""
    value = option or os.environ.get(ENV_BASELINE_DIR) or DEFAULT_BASELINE_DIR
    return Path(value).expanduser()


def baseline_path(name: str, folder: Path, check_name: bool = True) -> Path | None:
    """``<folder>/<name>.json``; a bad name raises (``check_name``) or gives None."""
    stem = name[:-5] if name.endswith(".json") else name
    if not _NAME_RE.match(stem):
        if check_name:
            raise UsageError(f"baseline name {name!r}: use letters, digits, '.', '_' and '-' only (e.g. main, "
                             f"pr-123); it becomes the file <baseline dir>/NAME.json")
        return None
    return folder / f"{stem}.json"


def save_baseline(results_path: Path, name: str, folder: Path) -> Path:
    """Copy a results file to ``<folder>/<name>.json`` (atomically) and return the new path."""
    target = baseline_path(name, folder)
    assert target is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(results_path, tmp)
    os.replace(tmp, target)
    return target


def list_baselines(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
