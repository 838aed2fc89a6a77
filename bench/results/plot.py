"""The accuracy-against-cost plot of ``bench report --plot``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    ax.set_title("Accuracy against training cost (marker area: peak memory)")
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
