"""The bench-baselines plugin: the module the ``finetune_bench`` entry point names.

It declares hooks only. transformers.Trainer (and accelerate) are imported when a strategy runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.api import hookimpl

from bench_baselines.hf_trainer import HfTrainer, HfTrainerSft
from bench_baselines.seed_loop import SeedLoop


@hookimpl
def bench_register_strategies() -> list[Any]:
    return [HfTrainer(), HfTrainerSft(), SeedLoop()]


@hookimpl
def bench_report_sections(results: Sequence[Any]) -> list[Any]:
    """A speed-ratio table when the results hold a built-in strategy and the baseline it stands for."""
    from bench_baselines.ratios import ratio_section

    section = ratio_section(results)
    return [section] if section is not None else []
