"""Test-only plugin: makes every measured step slower by a fixed share, inside the timed region.

Load it with ``--plugins-dir tests/plugins_slow`` (or ``-p`` with the folder on ``sys.path``). It wraps
``bench_run_strategy`` and replaces the run's ``meter.step`` with one that, after the step's own
work and before the meter stops its clock, waits ``BENCH_SLOWDOWN`` (default 0.25) times the time
that work took: every step, warm-up and timed alike, takes 25% longer, as a real 25% slower step would.

It fills the extra time with real work on the run's threads (small matrix products, until the clock
says the share is reached), as a pull request that adds a cast or a second forward pass would:
* not with ``time.sleep``: on a loaded machine a sleeping thread waits for the scheduler to run it
  again, which turned a 1 ms sleep into several (a "25%" slowdown measured 2x);
* not with a Python busy loop either: while one thread spun, torch's other threads went idle, and the
  speed-index product timed right after the step ran 20-60% slower, so ``bench compare``'s load
  normalisation divided most of the injected slowdown out again (calibration, 2026-11-30).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench import hookimpl

ENV_FACTOR = "BENCH_SLOWDOWN"


@hookimpl(wrapper=True)
def bench_run_strategy(run: Any) -> Any:
    factor = float(os.environ.get(ENV_FACTOR, "0.25"))
    meter = run.meter
    original = meter.step

    import torch

    work = torch.randn(128, 128)

    @contextmanager
    def slow_step(*args: Any, **kwargs: Any) -> Iterator[None]:
        with original(*args, **kwargs):
            start = time.perf_counter()
            yield
            now = time.perf_counter()
            until = now + factor * (now - start)
            while time.perf_counter() < until:
                work @ work

    meter.step = slow_step
    try:
        return (yield)
    finally:
        del meter.step  # back to the class's method
