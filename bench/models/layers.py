"""``--train-layers``: choose what trains, resolved against the model's real modules.

A selection is one or more terms joined by ``+``:

* ``all``: every parameter;
* ``head``: the task head: every parameter outside the transformer's embeddings and blocks
  (BERT/MiniLM: pooler + classifier; DistilBERT: pre_classifier + classifier; RoBERTa: classifier;
  Llama/GPT-2: final norm + lm_head, which is tied to the input embeddings in many LMs);
* ``last:N``: the last N transformer blocks;
* ``blocks:I,J,...``: those blocks (0-based; negative counts from the end);
* ``embeddings``: the embedding layer(s);
* ``bias``: every bias parameter (BitFit: ``head+bias`` trains the head and all biases).

Classification strategies always train their newly initialised classifier as well (a frozen
random head measures nothing); so for them ``last:2`` means the head plus the last two blocks.
Freezing is real: ``requires_grad=False`` on everything not selected, checked by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.core.errors import UsageError
from bench.core.text import did_you_mean

SYNTAX = "all | head | last:N | blocks:I,J | embeddings | bias, joined with '+' (e.g. head+last:2, head+bias)"


@dataclass(frozen=True)
class Layout:
    """Parameter names grouped by role."""

    blocks: tuple[tuple[str, ...], ...]  # per block, its parameter names
    block_prefix: str
    embeddings: tuple[str, ...]
    head: tuple[str, ...]
    new_head: tuple[str, ...]  # parameters the task head adds (newly initialised), e.g. classifier.*

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class Selection:
    """A resolved selection: which parameter names train, and which modules they belong to."""

    spec: str
    parameters: tuple[str, ...]
    modules: tuple[str, ...]


def model_layout(model: Any) -> Layout:
    """Find the blocks, embeddings and head of a Hugging Face model (BERT, DistilBERT, RoBERTa,
    MiniLM, GPT-2, Llama and others with one ``ModuleList`` of blocks)."""
    import torch

    names = [n for n, _ in model.named_parameters()]
    n_layers = _num_layers(model.config)
    block_list, block_prefix = None, ""
    for mod_name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers and n_layers > 0:
            block_list, block_prefix = module, mod_name
            break
    if block_list is None:
        raise UsageError(f"--train-layers: cannot find the transformer blocks of {type(model).__name__} "
                         f"(no ModuleList of {n_layers} layers); use --train-layers all")
    blocks = tuple(tuple(f"{block_prefix}.{i}.{n}" for n, _ in block.named_parameters())
                   for i, block in enumerate(block_list))
    in_blocks = {n for b in blocks for n in b}
    embedding_modules = [m for m, mod in model.named_modules()
                         if m.split(".")[-1] == "embeddings" or isinstance(mod, torch.nn.Embedding)]
    embeddings = tuple(n for n in names if n not in in_blocks
                       and any(n.startswith(m + ".") for m in embedding_modules))
    base_prefix = getattr(model, "base_model_prefix", "")
    new_head = tuple(n for n in names if base_prefix and not n.startswith(base_prefix + ".")
                     and n not in in_blocks and n not in embeddings)
    head = tuple(n for n in names if n not in in_blocks and n not in embeddings)
    return Layout(blocks, block_prefix, embeddings, head, new_head)


def _num_layers(config: Any) -> int:
    for attr in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return 0


def resolve(spec: str, model: Any, *, always_train_new_head: bool) -> Selection:
    """Resolve ``spec`` to parameter names; errors name the term and what the model has."""
    layout = model_layout(model)
    all_names = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    terms = [t.strip() for t in spec.split("+") if t.strip()]
    if not terms:
        raise UsageError(f"--train-layers {spec!r}: empty selection; use {SYNTAX}")
    for term in terms:
        kind, _, arg = term.partition(":")
        kind = kind.strip().lower()
        if kind == "all" and not arg:
            picked = set(all_names)
        elif kind == "head" and not arg:
            picked = set(layout.head)
        elif kind == "embeddings" and not arg:
            picked = set(layout.embeddings)
        elif kind == "bias" and not arg:
            picked = {n for n in all_names if n == "bias" or n.endswith(".bias")}
        elif kind == "last":
            n = _int(arg, term, spec)
            if not 0 <= n <= layout.num_blocks:
                raise UsageError(f"--train-layers {spec!r}: {term!r} asks for {n} blocks; the model has "
                                 f"{layout.num_blocks} ({layout.block_prefix}.0-{layout.num_blocks - 1})")
            picked = {p for b in layout.blocks[layout.num_blocks - n:] for p in b} if n else set()
            if n == 0 and not always_train_new_head:
                raise UsageError(f"--train-layers {spec!r}: last:0 selects nothing here; use head or last:N>0")
        elif kind == "blocks":
            picked = set()
            for item in filter(None, (a.strip() for a in arg.split(","))):
                i = _int(item, term, spec)
                if not -layout.num_blocks <= i < layout.num_blocks:
                    raise UsageError(f"--train-layers {spec!r}: block {i} does not exist; the model has "
                                     f"{layout.num_blocks} blocks (0-{layout.num_blocks - 1})")
                picked |= set(layout.blocks[i])
            if not picked:
                raise UsageError(f"--train-layers {spec!r}: {term!r} names no block; e.g. blocks:4,5")
        else:
            hint = did_you_mean(kind, ("all", "head", "last", "blocks", "embeddings", "bias"))
            raise UsageError(f"--train-layers {spec!r}: unknown term {term!r}{hint}; use {SYNTAX}")
        if not picked and not (kind == "last" and always_train_new_head):
            raise UsageError(f"--train-layers {spec!r}: {term!r} matches no parameter of "
                             f"{type(model).__name__}; use {SYNTAX}")
        chosen |= picked
    if always_train_new_head:
        chosen |= set(layout.new_head)
    if not chosen:
        raise UsageError(f"--train-layers {spec!r} matches nothing in {type(model).__name__}; use {SYNTAX}")
    params = tuple(n for n in all_names if n in chosen)
    return Selection(spec, params, _modules(params, layout))


def _int(text: str, term: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--train-layers {spec!r}: {term!r} needs an integer, got {text!r}") from None


def _modules(params: tuple[str, ...], layout: Layout) -> tuple[str, ...]:
    """Readable module names: a block counts as one module, other parameters by their parent module."""
    out: list[str] = []
    for p in params:
        if layout.block_prefix and p.startswith(layout.block_prefix + "."):
            index = p[len(layout.block_prefix) + 1:].split(".")[0]
            mod = f"{layout.block_prefix}.{index}"
        else:
            mod = p.rsplit(".", 1)[0]
        if mod not in out:
            out.append(mod)
    return tuple(out)


def apply(model: Any, selection: Selection) -> None:
    """Freeze every parameter not in ``selection``; unfreeze the rest."""
    chosen = set(selection.parameters)
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)


def frozen_modules(model: Any) -> list[Any]:
    """Top-most submodules none of whose parameters train: put them in eval mode (no dropout)."""
    out: list[Any] = []

    def visit(module: Any) -> None:
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            out.append(module)
            return
        for child in module.children():
            visit(child)

    for child in model.children():
        visit(child)
    return out


def cast_frozen_linears(model: Any, dtype: Any) -> int:
    """Store frozen ``nn.Linear`` weights in ``dtype`` (bf16 under bf16 autocast).

    Exact: autocast casts a Linear's weight and bias to bf16 before every matmul anyway; storing
    them in bf16 once gives the same numbers without re-casting (a copy per layer per step) and
    halves their memory. Embeddings and norms stay as they are (autocast keeps them in fp32).
    Returns the number of parameters cast.
    """
    import torch

    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not any(p.requires_grad for p in module.parameters()):
            count += sum(p.numel() for p in module.parameters())
            module.to(dtype)
    return count
