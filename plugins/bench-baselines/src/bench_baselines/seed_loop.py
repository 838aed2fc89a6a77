"""``seed-loop``: the seed's recipe (Raschka, SciPy 2023, section 7), as a user would copy it.

* every example padded to the longest in the split (the tokenizer's ``padding=True`` over the whole
  dataset), not per batch;
* ``model.train()`` on the whole model: frozen layers keep their dropout and run a full forward in
  every epoch;
* ``torch.optim.Adam`` at lr 5e-5, no schedule, batch 12, shuffled each epoch;
* validation after each epoch, the best epoch's weights kept for the test (the seed's checkpoint).

Data, tokenisation, subsets and evaluation are the built-ins' (:mod:`bench.training.classify`); precision
follows ``--precision`` (bf16 autocast where supported), so the recipe, not the number format, is
what the comparison measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.api import CLASSIFICATION_PRESETS, TRAIN_LAYERS_SYNTAX, Batch, RunContext, StrategyOutput, option


@dataclass(frozen=True)
class SeedLoopConfig:
    train_layers: str = option("all", f"what trains: {TRAIN_LAYERS_SYNTAX}")
    epochs: int = option(3, "training epochs", ge=1)
    batch_size: int = option(12, "training batch size (the seed's 12)", ge=1)
    lr: float = option(5e-5, "Adam learning rate, constant (the seed's 5e-5)", gt=0)
    max_length: int = option(128, "truncate inputs to this many tokens (then pad all to the longest)", ge=2)
    train_samples: int = option(3000, "training examples used (0: the whole training split)", ge=0)
    eval_samples: int = option(0, "validation and test examples used, each (0: whole splits)", ge=0)
    eval_batch_size: int = option(128, "batch size for validation and test", ge=1)
    attn_implementation: str = option("sdpa", "attention implementation (default: sdpa, transformers' default)")


def pad_to(batch: Batch, width: int, pad_id: int) -> Batch:
    """``batch`` padded on the right to ``width`` positions."""
    import torch

    extra = width - batch.tensors["input_ids"].shape[1]
    if extra <= 0:
        return batch
    pad = torch.nn.functional.pad
    tensors = dict(batch.tensors)
    tensors["input_ids"] = pad(tensors["input_ids"], (0, extra), value=pad_id)
    tensors["attention_mask"] = pad(tensors["attention_mask"], (0, extra), value=0)
    return Batch(tensors, batch.samples, batch.tokens, batch.input_tokens)


# The shared presets size the data; the seed's batch of 12 stays, as part of what this baseline stands for
# (the smoke and ci presets' batch of 16 would otherwise replace it).
PRESETS = {name: {k: v for k, v in values.items() if k != "batch_size"} for name, values in CLASSIFICATION_PRESETS.items()}


class SeedLoop:
    name = "seed-loop"
    description = "baseline: the seed's loop (pad to the split's longest, Adam 5e-5, batch 12, no freezing of modes)"
    task = "classification"
    config_class = SeedLoopConfig
    presets = PRESETS

    def run(self, run: RunContext) -> StrategyOutput:
        import torch
        from bench.api import (
            batches,
            data_summary,
            evaluate,
            freeze_all_but,
            load_sequence_classifier,
            param_counts,
            prepare,
            select_layers,
        )

        cfg: SeedLoopConfig = run.config
        with run.meter.phase("setup"):
            prep = prepare(run, cfg.train_samples, cfg.eval_samples, cfg.max_length)
            model = load_sequence_classifier(prep.source, prep.data.label_names, cfg.attn_implementation)
            selection = select_layers(cfg.train_layers, model, always_train_new_head=True)
            freeze_all_but(model, selection)
            model.to(run.device)
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        width = max(len(e) for e in prep.train)
        generator = torch.Generator().manual_seed(run.seed)
        best: tuple[float, int, dict[str, Any]] | None = None
        history: list[dict[str, float]] = []
        for epoch in range(cfg.epochs):
            with run.meter.phase("train"):
                model.train()
                perm = torch.randperm(len(prep.train), generator=generator).tolist()
                order = [perm[i:i + cfg.batch_size] for i in range(0, len(perm), cfg.batch_size)]
                for batch in batches(prep.train, order, prep.pad_id):
                    batch = pad_to(batch, width, prep.pad_id)
                    with run.meter.step(samples=batch.samples, tokens=batch.tokens, input_tokens=batch.input_tokens):
                        inputs = batch.to(run.device)

                        def forward_backward(inputs: dict[str, Any] = inputs) -> Any:
                            with run.autocast():
                                loss = model(**inputs).loss
                            loss.backward()
                            return loss.detach()

                        run.meter.count_flops(forward_backward, batch.padded_tokens, batch.samples)
                        optimizer.step()
                        optimizer.zero_grad()
            with run.meter.phase("eval"):
                val = evaluate(run, model, prep.validation, cfg.eval_batch_size, prep.pad_id)
            history.append({"epoch": float(epoch + 1), "val_accuracy": val["accuracy"], "val_loss": val["loss"]})
            if best is None or val["accuracy"] > best[0]:
                best = (val["accuracy"], epoch + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if best is not None:
            model.load_state_dict(best[2])
        with run.meter.phase("eval"):
            test = evaluate(run, model, prep.test, cfg.eval_batch_size, prep.pad_id)
        return StrategyOutput(
            metrics={"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
                     "best_val_accuracy": best[0] if best else float("nan"), "test_loss": test["loss"]},
            params=param_counts(model, optimizer),
            trained_parameters=selection.parameters,
            trained_modules=selection.modules,
            extra={"train_layers": cfg.train_layers, "model": prep.source, "data": data_summary(prep.data),
                   "padded_to": width, "best_epoch": best[1] if best else 0, "history": history,
                   "stands_for": "all-layers" if cfg.train_layers == "all" else "last-layers"},
        )
