"""``last-layers``: train only the classification head plus the last N transformer blocks.

For BERT-style models the head is the pooler and the classifier (the seed's "last 2 layers" of
DistilBERT were its pre_classifier and classifier). ``n_last=0`` trains the head alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.api import CLASSIFICATION_PRESETS, FinetuneConfig, RunContext, StrategyOutput, finetune, hookimpl


@dataclass(frozen=True)
class LastLayersConfig(FinetuneConfig):
    n_last: int = field(default=0, metadata={"help": "transformer blocks trained below the head (0: head only)"})
    train_layers: str = field(default="", metadata={"help": "what trains (default for last-layers: head+last:N)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW); a fresh head wants more"})


class LastLayers:
    name = "last-layers"
    description = "train the classification head plus the last N transformer blocks (default: head only)"
    task = "classification"
    config_class = LastLayersConfig
    # smoke: a fresh head on frozen features learns slowly from few examples (measured on a majority class
    # of 0.5312: 0.5625 after 60 steps of 16 at 5e-4; 0.5859 after 120 at 3e-3 on 320 examples, and the
    # same with the last block training too); its steps are cheap (the frozen prefix is cached), so 640
    # examples, 4 epochs at 3e-3 (0.6562).
    presets = {**CLASSIFICATION_PRESETS, "smoke": {**CLASSIFICATION_PRESETS["smoke"], "epochs": 4, "lr": 3e-3}}

    def run(self, run: RunContext) -> StrategyOutput:
        cfg = run.config
        spec = cfg.train_layers or (f"head+last:{cfg.n_last}" if cfg.n_last else "head")
        return finetune(run, cfg, spec)


@hookimpl
def bench_register_strategies() -> list[Any]:
    return [LastLayers()]
