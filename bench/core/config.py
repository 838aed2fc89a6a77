"""The resolved configuration of one invocation, as every process and layer sees it.

:class:`BenchConfig` is built by the host (:mod:`bench.host.config` resolves it from defaults, presets,
the config file and the command line), frozen, and handed to every run process; strategies read it
as ``run.bench``. It is plain data, picklable, and knows nothing of plugins or argparse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.plain import to_data

DEFAULT_PRESET = "default"


@dataclass(frozen=True)
class PluginSpec:
    """What a run process needs to load the same plugins as the host."""

    enable: tuple[str, ...] = ()  # -p module
    disable: tuple[str, ...] = ()  # -p no:name
    plugins_dir: str | None = None
    autoload: bool = True


@dataclass(frozen=True)
class LaunchSettings:
    """How strategy runs use torch.distributed (``--nproc-per-node`` and friends), or which rank of an outer
    launcher's job (``torchrun``, ``srun torchrun``) this process is.

    ``nproc_per_node`` 0 (the default) runs each strategy in one process without torch.distributed; N >= 1
    launches each parallel-capable strategy run as a job of ``nnodes`` x N processes through torch's elastic
    launcher. ``outer`` is set when ``bench run`` itself was started as one rank (RANK/WORLD_SIZE/LOCAL_RANK in
    the environment): it then runs every strategy in this process, as that rank."""

    nproc_per_node: int = 0
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""  # host:port of node 0's rendezvous (several nodes); "" on one node: a free local port
    timeout_s: float = 300.0  # collectives, rendezvous and the exchange after each run
    scaling_reference: bool = True  # N > 1 on one node: also run each strategy in one process (scaling efficiency)
    outer: bool = False

    @property
    def launches(self) -> bool:
        """``bench run`` launches each parallel-capable strategy run as a torch.distributed job."""
        return self.nproc_per_node > 0 and not self.outer

    @property
    def distributed(self) -> bool:
        return self.launches or self.outer


@dataclass(frozen=True)
class BenchConfig:
    """Everything one ``bench run`` was told, resolved and frozen; picklable for run processes."""

    strategies: tuple[str, ...] = ()
    device: str = "cpu"
    precision: str = "fp32"
    seed: int = 0
    out_dir: Path = Path(".bench")
    model: str | None = None
    dataset: str | None = None
    preset: str = DEFAULT_PRESET
    isolate: bool = True
    warmup_steps: int = 2
    options: Mapping[str, Any] = field(default_factory=dict)
    strategy_values: Mapping[str, Any] = field(default_factory=dict)
    strategy_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    plugins: PluginSpec = field(default_factory=PluginSpec)
    config_file: Path | None = None
    weights: str = "pretrained"  # pretrained | random (shape-only runs: the model built from its config)
    seq_len: int = 0  # synthetic batches of --weights random: every example this long (0: the default data's lengths)
    plan_only: bool = False  # bench plan: strategies stop at their first step with a memory plan
    repeats: int = 1  # --repeats N: each strategy N times, seeds seed..seed+N-1, interleaved
    peak_flops: float | None = None  # the run's peak FLOP/s (bench.measure.peak), settled by the host once
    peak_source: str = ""
    peak_threads: int = 0  # the CPU threads that peak was measured with (a rank's share scales by them); 0: GPU
    quiet: bool = False  # -q: no progress bars, status lines or notes (host and run processes)
    debug: bool = False  # --debug: tracebacks for plugin import errors and failed rows
    in_run_process: bool = False  # True in the process that runs one strategy (set by the worker)
    launch: LaunchSettings = field(default_factory=LaunchSettings)  # torch.distributed: --nproc-per-node, torchrun
    argv: tuple[str, ...] = ()  # the `bench run` arguments as typed (global options left out), for --resume

    @property
    def random_weights(self) -> bool:
        """A shape-only run: random weights, synthetic batches, no evaluation."""
        return self.weights == "random"

    def getoption(self, name: str, default: Any = None) -> Any:
        """The value of an option declared through ``bench_addoption`` (by its dest name)."""
        return self.options.get(name.lstrip("-").replace("-", "_"), default)

    def settings(self) -> dict[str, Any]:
        """The host settings as plain data, for the provenance of every result."""
        return {f.name: to_data(getattr(self, f.name)) for f in dataclasses.fields(self)}

