"""The plots: accuracy against cost (``bench report --plot``, and the HTML report), and throughput
against peak memory (the HTML report)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.results.schema import RunResult


def plot(results: Sequence[RunResult], path: Path) -> Path:
    """Accuracy (primary metric) against training time, marker area proportional to peak memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for r in results:
        if not r.passed or r.primary_metric not in r.metrics:
            continue
        train = r.phase("train") or r.phase("extract")
        seconds = sum(p.wall_s for p in r.phases if p.name in ("extract", "train")) if train else r.wall_s
        peaks = [p.gpu_peak_allocated_bytes or p.cpu_peak_rss_bytes or 0 for p in r.phases]
        label = f"{r.label}: {r.strategy}" if r.label else r.strategy
        points.append((seconds, r.metrics[r.primary_metric], max(peaks, default=0) / 2**20, label, r.primary_metric))
    if not points:
        raise UsageError("--plot: no passed result with a task metric to draw")
    biggest = max(p[2] for p in points) or 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for seconds, metric, mib, label, _ in points:
        ax.scatter(seconds, metric, s=60 + 1200 * mib / biggest, alpha=0.55)
        ax.annotate(f"{label}\n{mib:,.0f} MiB", (seconds, metric), textcoords="offset points", xytext=(8, 6),
                    fontsize=8)
    ax.set_xlabel("training time (s): extract + train phases")
    ax.set_ylabel(points[0][4].replace("_", " "))
    return _save(fig, ax, "Accuracy against training cost (marker area: peak memory)", path)


def throughput_memory_plot(results: Sequence[RunResult], path: Path) -> Path:
    """Each passed run's main throughput (samples/s over timed steps) against its highest peak memory
    (GPU allocated where measured, else CPU RSS) over its phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for r in results:
        main = r.main_throughput() if r.passed else None
        if main is None or main[1].samples_per_s is None:
            continue
        gpu = [p.gpu_peak_allocated_bytes for p in r.phases if p.gpu_peak_allocated_bytes]
        cpu = [p.cpu_peak_rss_bytes for p in r.phases if p.cpu_peak_rss_bytes]
        peak, kind = (max(gpu), "GPU allocated") if gpu else (max(cpu, default=0), "CPU RSS")
        label = f"{r.label}: {r.strategy}" if r.label else r.strategy
        points.append((peak / 2**20, main[1].samples_per_s, f"{label} ({main[0]})", kind))
    if not points:
        raise UsageError("no passed result with a measured throughput to draw")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for mib, rate, label, _ in points:
        ax.scatter(mib, rate, s=80, alpha=0.6)
        ax.annotate(label, (mib, rate), textcoords="offset points", xytext=(8, 6), fontsize=8)
    kinds = sorted({p[3] for p in points})
    ax.set_xlabel(f"peak memory (MiB, {' / '.join(kinds)}; highest phase)")
    ax.set_ylabel("samples/s (timed steps of the main phase)")
    return _save(fig, ax, "Throughput against peak memory", path)


def _save(fig: Any, ax: Any, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
