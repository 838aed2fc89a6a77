"""The options of the two LoRA strategies: frozen dataclasses whose fields are bench options.

Each field becomes ``--field-name`` on ``bench run`` (shared with every selected strategy that has
a field of that name), ``-o lora.field=value`` for this strategy alone, and a key in the config file
(``[tool.bench.strategy.lora]``). ``metadata["help"]`` is the help text.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import option as _opt
from bench.classify import TrainingConfig


@dataclass(frozen=True)
class LoraOptions:
    """The adapter: rank, scaling, dropout, where it goes and what else trains in full."""

    rank: int = _opt(8, "LoRA rank r of the update B @ A")
    alpha: int = _opt(16, "LoRA alpha: the update is scaled by alpha / rank")
    dropout: float = _opt(0.1, "dropout on the LoRA input")
    target_modules: tuple[str, ...] = _opt((), "linear layers given adapters, comma-separated (default: per "
                                               "architecture: BERT/RoBERTa query,value; DistilBERT q_lin,v_lin; "
                                               "Llama q_proj,v_proj; GPT-2 c_attn)")
    modules_to_save: tuple[str, ...] = _opt((), "modules trained in full and saved with the adapter (default: "
                                                "the new classification head; none for causal LMs)")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class LoraClassificationConfig(TrainingConfig, LoraOptions):
    """``lora``: LoRA on a sequence classifier; the training options are ``all-layers``' own
    (:class:`bench.classify.TrainingConfig`), with a higher learning rate and 2,000 examples."""

    lr: float = _opt(5e-4, "peak learning rate (AdamW); LoRA wants more than full fine-tuning")
    train_samples: int = _opt(2000, "training examples used (0: the whole training split)")


@dataclass(frozen=True)
class LoraSftConfig(LoraOptions):
    """``lora-sft``: LoRA on a causal LM, trained and evaluated as the built-in ``sft`` strategy."""

    epochs: int = _opt(1, "training epochs")
    max_steps: int = _opt(0, "stop after this many optimizer steps (0: no limit)")
    batch_size: int = _opt(8, "training batch size (examples per micro-batch)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step")
    lr: float = _opt(2e-4, "peak learning rate (AdamW)")
    weight_decay: float = _opt(0.0, "AdamW weight decay (not on biases and norms)")
    warmup_ratio: float = _opt(0.05, "share of steps with linear warm-up, then linear decay")
    max_length: int = _opt(256, "prompt+response tokens kept")
    train_samples: int = _opt(800, "training examples (0: all)")
    eval_samples: int = _opt(150, "held-out examples (0: all)")
    eval_batch_size: int = _opt(16, "batch size for held-out loss and generation")
    max_new_tokens: int = _opt(8, "greedy generation length for exact match")
    prompt_format: str = _opt("auto", "auto | chat | alpaca (auto: the chat template when the tokenizer has one)")
    data_seed: int = _opt(0, "seed of the data split and subsets (kept fixed across --seed)")
    test_fraction: float = _opt(0.1, "held-out share of a --dataset file without a test split")
    show_generations: int = _opt(9, "generations (before and after) kept in the result")
    attn_implementation: str = _opt("auto", "auto | eager | sdpa (auto: eager on CPU, sdpa on CUDA)")
