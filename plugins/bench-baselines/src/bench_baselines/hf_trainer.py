"""``hf-trainer`` and ``hf-trainer-sft``: the same jobs as the built-ins, done the way the Hugging Face
docs teach: ``transformers.Trainer`` with a dynamic-padding collator, length-grouped sampling
(``train_sampling_strategy="group_by_length"``), bf16 where the device supports it, the default
(fused) AdamW with linear warm-up and decay, the model's default attention implementation, per-epoch
evaluation keeping the best checkpoint (classification).

Data, tokenisation, subsets, layer selection and the test evaluation are the built-ins' own
(through :mod:`bench.api`), so only the training differs. Timing: see
:mod:`bench_baselines.meter_callback`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.api import (
    CLASSIFICATION_PRESETS,
    TRAIN_LAYERS_SYNTAX,
    RunContext,
    SftOptions,
    StrategyOutput,
    TrainingOptions,
    load_inputs,
    option,
)

SFT_SMOKE = {"train_samples": 24, "eval_samples": 12, "batch_size": 4, "max_steps": 6, "lr": 5e-5, "max_length": 128,
             "show_generations": 3}
SFT_FULL = {"train_samples": 3000, "eval_samples": 300, "epochs": 1}


@dataclass(frozen=True)
class HfTrainerConfig(TrainingOptions):
    """The built-in fine-tuning options (without the speed techniques: the Trainer trains its own
    way), with transformers' own default attention."""

    train_layers: str = option("all", f"what trains: {TRAIN_LAYERS_SYNTAX}")
    attn_implementation: str = option("sdpa", "attention implementation (default: sdpa, transformers' default)")


@dataclass(frozen=True)
class HfTrainerSftConfig(SftOptions):
    """The ``sft`` options (without the speed techniques: the Trainer trains its own way), with
    transformers' own default attention."""

    train_layers: str = option("all", f"what trains: {TRAIN_LAYERS_SYNTAX}")
    attn_implementation: str = option("sdpa", "attention implementation (default: sdpa, transformers' default)")


