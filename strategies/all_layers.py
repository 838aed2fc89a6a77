"""``all-layers``: fine-tune every parameter (the seed's strongest and most expensive option)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.api import FinetuneConfig, RunContext, StrategyOutput, finetune, hookimpl

SMOKE = {"train_samples": 320, "eval_samples": 128, "epochs": 1, "max_length": 64}
FULL = {"train_samples": 0, "epochs": 3}


@dataclass(frozen=True)
class AllLayersConfig(FinetuneConfig):
    """All-layers options: the shared fine-tuning options; ``--train-layers`` narrows the selection."""


class AllLayers:
    name = "all-layers"
    description = "fine-tune every layer of the encoder and the classification head"
    task = "classification"
    config_class = AllLayersConfig
    presets = {"smoke": SMOKE, "full": FULL}

    def run(self, run: RunContext) -> StrategyOutput:
        return finetune(run, run.config, run.config.train_layers)


@hookimpl
def bench_register_strategies() -> list[Any]:
    return [AllLayers()]
