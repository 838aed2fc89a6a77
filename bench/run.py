"""The run context: everything a strategy receives for one run."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.config import BenchConfig
    from bench.measure import Meter
    from bench.strategy import Strategy


@dataclass(frozen=True)
class RunContext:
    """One strategy run.

    Attributes:
        strategy: the strategy object.
        config: its resolved config (an instance of ``strategy.config_class``).
        bench: the invocation's :class:`bench.config.BenchConfig` (device, precision, seed, model...).
        meter: wrap phases in ``run.meter.phase(name)`` and steps in ``run.meter.step(samples, tokens)``.
        out_dir: a folder of this run's own for artifacts (caches, generations, checkpoints).
        profile_dir: where the profiler writes this run's traces.
        hook: the plugin manager's hook relay, to call hooks of other plugins.
    """

    strategy: Strategy
    config: Any
    bench: BenchConfig
    meter: Meter
    out_dir: Path
    profile_dir: Path
    hook: Any = None

    @property
    def device(self) -> str:
        return self.bench.device

    @property
    def precision(self) -> str:
        return self.bench.precision

    @property
    def seed(self) -> int:
        return self.bench.seed

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on the run's device when ``--precision bf16``, else a no-op."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device, dtype=torch.bfloat16)
