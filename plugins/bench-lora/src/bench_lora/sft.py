"""``lora-sft``: LoRA adapters on a causal LM, supervised fine-tuning on instructions.

Data, prompts, response-only loss, generation and exact match come from ``bench.sft``, the library
the built-in ``sft`` strategy uses, so a ``lora-sft`` row compares one to one with an ``sft`` row.
"""

from __future__ import annotations

import math
from typing import Any

from bench import StrategyOutput
from bench import sft as lib
from bench.batching import length_grouped_order
from bench.measure import param_counts
from bench.models import attention_implementation, load_causal_lm, load_tokenizer, resolve_model
from bench.training import TrainSettings, train

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

    def run(self, run: Any) -> StrategyOutput:
        cfg: LoraSftConfig = run.config
        with run.meter.phase("setup"):
            source = resolve_model(run.bench.model, "causal-lm")
            tokenizer = load_tokenizer(source)
            style = lib.prompt_style(tokenizer, cfg.prompt_format)
            data = lib.load_instruction_data(run.bench.dataset, seed=cfg.data_seed, train_samples=cfg.train_samples,
                                             eval_samples=cfg.eval_samples, test_fraction=cfg.test_fraction)
            train_split = lib.encode(tokenizer, data.train, style, cfg.max_length)
            test_split = lib.encode(tokenizer, data.test, style, cfg.max_length)
            lib.require_items(train_split, "training", cfg.max_length)
            lib.require_items(test_split, "held-out", cfg.max_length)
            base = load_causal_lm(source, attention_implementation(run.device, cfg.attn_implementation))
            model, lora = adapters.wrap(base, cfg, strategy=self.name, task_type="CAUSAL_LM",
                                        modules_to_save=tuple(cfg.modules_to_save))
            model.to(run.device)
            # Loss and LM head over the response positions only, as sft does; it wraps the model inside
            # the peft wrapper (the LoRA layers are injected there), which takes position ids.
            lm = lib.response_window_lm(model.get_base_model())
        pad = lib.pad_id_of(tokenizer)
        test = test_split.items

        def evaluate(desc: str) -> tuple[float, list[str]]:
            loss, _ = lib.evaluate_loss(run, lm, test, cfg.eval_batch_size, pad)
            return loss, lib.generate(run, model, tokenizer, test, cfg.eval_batch_size, cfg.max_new_tokens, pad, desc)

        with run.meter.phase("baseline"):
            loss_before, before = evaluate("generate (before)")
        examples = [it.encoded for it in train_split.items]
        lengths = [len(e) for e in examples]

        def epoch_batches(epoch: int) -> Any:
            return lib.window_batches(examples, length_grouped_order(lengths, cfg.batch_size, run.seed + epoch), pad)

        n_batches = -(-len(examples) // cfg.batch_size)
        settings = TrainSettings(cfg.epochs, cfg.max_steps, cfg.lr, cfg.weight_decay, cfg.warmup_ratio, cfg.grad_accum)
        outcome = train(run, lm, epoch_batches, n_batches, settings)
        with run.meter.phase("eval"):
            loss_after, after = evaluate("generate (after)")
        scores_before, scores_after = lib.score(test, before), lib.score(test, after)
        size = adapters.adapter_size(model)
        metrics = {
            "exact_match_before": scores_before.overall,
            "exact_match_after": scores_after.overall,
            "eval_loss": loss_after,
            "eval_perplexity": math.exp(min(loss_after, 700.0)),
            "eval_loss_before": loss_before,
            "eval_perplexity_before": math.exp(min(loss_before, 700.0)),
            "adapter_mib": size.mib,
        }
        generations_file = run.out_dir / "generations.jsonl"
        lib.write_generations(generations_file, test, before, after)
        params, modules = adapters.trained(model.get_base_model())  # names as the model the strategy calls
        return StrategyOutput(
            metrics=metrics,
            params=param_counts(model, outcome.optimizer),
            primary_metric="exact_match_after",
            trained_parameters=params,
            trained_modules=modules,
            extra={
                **adapter_extra(run, model, lora, size, tuple(cfg.modules_to_save)),
                "model": source,
                "prompt_format": style,
                "data": {"name": data.name, "source": data.source, "train": len(train_split.items),
                         "test": len(test), "dropped_train": train_split.dropped, "dropped_test": test_split.dropped},
                "optimizer_steps": outcome.steps,
                "epochs_run": outcome.epochs_run,
                "exact_match_by_source": {"before": scores_before.by_source, "after": scores_after.by_source},
                "generations": lib.sample_generations(test, before, after, cfg.show_generations),
                "generations_file": str(generations_file),
            },
        )
