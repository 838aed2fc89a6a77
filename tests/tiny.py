"""Tiny, randomly initialised models and small datasets built offline, for fast tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.testing import tiny_bert as make_tiny_bert  # one builder for the kit and the tests
from bench.testing import tiny_sentiment_csv as make_sentiment_csv

__all__ = ["make_sentiment_csv", "make_tiny_bert"]


# -------------------------------------------------------------------------------------------------
# The timing workload of tests/test_compare.py and tests/benchmarks/calibrate.py (the same in both).
# -------------------------------------------------------------------------------------------------

# A few dozen optimizer steps of the tiny BERT on make_sentiment_csv(rows=TIMING_ROWS), one thread per
# run: on a loaded 2-core machine a single-threaded run shares a core, where two OpenMP threads stall
# each other (steps measured 40x slower, against 2-3x with one thread).
TIMING_ROWS = 160
TIMING_THREADS = 1
TIMING_ARGS = ("-s", "all-layers", "--no-isolate", "-p", "no:profiler", "--device", "cpu", "--precision", "fp32",
               "--epochs", "3", "--batch-size", "8", "--max-length", "32", "--eval-samples", "16",
               "--warmup-steps", "2")
SLOWDOWN_PLUGINS = Path(__file__).resolve().parent / "plugins_slow"


def run_interleaved(model: Path, data: Path, root: Path, names: dict[str, bool], rounds: int = 3,
                    slowdown: float = 0.25, threads: int = TIMING_THREADS, max_rounds: int | None = None,
                    settled: Callable[[dict[str, Path]], bool] | None = None) -> dict[str, Path]:
    """Run the timing workload once per name per round, interleaved (a, b, c, a, b, c, ...), in-process.

    ``names`` maps a run name to whether it loads the slowdown plugin (every step ``slowdown`` longer,
    inside the timed region). After each round each name's results so far are pooled into
    ``root/<name>/results.json`` (one result per round, as ``bench run -s all-layers -s all-layers ...``
    writes), which bench compare pools: interleaved, each side samples the same stretches of a noisy
    machine's changing load. After ``rounds`` rounds it stops, unless ``settled`` (given the pooled
    folders) says the comparisons are still inconclusive: then it adds rounds, up to ``max_rounds``.
    """
    import gc
    import os

    import torch

    from bench.host.cli import main
    from bench.results.schema import SCHEMA_VERSION, ResultsFile
    from bench.results.store import load_results, save_results

    before = torch.get_num_threads()
    saved_env = {k: os.environ.get(k) for k in ("BENCH_PROGRESS", "BENCH_SLOWDOWN")}
    os.environ.update(BENCH_PROGRESS="0", BENCH_SLOWDOWN=str(slowdown))
    torch.set_num_threads(threads)
    folders = {name: root / name for name in names}
    try:
        k = 0
        while True:
            for name, slow in names.items():
                gc.collect()  # what the previous run left behind is not this run's memory or time
                plugins = ["--plugins-dir", str(SLOWDOWN_PLUGINS)] if slow else []
                out = folders[name] / f"round-{k}"
                code = main([*plugins, "run", "--model", str(model), "--dataset", str(data), "--out", str(out),
                             *TIMING_ARGS])
                if code != 0:
                    raise RuntimeError(f"bench run into {out} failed with exit code {code}")
            k += 1
            for folder in folders.values():
                files = [load_results(folder / f"round-{i}") for i in range(k)]
                save_results(folder / "results.json", ResultsFile(SCHEMA_VERSION, files[0].created_utc,
                                                                  files[0].machine,
                                                                  tuple(r for f in files for r in f.results)))
            if k >= rounds and (settled is None or k >= (max_rounds or rounds) or settled(folders)):
                return folders
    finally:
        torch.set_num_threads(before)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


TIMING_ROUNDS = 3
TIMING_MAX_ROUNDS = 10
TIMING_RUNS = {"base-a": False, "slow": True, "base-b": False}  # name -> loads the slowdown plugin


TIMING_TARGET_SE = 0.04  # stop adding rounds once the run-level standard error of log(speed ratio) is below


def timing_settled(folders: dict[str, Path]) -> bool:
    """Is the measurement precise enough: the standard error of the log ratio of per-run median step
    times, base-a against base-b and against slow, below TIMING_TARGET_SE (about 4%)?

    The rule looks at the spread of the runs only, never at which way a comparison came out, so adding
    rounds cannot steer the result: a calm machine settles after the first rounds, a loaded one gets
    more repeats.
    """
    import math
    import statistics

    from bench.compare.sources import load_source

    logs = {}
    for name, folder in folders.items():
        (entry,) = load_source(folder).entries
        logs[name] = [math.log(m) for m in entry.run_medians]
    if any(len(v) < 2 for v in logs.values()):
        return False
    a = logs["base-a"]
    for other in ("base-b", "slow"):
        b = logs[other]
        se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
        if se > TIMING_TARGET_SE:
            return False
    return True


def run_timing_protocol(model: Path, data: Path, root: Path, slowdown: float = 0.25,
                        threads: int = TIMING_THREADS) -> dict[str, Path]:
    """The measurement behind tests/test_compare.py and tests/benchmarks/calibrate.py: base-a, slow and
    base-b, interleaved, TIMING_ROUNDS rounds, more (up to TIMING_MAX_ROUNDS) while the runs spread too
    much for a precise comparison (timing_settled)."""
    return run_interleaved(model, data, root, TIMING_RUNS, rounds=TIMING_ROUNDS, slowdown=slowdown, threads=threads,
                           max_rounds=TIMING_MAX_ROUNDS, settled=timing_settled)
