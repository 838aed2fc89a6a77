"""``lora``: LoRA adapters on a sequence classifier, the classification head trained in full.

The same data, training loop, speed techniques and evaluation as the built-in ``all-layers`` strategy
(``bench.api.train_and_test``), so its rows compare one to one; only the model differs: the
classifier is wrapped with peft before training.
"""

from __future__ import annotations

from typing import Any

from bench.api import (
    CLASSIFICATION_PRESETS,
    RunContext,
    StrategyOutput,
    attention_implementation,
    classification_evidence,
    classification_metrics,
    data_summary,
    load_classifier,
    param_counts,
    prepare,
    train_and_test,
)

from bench_lora import adapters
from bench_lora.options import LoraClassificationConfig


class Lora:
    name = "lora"
    description = "LoRA adapters (peft) on the attention projections; the classification head trains in full"
    task = "classification"
    config_class = LoraClassificationConfig
    presets = CLASSIFICATION_PRESETS
    devices = ("cpu", "cuda")

    def run(self, run: RunContext) -> StrategyOutput:
        cfg: LoraClassificationConfig = run.config
        with run.meter.phase("setup"):
            prep = prepare(run, cfg.train_samples, cfg.eval_samples, cfg.max_length)
            base = load_classifier(run, prep.source, prep.data.label_names,
                                   attention_implementation(run.device, cfg.attn_implementation))
            head = tuple(cfg.modules_to_save) or adapters.new_head_modules(base)
            model, lora = adapters.wrap(base, cfg, strategy=self.name, task_type="SEQ_CLS", modules_to_save=head)
            model.to(run.device)
        done = train_and_test(run, cfg, prep, model)
        outcome = done.outcome
        size = adapters.adapter_size(model)
        params, modules = adapters.trained(model)
        metrics = classification_metrics(done)
        if metrics:  # a shape-only run measures no task metric; the adapter's size is one of those
            metrics["adapter_mib"] = size.mib
        return StrategyOutput(
            metrics=metrics,
            params=param_counts(model, outcome.optimizer),
            **classification_evidence(run, prep, done),
            trained_parameters=params,
            trained_modules=modules,
            extra={
                **adapter_extra(run, model, lora, size, head),
                "model": prep.source,
                "data": data_summary(prep.data),
                "best_epoch": outcome.best_epoch,
                "optimizer_steps": outcome.steps,
                "history": list(outcome.history),
            },
        )


def adapter_extra(run: Any, model: Any, lora: Any, size: adapters.AdapterSize,
                  modules_to_save: tuple[str, ...]) -> dict[str, Any]:
    """The adapter's size (in memory and, unless --lora-save-adapter false, on disk) and its settings."""
    extra: dict[str, Any] = {
        "adapter_parameters": size.parameters,
        "adapter_bytes": size.bytes,
        "adapter_lora_parameters": size.lora_parameters,
        "adapter_head_parameters": size.head_parameters,
        "rank": lora.r,
        "alpha": lora.lora_alpha,
        "dropout": lora.lora_dropout,
        "target_modules": sorted(lora.target_modules),
        "modules_to_save": list(modules_to_save),
    }
    if run.bench.getoption("lora_save_adapter", True):
        folder = run.out_dir / "adapter"
        extra["adapter_file_bytes"] = adapters.save_adapter(model, folder)
        extra["adapter_dir"] = str(folder)
    return extra
