"""Pre-tokenised examples and length-grouped, dynamically padded batches.

Examples are tokenised once, without padding. Each batch is padded to its own longest example;
batches are formed from examples of similar length (Hugging Face's ``group_by_length`` idea:
shuffle, cut into mega-batches, sort each by length, shuffle the batch order), so little compute
goes to padding. ``tokens`` counts real tokens only.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

MEGA_BATCH_FACTOR = 50


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: ids, and per-position labels (SFT) or a class label."""

    input_ids: tuple[int, ...]
    label: int = -1
    token_labels: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Batch:
    """Padded tensors on the CPU, and the work they hold."""

    tensors: dict[str, Any]
    samples: int
    tokens: int  # real tokens: no padding; for SFT, only positions with a loss
    input_tokens: int = 0  # non-padding tokens through the model (prompt included)

    @property
    def padded_tokens(self) -> int:
        ids = self.tensors["input_ids"]
        return int(ids.shape[0] * ids.shape[1])

    def to(self, device: str) -> dict[str, Any]:
        non_blocking = device == "cuda"
        return {k: v.to(device, non_blocking=non_blocking) for k, v in self.tensors.items()}


def encode_texts(tokenizer: Any, texts: Sequence[str], labels: Sequence[int], max_length: int) -> list[Encoded]:
    """Tokenise once (fast tokenizer, batched), truncating to ``max_length``."""
    out: list[Encoded] = []
    chunk = 1024
    for start in range(0, len(texts), chunk):
        enc = tokenizer(list(texts[start:start + chunk]), truncation=True, max_length=max_length,
                        padding=False, return_attention_mask=False)
        for ids, label in zip(enc["input_ids"], labels[start:start + chunk]):
            out.append(Encoded(tuple(ids), int(label)))
    return out


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of indices: shuffled, grouped by length within mega-batches, batch order shuffled."""
    rng = random.Random(seed)
    indices = list(range(len(lengths)))
    rng.shuffle(indices)
    mega = max(batch_size * MEGA_BATCH_FACTOR, batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(indices), mega):
        chunk = sorted(indices[start:start + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def random_order(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches with no regard to length (each padded to its own longest example)."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return [idx[i:i + batch_size] for i in range(0, n, batch_size)]


def sorted_order(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic batches for evaluation: sorted by length (least padding), original order kept inside."""
    indices = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]


def collate(examples: Sequence[Encoded], pad_id: int) -> Batch:
    """Pad to the longest example; ``labels`` are class ids, or token labels with -100 on padding."""
    import torch

    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e)] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[row, : len(e)] = 1
    tensors: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if examples[0].token_labels is not None:
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        for row, e in enumerate(examples):
            labels[row, : len(e)] = torch.tensor(e.token_labels, dtype=torch.long)
        tensors["labels"] = labels
        tokens = int((labels[:, 1:] != -100).sum())
    else:
        tensors["labels"] = torch.tensor([e.label for e in examples], dtype=torch.long)
        tokens = int(mask.sum())
    return Batch(tensors, len(examples), tokens, int(mask.sum()))


def batches(examples: Sequence[Encoded], order: list[list[int]], pad_id: int) -> Iterator[Batch]:
    for idx in order:
        yield collate([examples[i] for i in idx], pad_id)
