"""One ``bench run``'s results so far and the file they live in, rewritten after every strategy.

The results file (``<out>/results.json``) is rewritten atomically after each strategy finishes, so
a crash, a kill or Ctrl-C keeps every result already measured.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.results.schema import RESULTS_FILENAME, SCHEMA_VERSION, ResultsFile, RunResult
from bench.results.store import save_results


class Session:
    """The results of one invocation, saved to ``<out_dir>/results.json`` as each one arrives."""

    def __init__(self, out_dir: Path, machine: dict[str, Any],
                 on_result: Callable[[RunResult], None] | None = None, write: bool = True, *,
                 kept: Sequence[RunResult] = (), created_utc: str | None = None,
                 invocation: Mapping[str, Any] | None = None) -> None:
        self.out_dir = out_dir
        self.write = write  # under an outer torch.distributed launcher only rank 0's session writes the file
        self.machine = machine
        self.results: list[RunResult] = list(kept)  # a resumed run's kept results come first
        self.created_utc = created_utc or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.invocation = dict(invocation or {})
        self._on_result = on_result

    @property
    def path(self) -> Path:
        return self.out_dir / RESULTS_FILENAME

    def save(self) -> None:
        if not self.write:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_results(self.path, ResultsFile(SCHEMA_VERSION, self.created_utc, self.machine, tuple(self.results),
                                            self.invocation))

    def add(self, result: RunResult) -> None:
        self.results.append(result)
        self.save()
        if self._on_result is not None:
            self._on_result(result)


# The host settings a kept result must share with the run that resumes it (besides its strategy config).
RESUME_SETTINGS = ("model", "dataset", "device", "precision", "seed", "weights", "seq_len", "warmup_steps")


def resume_plan(planned: Sequence[tuple[str, Any]], existing: Sequence[RunResult],
                config: Any) -> tuple[list[RunResult], list[tuple[str, int]]]:
    """(the results a resumed run keeps, the (strategy, repeat) runs it still does, in the order a fresh
    run would do them: repeats interleaved). Every passed result is kept; each planned run of a strategy
    and repeat (``--repeats``: repeat ``r`` has seed ``seed + r``) takes one passed result of that
    strategy and repeat, in order, if there is one left (a repeated ``-s x -s x`` needs two), else it
    runs. A kept result measured with other options than the plan's stops the resume (one line naming
    the strategy and the option): results of two set-ups must not end up in one file as if they were one."""
    from bench.core.errors import UsageError
    from bench.core.plain import to_data

    kept = [r for r in existing if r.passed]
    pool: dict[tuple[str, int], list[RunResult]] = {}
    for r in kept:
        pool.setdefault((r.strategy, r.repeat), []).append(r)
    to_run = []
    for repeat in range(max(1, int(getattr(config, "repeats", 1) or 1))):
        settings = {**config.settings(), "seed": config.seed + repeat}
        for name, cfg in planned:
            if not pool.get((name, repeat)):
                to_run.append((name, repeat))
                continue
            result = pool[(name, repeat)].pop(0)
            old_cfg, new_cfg = dict(result.provenance.config or {}), to_data(cfg)
            changed = [(k, old_cfg.get(k), new_cfg.get(k)) for k in sorted(set(old_cfg) | set(new_cfg))
                       if old_cfg.get(k) != new_cfg.get(k)]
            old_settings = result.provenance.settings or {}
            changed += [(k, old_settings.get(k), settings.get(k)) for k in RESUME_SETTINGS
                        if k in old_settings and old_settings.get(k) != settings.get(k)]
            if changed:
                key, old, new = changed[0]
                which = f"{name!r}" + (f" (repeat {repeat + 1})" if repeat else "")
                raise UsageError(f"--resume {config.out_dir}: the kept result of {which} was run with {key}={old!r}, "
                                 f"this run has {key}={new!r}; resume with the options the run was started with, or "
                                 "use another --out")
    return kept, to_run
