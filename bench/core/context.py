"""The run context: everything a strategy receives for one run."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.core.dist import DistContext
    from bench.core.strategy import Strategy
    from bench.measure.meter import Meter


@dataclass(frozen=True)
class RunContext:
    """One strategy run.

    Attributes:
        strategy: the strategy object.
        config: its resolved config (an instance of ``strategy.config_class``).
        bench: the invocation's :class:`bench.core.config.BenchConfig` (device, precision, seed, model...).
        meter: wrap phases in ``run.meter.phase(name)`` and steps in ``run.meter.step(samples, tokens)``.
        out_dir: this run's own folder (``<out>/runs/<strategy>-<i>``) for every artifact: caches,
            generations, adapters, checkpoints.
        profile_dir: where the profiler and the TensorBoard scalars write (``<run folder>/profile``).
        hook: the plugin manager's hook relay, to call hooks of other plugins.
        techniques: which speed techniques this run used, filled by :func:`bench.speed.apply` (the shared
            training path calls it) and recorded in the result; a strategy of its own may record its own
            with :meth:`record_technique`.
        dist: this rank's place in a torch.distributed job (:class:`bench.core.dist.DistContext`), or
            ``None`` for a one-process run. The shared training path handles it (model wrapping, batch
            dealing, sharded evaluation); a strategy of its own that does not must not be launched with
            ``--nproc-per-node`` (only strategies whose config has a ``parallel`` field are).
    """

    strategy: Strategy
    config: Any
    bench: BenchConfig
    meter: Meter
    out_dir: Path
    profile_dir: Path
    hook: Any = None
    techniques: dict[str, tuple[bool, str]] = field(default_factory=dict)
    dist: DistContext | None = None

    @property
    def device(self) -> str:
        """Where tensors go: the run's device; in plan mode (``bench plan``) ``meta`` (shapes and dtypes,
        no memory): the plan's one forward then runs on fake tensors (:mod:`bench.measure.plan`)."""
        return "meta" if self.bench.plan_only else self.bench.device

    @property
    def synthetic(self) -> bool:
        """Shape-only (``--weights random``) or plan mode: random weights, synthetic batches, no evaluation."""
        return self.bench.random_weights or self.bench.plan_only

    @property
    def world_size(self) -> int:
        """Ranks in this run's torch.distributed job (1 for a one-process run)."""
        return self.dist.world_size if self.dist is not None else 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's shared artifacts: rank 0, or the one process of a run."""
        return self.dist is None or self.dist.is_main

    @property
    def precision(self) -> str:
        return self.bench.precision

    @property
    def seed(self) -> int:
        return self.bench.seed

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on the run's device when ``--precision bf16``, else a no-op (and in plan mode,
        whose forward emulates autocast on the CPU itself)."""
        if self.precision != "bf16" or self.bench.plan_only:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device, dtype=torch.bfloat16)

    def record_technique(self, name: str, on: bool, detail: str = "") -> None:
        """Record whether speed technique ``name`` was on in this run, and what it did or why not."""
        self.techniques[name] = (bool(on), detail)
