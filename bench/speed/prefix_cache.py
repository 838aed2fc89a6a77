"""The frozen-prefix cache: train only the part of the model that trains.

When the embeddings and the first K transformer blocks are frozen, they run in eval mode (no
dropout: :func:`bench.training.train` puts frozen modules in eval mode), so their output for an
example is the same in every epoch. This module computes that output once per example, without
autograd, and then trains the rest (the trainable blocks and the head) on it: epoch after epoch, the
prefix costs nothing. For the head alone (K = all blocks) an epoch costs a pooler and a classifier.

The numbers are the full model's: the suffix runs the model's own modules on the prefix's own
output (kept in the dtype it was produced in), in the same batches. A test checks the suffix's
logits against the full model's.

Supported: encoder models whose base model calls one ``embeddings`` module and then one
``ModuleList`` of blocks (BERT, MiniLM, DistilBERT, RoBERTa, ELECTRA, ...). Elsewhere (decoders,
where positions are applied inside the blocks) :func:`plan` says why not and training runs as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench.core import progress
from bench.data.batching import Batch, Encoded, batches, sorted_order
from bench.models.layers import model_layout

HIDDEN_KEY = "prefix_hidden"


@dataclass(frozen=True)
class PrefixPlan:
    """Where the frozen prefix ends: the base model, its block list, and K frozen blocks."""

    base: Any  # the base model (e.g. model.bert)
    blocks_parent: Any  # the module holding the block list (e.g. model.bert.encoder)
    blocks_attr: str  # its attribute name (e.g. "layer")
    frozen_blocks: int
    num_blocks: int

    def describe(self) -> str:
        trained = self.num_blocks - self.frozen_blocks
        return f"embeddings + blocks 0-{self.frozen_blocks - 1} cached; {trained} block(s) and the head train"


def plan(model: Any) -> tuple[PrefixPlan | None, str]:
    """The cache plan for ``model``'s current ``requires_grad`` flags, or ``None`` and the reason."""
    import torch

    layout = model_layout(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if any(n in trainable for n in layout.embeddings):
        return None, "the embeddings train"
    frozen = next((i for i, block in enumerate(layout.blocks) if any(n in trainable for n in block)),
                  layout.num_blocks)
    if frozen == 0:
        return None, "the first block trains"
    base = getattr(model, "base_model", None)
    prefix = getattr(model, "base_model_prefix", "")
    embeddings = getattr(base, "embeddings", None)
    if base is None or base is model or not isinstance(embeddings, torch.nn.Module) or \
            not layout.block_prefix.startswith(prefix + "."):
        return None, f"{type(model).__name__} does not call one embeddings module before its blocks"
    if getattr(model.config, "is_decoder", False) or getattr(model.config, "is_encoder_decoder", False):
        return None, f"{type(model).__name__} is a decoder"
    parent_name, _, attr = layout.block_prefix.rpartition(".")
    parent = model.get_submodule(parent_name)
    if not isinstance(getattr(parent, attr, None), torch.nn.ModuleList):
        return None, f"{layout.block_prefix} is not a ModuleList"
    return PrefixPlan(base, parent, attr, frozen, layout.num_blocks), ""


def _cached_embeddings() -> Any:
    """A module standing in for the embeddings: it returns the prefix output bound for the batch."""
    import torch

    class CachedEmbeddings(torch.nn.Module):
        hidden: Any = None

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            if self.hidden is None:
                raise RuntimeError("prefix cache: no cached hidden states bound for this batch")
            return self.hidden

    return CachedEmbeddings()


def compute(run: Any, model: Any, p: PrefixPlan, examples: Sequence[Encoded], batch_size: int,
            pad_id: int, desc: str) -> list[Any]:
    """The prefix output of every example (its real positions only), without autograd, autocast as in
    training. Computed on the run's device and kept there."""
    import torch

    blocks = getattr(p.blocks_parent, p.blocks_attr)
    out: list[Any] = [None] * len(examples)
    order = sorted_order([len(e) for e in examples], batch_size)
    was_training = p.base.training
    p.base.eval()
    setattr(p.blocks_parent, p.blocks_attr, torch.nn.ModuleList(list(blocks)[:p.frozen_blocks]))
    try:
        with torch.no_grad():  # not inference_mode: the outputs feed autograd later
            for idx, batch in zip(order, progress.bar(batches(examples, order, pad_id), desc=desc, total=len(order),
                                                      unit="batch")):
                inputs = batch.to(run.device)
                with run.autocast():
                    hidden = p.base(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden.last_hidden_state
                for row, i in enumerate(idx):
                    out[i] = hidden[row, :len(examples[i])].clone()
    finally:
        setattr(p.blocks_parent, p.blocks_attr, blocks)
        p.base.train(was_training)
    return out


def with_hidden(source: Iterator[Batch], order: list[list[int]], hidden: Sequence[Any]) -> Iterator[Batch]:
    """Add each batch's cached prefix output, zero-padded to the batch's width, as ``prefix_hidden``."""

    for idx, batch in zip(order, source):
        width = batch.tensors["input_ids"].shape[1]
        rows = [hidden[i] for i in idx]
        padded = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
        for r, h in enumerate(rows):
            padded[r, :h.shape[0]] = h
        yield Batch({**batch.tensors, HIDDEN_KEY: padded}, batch.samples, batch.tokens, batch.input_tokens)


def cached_batches(examples: Sequence[Encoded], hidden: Sequence[Any], order: list[list[int]],
                   pad_id: int) -> Iterator[Batch]:
    return with_hidden(batches(examples, order, pad_id), order, hidden)


@contextlib.contextmanager
def suffix_model(model: Any, p: PrefixPlan) -> Iterator[Any]:
    """Within the block, ``model`` runs only its suffix: call the yielded module with the batch's
    tensors (``prefix_hidden`` included). Its parameters are the model's trainable ones and the
    frozen modules of the suffix. The model is restored on exit."""
    import torch

    blocks = getattr(p.blocks_parent, p.blocks_attr)
    embeddings = p.base.embeddings
    stand_in = _cached_embeddings()

    class Suffix(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, **inputs: Any) -> Any:
            stand_in.hidden = inputs.pop(HIDDEN_KEY)
            try:
                return self.model(**inputs)
            finally:
                stand_in.hidden = None

    p.base.embeddings = stand_in
    setattr(p.blocks_parent, p.blocks_attr, torch.nn.ModuleList(list(blocks)[p.frozen_blocks:]))
    try:
        yield Suffix()
    finally:
        setattr(p.blocks_parent, p.blocks_attr, blocks)
        p.base.embeddings = embeddings


def nbytes(hidden: Sequence[Any]) -> int:
    return sum(h.numel() * h.element_size() for h in hidden)
