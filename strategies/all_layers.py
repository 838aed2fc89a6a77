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

    def run(self, run: RunContext) -> StrategyOutput:
        return finetune(run, run.config, run.config.train_layers)


@hookimpl
def bench_register_strategies() -> list[Any]:
    return [AllLayers()]
