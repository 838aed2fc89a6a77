"""One peak per machine, device and precision: the denominator of every MFU in a run.

The host settles the peak once, before the first strategy (:func:`machine_peak`), and every row of the
run uses that figure:

* **known GPUs**: the vendor's datasheet (dense, no sparsity; :data:`bench.measure.flops.GPU_PEAK_FLOPS`);
* **CPUs and other GPUs**: a measured matmul peak, probed with the shapes a transformer layer uses
  (its feed-forward projections and a square product), on every thread the runs use, repeated until
  the best rate stops improving, and kept as the best rate seen (a disturbed repeat is only ever
  slower). It is cached per machine in ``<cache>/peaks/<fingerprint>.json``, the fingerprint covering
  the CPU model and flags, the core count, the thread count, the torch version and the precision, so
  later runs on the same machine reuse it (``--remeasure-peak`` probes again).

Next to it, where it can be derived, the **theoretical** CPU peak: cores x clock x FLOPs per cycle for
the ISA (two FMA units: 32 fp32 FLOPs per cycle with AVX2, 64 with AVX-512; bf16 dot products double
that where avx512_bf16 is present). The clock is the CPU's maximum frequency where the kernel reports
one, else the current ``cpu MHz``, and the source says which. An MFU above 100% is impossible: a run
that computes one says its peak is wrong instead of printing it (:func:`judge_mfu`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.measure.machine import cpu_model_and_flags

# (rows, inner, cols) of the products a transformer layer runs at 2,048 tokens: a MiniLM-sized and a
# BERT-base-sized feed-forward projection, and a square product.
PROBE_SHAPES: tuple[tuple[int, int, int], ...] = ((2048, 384, 1536), (2048, 768, 3072), (2048, 2048, 2048))


@dataclass(frozen=True)
class Peak:
    """The peak FLOP/s a run's MFU is measured against, and where it comes from."""

    flops: float
    source: str  # "datasheet: ...", "measured: ...", "cached measurement: ..."
    device: str
    precision: str
    theoretical_flops: float | None = None
    theoretical_source: str = ""
    fingerprint: str = ""
    probe: dict[str, Any] | None = None  # per-shape best rates and repeats, when measured


def fingerprint(device: str, precision: str, threads: int) -> str:
    """What a measured peak depends on: the CPU (model, flags, cores) or GPU name, threads, torch, precision."""
    import torch

    if device == "cuda":
        what = f"gpu={torch.cuda.get_device_name(0)}"
    else:
        model, flags = cpu_model_and_flags()
        what = f"cpu={model}|flags={' '.join(sorted(flags))}|cores={os.cpu_count()}"
    text = f"{what}|threads={threads}|torch={torch.__version__}|precision={precision}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def machine_peak(device: str, precision: str, cache_dir: Path | None, *, remeasure: bool = False) -> Peak:
    """The run's peak: the datasheet's for a known GPU; else the cached measurement for this machine, or a
    new probe (saved to the cache)."""
    import torch

    from bench.measure.flops import table_peak

    threads = torch.get_num_threads()
    fp = fingerprint(device, precision, threads)
    theoretical, theory_source = theoretical_peak(device, precision)
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        flops = table_peak(name, precision)
        if flops is not None:
            return Peak(flops, f"datasheet: {name}, {precision} dense", device, precision, flops,
                        f"datasheet: {name}", fp)
    path = cache_dir / "peaks" / f"{fp}.json" if cache_dir is not None else None
    cached = _read_cache(path)
    if cached is not None and not remeasure:
        return Peak(float(cached["flops"]), f"cached measurement ({cached['measured_utc']}): {cached['how']}",
                    device, precision, theoretical, theory_source, fp, cached.get("probe"))
    best, probe = probe_peak(device, precision)
    if cached is not None and float(cached["flops"]) > best:  # a measured rate is reachable: keep the higher
        best, probe = float(cached["flops"]), dict(cached.get("probe") or {})
    how = (f"best of {probe['repeats']} repeats of {len(PROBE_SHAPES)} transformer-layer matmul shapes, "
           f"{precision}, {threads} threads")
    if path is not None:
        import datetime

        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"flops": best, "how": how, "measured_utc": stamp, "probe": probe}))
        tmp.replace(path)
    return Peak(best, f"measured: {how}", device, precision, theoretical, theory_source, fp, probe)


