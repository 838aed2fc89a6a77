"""A test-only plugin whose strategies misbehave on request (tests/test_faults.py, scripts/faults.py).

``fault-a``, ``fault-b`` and ``fault-c`` are the same strategy under three names; ``-o fault-b.mode=...``
picks what one of them does: ``ok``, ``raise``, ``hang`` (sleeps in phase train), ``exit`` (the
process exits with code 3), ``kill`` (SIGKILL to itself), ``alloc`` (allocates 64 MiB blocks until the
memory runs out), ``cuda-oom`` (CUDA out of memory: real on a CUDA device, raised as torch raises it
elsewhere), ``no-primary`` (returns no primary metric), ``bad-extra`` (an ``extra`` JSON cannot hold).
``accuracy`` is the metric it reports (``-o fault-a.accuracy=nan`` for a NaN).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from bench.api import ParamCounts, StrategyOutput, hookimpl, option


@dataclass(frozen=True)
class FaultConfig:
    mode: str = option("ok", "ok | raise | hang | exit | kill | alloc | cuda-oom | no-primary | bad-extra")
    steps: int = option(4, "measured steps", ge=1)
    accuracy: float = option(0.5, "the test_accuracy it reports")
    seconds: float = option(600.0, "how long hang sleeps")
    alloc_mib: int = option(8192, "alloc: how much it tries to hold at most")


class Faulty:
    description = "a test strategy that misbehaves on request"
    task = "classification"
    config_class = FaultConfig

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, run):
        cfg = run.config
        with run.meter.phase("setup"):
            pass
        with run.meter.phase("train"):
            for _ in range(cfg.steps):
                with run.meter.step(samples=4, tokens=40):
                    sum(range(2000))
            if cfg.mode == "raise":
                raise ValueError("fault: the data was bad")
            if cfg.mode == "hang":
                time.sleep(cfg.seconds)
            if cfg.mode == "exit":
                os._exit(3)
            if cfg.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if cfg.mode == "alloc":
                import torch

                held = [torch.ones(64 << 20, dtype=torch.uint8) for _ in range(cfg.alloc_mib // 64)]
                del held
            if cfg.mode == "cuda-oom":
                import torch

                if run.device == "cuda":
                    torch.empty(1 << 50, dtype=torch.uint8, device="cuda")  # 1 PiB
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                                                  "total capacity of 79.19 GiB of which 1.02 GiB is free.")
        metrics = {} if cfg.mode == "no-primary" else {"test_accuracy": cfg.accuracy}
        extra = {"handle": object()} if cfg.mode == "bad-extra" else {}
        return StrategyOutput(metrics={**metrics, "test_macro_f1": 0.25}, params=ParamCounts(10, 5, 40, 20, 40),
                              extra={"note": "kept", **extra})


@hookimpl
def bench_register_strategies():
    return [Faulty("fault-a"), Faulty("fault-b"), Faulty("fault-c")]
