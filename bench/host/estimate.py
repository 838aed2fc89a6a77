"""How long a ``bench run`` will take on this machine, said before the first strategy starts.

Two sources, best first, per strategy:

* **this machine's record**: every finished run adds its wall time (host-measured: process start-up
  included) to ``<cache>/runtimes/<fingerprint>.json`` (``$BENCH_RUNTIMES_DIR`` moves it), keyed by the strategy and a digest of what it
  runs (its resolved config, model, data, device, precision). The fingerprint is the peak's
  (:func:`bench.measure.peak.fingerprint`: CPU model and flags, cores, threads, torch, precision), so
  the record of one machine never answers for another. The estimate is the median of the last runs.
* **the reference machine, scaled by the peak** (CPU only, no record yet, the preset's own sizes):
  the wall times of the built-in strategies measured on this project's reference CPU (a 2-core AMD
  EPYC, AVX2+FMA, fp32), multiplied by its measured matmul peak over this machine's (the peak the
  host measures anyway before the first strategy: the calibration costs nothing more).

A strategy neither source knows (a plugin's, or custom sizes never run here) gets no estimate, and
the line says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.plain import to_data
from bench.core.progress import duration

KEEP = 5  # runs kept per key in the record

# The reference machine: wall seconds per strategy and preset on an idle 2-core AMD EPYC (AVX2+FMA, no
# avx512_bf16, fp32, torch 2.13.0 CPU; process start-up included, so each strategy's measured total plus
# about 4 s), with the fp32 matmul peak it measured then. Default and smoke: first runs on a quiet machine
# on 2026-11-30 (docs/cpu-presets.md; feature-extraction computed its embeddings, sft's de-quantised
# model was cached); ci: last-layers and all-layers from the calibration's runs (about 24 and 40 s), feature-extraction
# from per-step costs measured with one thread. They only seed the estimate until
# this machine's record has a run of its own, which then replaces them.
REFERENCE_MACHINE = "2-core AMD EPYC, AVX2+FMA, fp32"
REFERENCE_PEAK_FLOPS = 141.5e9
REFERENCE_SECONDS: dict[tuple[str, str], float] = {
    ("feature-extraction", "default"): 68.0,
    ("last-layers", "default"): 56.0,
    ("all-layers", "default"): 251.0,
    ("sft", "default"): 393.0,
    ("feature-extraction", "smoke"): 27.0,
    ("last-layers", "smoke"): 25.0,
    ("all-layers", "smoke"): 36.0,
    ("sft", "smoke"): 58.0,
    ("feature-extraction", "ci"): 40.0,
    ("last-layers", "ci"): 24.0,
    ("all-layers", "ci"): 40.0,
}


@dataclass(frozen=True)
class Guess:
    """One strategy's estimate: seconds (None: unknown) and where it comes from."""

    strategy: str
    seconds: float | None
    source: str  # "record" | "reference" | "unknown"
    runs: int = 0  # record: how many earlier runs it is the median of


@dataclass(frozen=True)
class RunEstimate:
    guesses: tuple[Guess, ...]
    repeats: int = 1

    @property
    def total_s(self) -> float:
        return self.repeats * sum(g.seconds or 0.0 for g in self.guesses)

    def line(self, peak_flops: float | None) -> str:
        """One line for the log: the total and how each part is derived."""
        known = [g for g in self.guesses if g.seconds is not None]
        unknown = [g.strategy for g in self.guesses if g.seconds is None]
        if not known:
            return (f"estimate: none yet for {', '.join(unknown)} (no earlier run of these sizes on this machine; "
                    "the next run will know)")
        parts = []
        for g in known:
            if g.source == "record":
                parts.append(f"{g.strategy} ~{duration(g.seconds or 0)} (median of {g.runs} earlier "
                             f"run{'s' if g.runs != 1 else ''} here)")
            else:
                parts.append(f"{g.strategy} ~{duration(g.seconds or 0)} (reference {REFERENCE_MACHINE} x "
                             f"its peak {REFERENCE_PEAK_FLOPS / 1e9:,.0f} / this machine's "
                             f"{(peak_flops or 0) / 1e9:,.0f} GFLOP/s)")
        repeats = f" x {self.repeats} repeats" if self.repeats > 1 else ""
        tail = f"; unknown: {', '.join(unknown)} (never run with these sizes here)" if unknown else ""
        return f"estimate: ~{duration(self.total_s)} on this machine{repeats}: {'; '.join(parts)}{tail}"


def run_key(name: str, cfg: Any, settings: Mapping[str, Any]) -> str:
    """A digest of what one strategy run does: its resolved config and the invocation settings that
    change the work (model, data, device, precision, weights, sequence length)."""
    what = {"strategy": name, "config": to_data(cfg),
            **{k: to_data(settings.get(k)) for k in ("model", "dataset", "device", "precision", "weights", "seq_len")}}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]


ENV_RUNTIMES_DIR = "BENCH_RUNTIMES_DIR"  # where the records live (default <cache>/runtimes; tests point it away)


def record_path(cache: Path, fingerprint: str) -> Path:
    folder = os.environ.get(ENV_RUNTIMES_DIR)
    return (Path(folder).expanduser() if folder else cache / "runtimes") / f"{fingerprint}.json"


def read_record(path: Path) -> dict[str, list[float]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): [float(x) for x in v] for k, v in dict(data["runs"]).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # none yet, or damaged: start again


def add_to_record(path: Path, key: str, wall_s: float) -> None:
    """Append one finished run's wall time (kept: the last :data:`KEEP` per key); atomic."""
    runs = read_record(path)
    runs[key] = (runs.get(key, []) + [float(wall_s)])[-KEEP:]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"runs": runs}, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def estimate(plan: Sequence[tuple[str, str]], record: Mapping[str, Sequence[float]], *, preset: str,
             device: str, peak_flops: float | None, custom: bool, repeats: int = 1) -> RunEstimate:
    """The estimate for ``plan`` ((strategy, run key) in order): the record's median where it has the key;
    else, on the CPU and for a preset's own sizes (``custom`` False), the reference scaled by the peak."""
    guesses = []
    for name, key in plan:
        past = list(record.get(key, ()))
        reference = REFERENCE_SECONDS.get((name, preset))
        if past:
            guesses.append(Guess(name, statistics.median(past), "record", len(past)))
        elif reference is not None and device == "cpu" and not custom and peak_flops:
            guesses.append(Guess(name, reference * REFERENCE_PEAK_FLOPS / peak_flops, "reference"))
        else:
            guesses.append(Guess(name, None, "unknown"))
    return RunEstimate(tuple(guesses), max(1, repeats))
