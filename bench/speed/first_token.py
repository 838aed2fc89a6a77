"""First-token last block: compute only what the classification head reads.

BERT-family sequence classifiers (BERT, MiniLM, RoBERTa, XLM-R, ELECTRA) classify from the first
token of the last block's output (BERT's pooler reads ``hidden[:, 0]``; RoBERTa's and ELECTRA's
heads read ``features[:, 0, :]``). In the last block, that position needs the keys and values of
every position but the query, the attention output, the residual, the norms and the feed-forward
of position 0 only: for a 6-block model that skips about 14% of the model's FLOPs per step, in the
forward and the backward pass, with the same numbers at position 0 (a test checks the logits against
the full model's, eager and SDPA attention, with padding).

:func:`first_token_last_block` patches the last block's ``forward`` on the instance (parameter names
do not change) for the duration of a ``with`` block; it uses the block's own modules and the
model's own attention function. Anything it does not recognise is left alone, with the reason.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any

from bench.models.layers import model_layout

# Heads that read the first position of the last hidden state, and nothing else.
FIRST_TOKEN_HEADS = frozenset({
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification",
    "ElectraForSequenceClassification",
})


def _last_block(model: Any) -> tuple[Any, str]:
    """The last block when the model and the block have the expected shape, else ``None`` and why."""
    name = type(model).__name__
    if name not in FIRST_TOKEN_HEADS:
        return None, f"{name}'s head is not known to read the first token only"
    layout = model_layout(model)
    block = model.get_submodule(f"{layout.block_prefix}.{layout.num_blocks - 1}")
    attention = getattr(block, "attention", None)
    sa = getattr(attention, "self", None)
    needed = (hasattr(sa, n) for n in ("query", "key", "value", "attention_head_size", "scaling", "config", "dropout"))
    if sa is None or not all(needed) or not hasattr(attention, "output") or not hasattr(block, "feed_forward_chunk"):
        return None, f"{type(block).__name__} does not have the BERT block layout"
    if getattr(block, "add_cross_attention", False) or getattr(sa, "is_decoder", False):
        return None, "the block is a decoder block"
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        return None, "this transformers has no attention-function registry"
    if not hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
        return None, "this transformers has no attention-function registry"
    return block, ""


def _first_token_forward(block: Any, hidden_states: Any, attention_mask: Any = None, *args: Any,
                         **kwargs: Any) -> Any:
    """The block's forward, for position 0 only: output ``[batch, 1, hidden]``."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    attention = block.attention
    sa = attention.self
    batch, length, _ = hidden_states.shape
    first = hidden_states[:, :1]
    size = sa.attention_head_size
    query = sa.query(first).view(batch, 1, -1, size).transpose(1, 2)
    key = sa.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    value = sa.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[..., :1, :]
    default = sys.modules[type(sa).__module__].eager_attention_forward
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, default)
    out, _ = interface(sa, query, key, value, attention_mask, dropout=sa.dropout.p if sa.training else 0.0,
                       scaling=sa.scaling)
    out = attention.output(out.reshape(batch, 1, -1).contiguous(), first)
    return block.feed_forward_chunk(out)


def plan(model: Any) -> tuple[Any, str]:
    """The block to patch, or ``None`` and the reason it cannot be."""
    block, why = _last_block(model)
    if block is not None and not hasattr(sys.modules.get(type(block.attention.self).__module__),
                                         "eager_attention_forward"):
        return None, f"{type(block).__name__}'s module has no eager_attention_forward"
    return block, why


@contextlib.contextmanager
def first_token_last_block(block: Any) -> Iterator[None]:
    """Within the block, ``block`` (the model's last) computes position 0 only."""
    block.forward = types.MethodType(_first_token_forward, block)
    try:
        yield
    finally:
        del block.forward
