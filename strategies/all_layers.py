"""``all-layers``: fine-tune every parameter (the seed's strongest and most expensive option)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.api import CLASSIFICATION_PRESETS, FinetuneConfig, RunContext, StrategyOutput, finetune, hookimpl


@dataclass(frozen=True)
class AllLayersConfig(FinetuneConfig):
    """All-layers options: the shared fine-tuning options; ``--train-layers`` narrows the selection."""


class AllLayers:
    name = "all-layers"
    description = "fine-tune every layer of the encoder and the classification head"
    task = "classification"
    config_class = AllLayersConfig
    presets = CLASSIFICATION_PRESETS
    # Two runs of identical code land further apart than last-layers' (bench compare's default floor, 2%):
    # 20 rounds of tests/benchmarks/calibrate.py --strategy all-layers (--preset ci, shared 2-core VM, fp32)
    # spread by 4.2% after load normalisation, 1.6% of it the steps' own interval: a floor of 3.9% (docs/ci.md).
    run_to_run_noise_pct = 4.0

    def run(self, run: RunContext) -> StrategyOutput:
        return finetune(run, run.config, run.config.train_layers)


@hookimpl
def bench_register_strategies() -> list[Any]:
    return [AllLayers()]
