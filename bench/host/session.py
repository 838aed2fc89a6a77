"""One ``bench run``'s results so far and the file they live in, rewritten after every strategy.

The results file (``<out>/results.json``) is rewritten atomically after each strategy finishes, so
a crash, a kill or Ctrl-C keeps every result already measured.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.results.schema import RESULTS_FILENAME, SCHEMA_VERSION, ResultsFile, RunResult
from bench.results.store import save_results


class Session:
    """The results of one invocation, saved to ``<out_dir>/results.json`` as each one arrives."""

    def __init__(self, out_dir: Path, machine: dict[str, Any],
                 on_result: Callable[[RunResult], None] | None = None, write: bool = True) -> None:
        self.out_dir = out_dir
        self.write = write  # under an outer torch.distributed launcher only rank 0's session writes the file
        self.machine = machine
        self.results: list[RunResult] = []
        self.created_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self._on_result = on_result

    @property
    def path(self) -> Path:
        return self.out_dir / RESULTS_FILENAME

    def save(self) -> None:
        if not self.write:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_results(self.path, ResultsFile(SCHEMA_VERSION, self.created_utc, self.machine, tuple(self.results)))

    def add(self, result: RunResult) -> None:
        self.results.append(result)
        self.save()
        if self._on_result is not None:
            self._on_result(result)