def training_arguments(run: RunContext, cfg: Any, *, evaluate_each_epoch: bool) -> Any:
    """The Trainer setup the docs recommend, with the run's seed, precision and device. Spelled for
    the installed transformers: length grouping is ``train_sampling_strategy="group_by_length"``
    (newer) or ``group_by_length=True`` (older); warm-up a ratio in ``warmup_steps`` or ``warmup_ratio``."""
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    version_specific: dict[str, Any] = {}
    if "train_sampling_strategy" in fields:
        version_specific["train_sampling_strategy"] = "group_by_length"
    else:
        version_specific["group_by_length"] = True
    if "warmup_ratio" in fields:
        version_specific["warmup_ratio"] = cfg.warmup_ratio
    else:
        version_specific["warmup_steps"] = float(cfg.warmup_ratio)  # a float in [0, 1) is a ratio
    per_epoch = {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
                 "metric_for_best_model": "accuracy", "save_total_limit": 1, "save_only_model": True}
    return TrainingArguments(
        output_dir=str(run.out_dir / "trainer"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        bf16=run.precision == "bf16",
        use_cpu=run.device == "cpu",
        seed=run.seed,
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        dataloader_num_workers=0,
        **version_specific,
        **(per_epoch if evaluate_each_epoch else {"eval_strategy": "no", "save_strategy": "no"}),
    )


class HfTrainer:
    name = "hf-trainer"
    description = "baseline: transformers.Trainer (dynamic padding, group_by_length, bf16) on the same data"
    task = "classification"
    config_class = HfTrainerConfig
    presets = CLASSIFICATION_PRESETS

    def run(self, run: RunContext) -> StrategyOutput:
        from bench.api import (
            data_summary,
            evaluate,
            freeze_all_but,
            load_sequence_classifier,
            param_counts,
            prepare,
            select_layers,
        )
        from transformers import DataCollatorWithPadding

        from bench_baselines.meter_callback import metered_trainer

        cfg: HfTrainerConfig = run.config
        with run.meter.phase("setup"):
            prep = prepare(run, cfg.train_samples, cfg.eval_samples, cfg.max_length)
            model = load_sequence_classifier(prep.source, prep.data.label_names, cfg.attn_implementation)
            selection = select_layers(cfg.train_layers, model, always_train_new_head=True)
            freeze_all_but(model, selection)

            def rows(split: Any) -> list[dict[str, Any]]:
                return [{"input_ids": list(e.input_ids), "attention_mask": [1] * len(e), "labels": e.label}
                        for e in split]

            trainer = metered_trainer(run.meter, model=model,
                                      args=training_arguments(run, cfg, evaluate_each_epoch=True),
                                      train_dataset=rows(prep.train), eval_dataset=rows(prep.validation),
                                      data_collator=DataCollatorWithPadding(prep.tokenizer),
                                      compute_metrics=_accuracy)
        trainer.train()
        history = [{k: float(v) for k, v in h.items() if isinstance(v, (int, float))}
                   for h in trainer.state.log_history if "eval_accuracy" in h]
        with run.meter.phase("eval"):
            test = evaluate(run, model, prep.test, cfg.eval_batch_size, prep.pad_id)
        best = max((h["eval_accuracy"] for h in history), default=float("nan"))
        return StrategyOutput(
            metrics={"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
                     "best_val_accuracy": best, "test_loss": test["loss"]},
            params=param_counts(model, trainer.optimizer),
            trained_parameters=selection.parameters,
            trained_modules=selection.modules,
            extra={"train_layers": cfg.train_layers, "model": prep.source, "data": data_summary(prep.data),
                   "optimizer": trainer.args.optim, "attn_implementation": cfg.attn_implementation,
                   "optimizer_steps": trainer.state.global_step, "history": history,
                   "stands_for": "all-layers" if cfg.train_layers == "all" else "last-layers"},
        )


def _accuracy(prediction: Any) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


class HfTrainerSft:
    name = "hf-trainer-sft"
    description = "baseline: transformers.Trainer doing the sft strategy's supervised fine-tuning (same data)"
    task = "causal-lm"
    config_class = HfTrainerSftConfig
    presets = {"smoke": SFT_SMOKE, "full": SFT_FULL}

    def run(self, run: RunContext) -> StrategyOutput:
        from bench.api import (
            evaluate_loss,
            exact_match_scores,
            freeze_all_but,
            generate,
            load_causal_lm,
            metric_suffix,
            pad_id_of,
            param_counts,
            response_window_lm,
            select_layers,
        )
        from transformers import DataCollatorForSeq2Seq

        from bench_baselines.meter_callback import metered_trainer

        cfg: HfTrainerSftConfig = run.config
        with run.meter.phase("setup"):
            inputs = load_inputs(run.bench, cfg)
            source, tokenizer, style = inputs.source, inputs.tokenizer, inputs.style
            train_split, test_split = inputs.train, inputs.test
            model = load_causal_lm(source, cfg.attn_implementation)
            selection = select_layers(cfg.train_layers, model, always_train_new_head=False)
            freeze_all_but(model, selection)
            pad = pad_id_of(tokenizer)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token_id = pad
            tokenizer.padding_side = "right"  # training: right padding, positions from 0
            rows = [{"input_ids": list(it.encoded.input_ids), "attention_mask": [1] * len(it.encoded),
                     "labels": list(it.encoded.token_labels or ())} for it in train_split.items]
            collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
            trainer = metered_trainer(run.meter, model=model,
                                      args=training_arguments(run, cfg, evaluate_each_epoch=False),
                                      train_dataset=rows, data_collator=collator)
        trainer.train()
        test = test_split.items
        with run.meter.phase("eval"):
            loss, _ = evaluate_loss(run, response_window_lm(model), test, cfg.eval_batch_size, pad)
            after = generate(run, model, tokenizer, test, cfg.eval_batch_size, cfg.max_new_tokens, pad,
                                 "generate (after)")
        scores = exact_match_scores(test, after)
        metrics = {"exact_match_after": scores.overall, "eval_loss": loss}
        if len(scores.by_source) > 1:
            for src, value in scores.by_source.items():
                metrics[f"exact_match_after_{metric_suffix(src)}"] = value
        return StrategyOutput(
            metrics=metrics,
            params=param_counts(model, trainer.optimizer),
            primary_metric="exact_match_after",
            trained_parameters=selection.parameters,
            trained_modules=selection.modules,
            extra={"model": source, "prompt_format": style, "train_layers": cfg.train_layers,
                   "optimizer": trainer.args.optim, "attn_implementation": cfg.attn_implementation,
                   "optimizer_steps": trainer.state.global_step, "stands_for": "sft",
                   "train_input_tokens": sum(s.input_tokens for s in run.meter.steps if s.phase == "train")},
        )
