"""Running the selected strategies, one isolated process each, saving after every one.

The results file (``<out>/results.json``) is rewritten atomically after each strategy finishes, so
a crash, a kill or Ctrl-C keeps every result already measured. A run process that dies without
writing its result (killed, segfault, out of memory) becomes a failed row saying how it died.
"""

from __future__ import annotations

import datetime
import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.execute import child_main, execute, failed_result
from bench.results import (
    RESULTS_FILENAME,
    SCHEMA_VERSION,
    ResultsFile,
    RunResult,
    result_from_data,
    save_results,
)


class Session:
    """One ``bench run``: the results so far and the file they live in."""

    def __init__(self, config: BenchConfig, host: Any, machine: dict[str, Any]) -> None:
        self.config = config
        self.host = host
        self.machine = machine
        self.results: list[RunResult] = []
        self.created_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    @property
    def path(self) -> Path:
        return self.config.out_dir / RESULTS_FILENAME

    def save(self) -> None:
        save_results(self.path, ResultsFile(SCHEMA_VERSION, self.created_utc, self.machine, tuple(self.results)))

    def add(self, result: RunResult) -> None:
        self.results.append(result)
        self.save()
        self.host.hook.bench_result_ready(config=self.config, result=result)

    def run(self, names: Sequence[str], on_start: Callable[[str], None] | None = None) -> list[RunResult]:
        """Run each strategy in turn; Ctrl-C stops after saving, with the interrupted row marked."""
        self.config.out_dir.mkdir(parents=True, exist_ok=True)
        self.save()
        for name in names:
            if on_start is not None:
                on_start(name)
            started = time.perf_counter()
            try:
                result = run_isolated(self.config, name) if self.config.isolate else execute(
                    self.config, name, self.host)
            except KeyboardInterrupt:
                self.add(failed_result(self.config, name, "interrupted by the user (Ctrl-C)", "KeyboardInterrupt",
                                       time.perf_counter() - started))
                raise
            self.add(result)
        return self.results


def run_isolated(config: BenchConfig, name: str) -> RunResult:
    """Run one strategy in a fresh ``spawn`` process; its peak memory and any crash stay its own."""
    result_path = config.out_dir / "runs" / name / "result.json"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=child_main, args=(config, name, str(result_path)), name=f"bench-{name}")
    started = time.perf_counter()
    proc.start()
    try:
        proc.join()
    except KeyboardInterrupt:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        raise
    wall = time.perf_counter() - started
    if result_path.exists():
        import json

        return result_from_data(json.loads(result_path.read_text(encoding="utf-8")))
    return failed_result(config, name, _death(proc.exitcode), "ProcessDied", wall)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        hint = " (SIGKILL: often the kernel's out-of-memory killer)" if sig == "SIGKILL" else ""
        return f"run process was killed by {sig}{hint} before it wrote a result"
    return f"run process exited with code {exitcode} before it wrote a result"
