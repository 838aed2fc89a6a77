"""The built-in ``tensorboard`` plugin: per-step loss, learning rate and throughput as TensorBoard
scalars, in the run folder's ``profile/`` beside the profiler's traces, so one ``tensorboard --logdir
<out>`` shows the curves beside the traces. Needs the ``tensorboard`` package (a base dependency);
without it (an install that skipped dependencies) the plugin says so once and writes nothing. ``-p no:tensorboard`` turns it off.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.core.markers import hookimpl


@hookimpl
def bench_run_finished(run: Any, result: Any) -> None:
    scalars = run.meter.scalars()
    if not scalars or not run.is_main:  # under torch.distributed rank 0 writes (train/loss is over every rank)
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("bench: tensorboard is not installed; no scalars written (it is a dependency of "
              "finetune-bench: reinstall it, e.g. pip install -e .)",
              file=sys.stderr)
        return
    run.profile_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(run.profile_dir))
    try:
        for tag, step, value in scalars:
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
