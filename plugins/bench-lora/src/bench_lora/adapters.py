"""Wrapping a Hugging Face model with a peft LoRA adapter, and measuring the adapter.

Default target modules per architecture (the attention query and value projections, as in the LoRA
paper): BERT/MiniLM and RoBERTa ``query,value``; DistilBERT ``q_lin,v_lin``; Llama, Mistral, Qwen2
``q_proj,v_proj``; GPT-2 ``c_attn`` (its fused q/k/v Conv1D). Other architectures fall back to
peft's own table, else ask for ``target_modules``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api import UsageError

DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),  # MiniLM checkpoints are model_type "bert"
    "distilbert": ("q_lin", "v_lin"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
}
FAN_IN_FAN_OUT = frozenset({"gpt2"})  # Conv1D weights are stored transposed


def import_peft(strategy: str) -> Any:
    """peft, or a UsageError that says how to install it (listing strategies needs no peft)."""
    try:
        import peft
    except ImportError:
        raise UsageError(f"strategy {strategy!r} needs the peft package: pip install peft "
                         "(or pip install bench-lora, which depends on it)") from None
    return peft


def default_targets(model: Any, strategy: str = "lora") -> tuple[str, ...]:
    """The target modules for ``model``'s architecture (``config.model_type``)."""
    model_type = getattr(model.config, "model_type", "")
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    try:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS
    except ImportError:  # pragma: no cover - older or newer peft
        PEFT_TARGETS = {}  # noqa: N806
    if model_type in PEFT_TARGETS:
        return tuple(PEFT_TARGETS[model_type])
    raise UsageError(f"strategy {strategy!r}: no default LoRA target modules for model type {model_type!r}; "
                     f"give them, e.g. -o {strategy}.target_modules={','.join(linear_names(model)[:2])} "
                     f"(its linear layers: {', '.join(linear_names(model))})")


def linear_names(model: Any) -> list[str]:
    """Short names of the model's linear (and GPT-2 Conv1D) layers, the valid target modules."""
    names: list[str] = []
    for full, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("Linear", "Conv1D") and full:
            short = full.rsplit(".", 1)[-1]
            if short not in names:
                names.append(short)
    return names


def new_head_modules(model: Any) -> tuple[str, ...]:
    """Top-level modules outside the pretrained base (``classifier``; DistilBERT ``pre_classifier`` too):
    newly initialised by the task head, so they must train in full (peft ``modules_to_save``)."""
    prefix = getattr(model, "base_model_prefix", "")
    out: list[str] = []
    for name, _ in model.named_parameters():
        top = name.split(".", 1)[0]
        if prefix and top != prefix and top not in out:
            out.append(top)
    return tuple(out)


def wrap(model: Any, cfg: Any, *, strategy: str, task_type: str, modules_to_save: tuple[str, ...]) -> tuple[Any, Any]:
    """``model`` with a LoRA adapter (rank, alpha, dropout, target modules from ``cfg``); every base
    parameter frozen, the adapter and ``modules_to_save`` trainable. Returns the peft model and its config."""
    peft = import_peft(strategy)
    targets = tuple(cfg.target_modules) or default_targets(model, strategy)
    available = linear_names(model)
    missing = [t for t in targets if t not in available]
    if missing:
        raise UsageError(f"strategy {strategy!r}: target module {missing[0]!r} is not a linear layer of "
                         f"{type(model).__name__} (its linear layers: {', '.join(available)}); fix "
                         f"-o {strategy}.target_modules")
    if cfg.rank < 1:
        raise UsageError(f"strategy {strategy!r}: rank must be at least 1, got {cfg.rank}")
    config = peft.LoraConfig(
        task_type=task_type,
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(targets),
        modules_to_save=list(modules_to_save) or None,
        fan_in_fan_out=getattr(model.config, "model_type", "") in FAN_IN_FAN_OUT,
        bias="none",
    )
    with warnings.catch_warnings():  # peft asks transformers 5 a deprecated question; not the user's concern
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        wrapped = peft.get_peft_model(model, config)
    return wrapped, wrapped.peft_config[wrapped.active_adapter]


@dataclass(frozen=True)
class AdapterSize:
    """What a saved adapter holds: LoRA matrices plus the fully trained modules (the task head)."""

    parameters: int
    bytes: int
    lora_parameters: int
    head_parameters: int

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


def adapter_size(model: Any) -> AdapterSize:
    """Count the tensors peft would save (``get_peft_model_state_dict``): the adapter itself."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    lora = sum(t.numel() for n, t in state.items() if "lora_" in n)
    total = sum(t.numel() for t in state.values())
    return AdapterSize(total, sum(t.numel() * t.element_size() for t in state.values()), lora, total - lora)


def save_adapter(model: Any, folder: Path, state_dict: dict[str, Any] | None = None) -> int:
    """Save the adapter with ``save_pretrained`` (from ``state_dict``, the whole one of an FSDP-sharded model,
    when given); return the bytes of its weights file on disk."""
    model.save_pretrained(str(folder), **({"state_dict": state_dict} if state_dict is not None else {}))
    return sum(p.stat().st_size for p in folder.glob("adapter_model.*"))


def trained(model: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Trainable parameter names (as ``model.named_parameters()`` of the peft model calls them) and
    readable module names (``bert.encoder.layer.0.attention.self.query``, ``classifier``)."""
    params = tuple(n for n, p in model.named_parameters() if p.requires_grad)
    modules: list[str] = []
    for name in params:
        short = name.removeprefix("base_model.model.")
        for marker in (".lora_A.", ".lora_B.", ".modules_to_save."):
            if marker in short:
                short = short.split(marker, 1)[0]
                break
        else:
            short = short.rsplit(".", 1)[0]
        if short not in modules:
            modules.append(short)
    return params, tuple(modules)