def _read_cache(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        float(data["flops"]), str(data["how"]), str(data["measured_utc"])
        return dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged entry is measured again


def probe_peak(device: str, precision: str, min_repeats: int = 3, max_repeats: int = 12,
               budget_s: float = 2.0) -> tuple[float, dict[str, Any]]:
    """The best matmul rate over :data:`PROBE_SHAPES`: each shape timed repeatedly (after a warm-up) until
    its best rate has not improved by 1% in three repeats, or ``max_repeats``, within ``budget_s``."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rates: dict[str, float] = {}
    repeats = 0
    deadline = time.perf_counter() + budget_s
    for rows, inner, cols in PROBE_SHAPES:
        rows = _affordable_rows(rows, inner, cols, dtype, device, budget_s / len(PROBE_SHAPES), min_repeats + 2)
        a = torch.randn(rows, inner, device=device, dtype=dtype)
        b = torch.randn(inner, cols, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        sync()
        best, stale, n = 0.0, 0, 0
        while n < max_repeats and (n < min_repeats or (stale < 3 and time.perf_counter() < deadline)):
            start = time.perf_counter()
            a @ b
            sync()
            rate = 2.0 * rows * inner * cols / (time.perf_counter() - start)
            stale = 0 if rate > best * 1.01 else stale + 1
            best = max(best, rate)
            n += 1
        repeats = max(repeats, n)
        rates[f"{rows}x{inner}x{cols}"] = best
    return max(rates.values()), {"rates_flops": rates, "repeats": repeats}


def _affordable_rows(rows: int, inner: int, cols: int, dtype: Any, device: str, budget_s: float, calls: int) -> int:
    """``rows``, or fewer (a multiple of 16, at least 64) when ``calls`` products of the full shape would take
    more than 30x ``budget_s`` (then about 4x): a dtype the CPU has no instructions for (bf16 on an
    AVX2-only CPU runs about 100x slower than fp32) made the full probe take 6 minutes. Estimated from one
    64-row product, which runs below the full shape's rate, hence the wide margin: fp32 shapes keep their
    size."""
    import torch

    if device == "cuda":
        return rows
    probe_rows = min(rows, 64)
    a = torch.randn(probe_rows, inner, dtype=dtype)
    b = torch.randn(inner, cols, dtype=dtype)
    a @ b
    start = time.perf_counter()
    a @ b
    full_s = (time.perf_counter() - start) * rows / probe_rows
    if full_s * calls <= 30 * budget_s:
        return rows
    return max(64, min(rows, int(rows * 4 * budget_s / (full_s * calls)) // 16 * 16))


def theoretical_peak(device: str, precision: str) -> tuple[float | None, str]:
    """cores x clock x FLOPs per cycle for the CPU's ISA, with how it was derived; None where it cannot be."""
    if device != "cpu":
        return None, ""
    _, flags = cpu_model_and_flags()
    if "avx512f" in flags:
        per_cycle, isa = 64, "AVX-512 (2 FMA units x 16 fp32 lanes x 2)"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "AVX2+FMA (2 FMA units x 8 fp32 lanes x 2)"
    else:
        return None, "no AVX2/AVX-512 FMA flags: the FLOPs per cycle of this CPU are not known here"
    if precision == "bf16":
        if "avx512_bf16" in flags or "amx_bf16" in flags:
            per_cycle, isa = per_cycle * 2, isa + ", x2 for bf16 dot products (avx512_bf16)"
        else:
            isa += "; no native bf16: bf16 runs at the fp32 rate or below"
    clock_hz, clock_source = _clock_hz()
    if clock_hz is None:
        return None, "the CPU's clock is not reported"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    flops = cores * clock_hz * per_cycle
    return flops, (f"{cores} cores x {clock_hz / 1e9:.2f} GHz ({clock_source}) x {per_cycle} FLOP/cycle ({isa})")


def _clock_hz() -> tuple[float | None, str]:
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip())
        return khz * 1e3, "maximum frequency"
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) * 1e6, "current frequency from /proc/cpuinfo"
    except (OSError, ValueError):
        pass
    return None, ""


def achieved_flops(flops_per_token: float, input_tokens: int, seconds: float) -> float:
    """FLOP/s a run achieved: counted FLOPs per (padded) token x the non-padding input tokens its timed
    steps processed / their seconds. MFU is this over the peak (:func:`judge_mfu`)."""
    return flops_per_token * input_tokens / seconds


def judge_mfu(achieved_flops: float, peak: Peak) -> tuple[float | None, str]:
    """MFU against ``peak``, or None and why, when it would exceed 100% (the peak is then wrong)."""
    if peak.flops <= 0:
        return None, "no peak"
    mfu = achieved_flops / peak.flops
    if mfu > 1.0:
        return None, (f"MFU would be {mfu:.0%}: the peak ({peak.flops / 1e9:,.1f} GFLOP/s, {peak.source}) is "
                      "too low for this machine; remeasure it (--remeasure-peak)")
    return mfu, ""


def peak_data(peak: Peak) -> dict[str, Any]:
    return asdict(peak)
