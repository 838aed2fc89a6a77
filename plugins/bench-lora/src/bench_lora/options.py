"""The options of the two LoRA strategies: frozen dataclasses whose fields are bench options.

Each field becomes ``--field-name`` on ``bench run`` (shared with every selected strategy that has
a field of that name), ``-o lora.field=value`` for this strategy alone, and a key in the config file
(``[tool.bench.strategy.lora]``). ``metadata["help"]`` is the help text.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.api import SftTrainingConfig, TrainingConfig
from bench.api import option as _opt


@dataclass(frozen=True)
class LoraOptions:
    """The adapter: rank, scaling, dropout, where it goes and what else trains in full."""

    rank: int = _opt(8, "LoRA rank r of the update B @ A", ge=1)
    alpha: int = _opt(16, "LoRA alpha: the update is scaled by alpha / rank", gt=0)
    dropout: float = _opt(0.1, "dropout on the LoRA input", ge=0, lt=1)
    target_modules: tuple[str, ...] = _opt((), "linear layers given adapters, comma-separated (default: per "
                                               "architecture: BERT/RoBERTa query,value; DistilBERT q_lin,v_lin; "
                                               "Llama q_proj,v_proj; GPT-2 c_attn)")
    modules_to_save: tuple[str, ...] = _opt((), "modules trained in full and saved with the adapter (default: "
                                                "the new classification head; none for causal LMs)")


@dataclass(frozen=True)
class LoraClassificationConfig(TrainingConfig, LoraOptions):
    """``lora``: LoRA on a sequence classifier; the training options are ``all-layers``' own
    (:class:`bench.api.TrainingConfig`), with a higher learning rate and 2,000 examples."""

    lr: float = _opt(5e-4, "peak learning rate (AdamW); LoRA wants more than full fine-tuning")
    train_samples: int = _opt(2000, "training examples used (0: the whole training split)")


@dataclass(frozen=True)
class LoraSftConfig(SftTrainingConfig, LoraOptions):
    """``lora-sft``: LoRA on a causal LM, trained and evaluated as the built-in ``sft`` strategy (its
    shared options, :class:`bench.api.SftTrainingConfig`), with a higher learning rate and fewer examples."""

    lr: float = _opt(2e-4, "peak learning rate (AdamW)")
    train_samples: int = _opt(800, "training examples (0: all)")
    eval_samples: int = _opt(150, "held-out examples (0: all)")
