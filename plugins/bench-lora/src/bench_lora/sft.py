"""``lora-sft``: LoRA adapters on a causal LM, supervised fine-tuning on instructions.

Data, prompts, response-only loss, speed techniques, generation and exact match come from the sft
recipe the built-in ``sft`` strategy uses (``bench.api.run_sft``), so a ``lora-sft`` row compares one to one with an ``sft`` row.
"""

from __future__ import annotations

from typing import Any

from bench.api import Adapted, RunContext, StrategyOutput, run_sft

from bench_lora import adapters
from bench_lora.classification import adapter_extra
from bench_lora.options import LoraSftConfig

SMOKE = {"train_samples": 48, "eval_samples": 24, "max_steps": 6, "max_length": 128, "show_generations": 3}
FULL = {"train_samples": 3000, "eval_samples": 300, "epochs": 1}


class LoraSft:
    name = "lora-sft"
    description = "LoRA adapters (peft) on a causal LM, supervised fine-tuning on instructions (as sft)"
    task = "causal-lm"
    config_class = LoraSftConfig
    presets = {"smoke": SMOKE, "full": FULL}
    devices = ("cpu", "cuda")

    def run(self, run: RunContext) -> StrategyOutput:
        cfg: LoraSftConfig = run.config

        def wrap(base: Any) -> Adapted:
            model, lora = adapters.wrap(base, cfg, strategy=self.name, task_type="CAUSAL_LM",
                                        modules_to_save=tuple(cfg.modules_to_save))
            # names as the model the training loop calls (the LoRA layers are injected into ``base``)
            params, modules = adapters.trained(model.get_base_model())

            def finish() -> tuple[dict[str, float], dict[str, Any]]:
                size = adapters.adapter_size(model)
                return {"adapter_mib": size.mib}, adapter_extra(run, model, lora, size, tuple(cfg.modules_to_save))

            return Adapted(model, model.get_base_model(), params, modules, finish)

        return run_sft(run, cfg, wrap)
