"""Synthetic token batches for shape-only runs (``--weights random``): shaped like the task's real ones.

Lengths are drawn (seeded) from the token lengths of the default data (``bench/data/lengths.json``,
written by ``scripts/length_profile.py``: the classification training subset through the default
encoder's tokenizer; the sft prompts and responses through SmolLM2's chat template), or are all
``--seq-len`` tokens; token ids are uniform over the vocabulary (never the padding id). Labels: two
classes for classification; for sft the response tokens of each example, the prompt masked (-100).
Accuracy on such data means nothing, so shape-only runs do not evaluate.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from bench.data.batching import Encoded

LABEL_NAMES = ("negative", "positive")
FIRST_ID = 5  # below: the special tokens of most vocabularies


@dataclass(frozen=True)
class SyntheticData:
    """What ``data_summary`` and the recipes read of a dataset, for synthetic examples."""

    name: str
    source: str
    train: tuple[Encoded, ...]
    validation: tuple[Encoded, ...] = ()
    test: tuple[Encoded, ...] = ()
    label_names: tuple[str, ...] = LABEL_NAMES
    label_map: dict[str, int] = field(default_factory=dict)
    sha256: str = ""


def _profile() -> dict[str, Any]:
    text = resources.files("bench.data").joinpath("lengths.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def _token(rng: random.Random, vocab_size: int, pad_id: int) -> int:
    t = rng.randrange(FIRST_ID, max(FIRST_ID + 2, vocab_size))
    return t + 1 if t == pad_id and t + 1 < vocab_size else t


def classification(n: int, *, vocab_size: int, pad_id: int, seq_len: int, max_length: int, seed: int) -> SyntheticData:
    """``n`` examples of two classes; lengths from the default data (or all ``seq_len``), cut at ``max_length``."""
    rng = random.Random(f"{seed}:synthetic-classification")
    profile = _profile()["classification"]
    pool: list[int] = profile["lengths"]
    examples = []
    for _ in range(n):
        length = min(seq_len if seq_len > 0 else rng.choice(pool), max_length if seq_len <= 0 else seq_len)
        ids = tuple(_token(rng, vocab_size, pad_id) for _ in range(max(2, length)))
        examples.append(Encoded(ids, rng.randrange(len(LABEL_NAMES))))
    how = f"all {seq_len} tokens" if seq_len > 0 else f"lengths drawn from {profile['source']}"
    return SyntheticData("synthetic", f"{n} random-token examples, {how}, seed {seed}", tuple(examples))


def causal_lm(n: int, *, vocab_size: int, pad_id: int, seq_len: int, max_length: int, seed: int) -> SyntheticData:
    """``n`` prompt+response examples; (prompt, response) lengths from the default sft data, or ``seq_len``
    tokens each with the data's mean response share (at least one response token)."""
    rng = random.Random(f"{seed}:synthetic-causal-lm")
    profile = _profile()["causal-lm"]
    pairs: list[list[int]] = profile["prompt_response"]
    share = sum(r for _, r in pairs) / max(1, sum(p + r for p, r in pairs))
    examples = []
    for _ in range(n):
        if seq_len > 0:
            response = max(1, round(seq_len * share))
            prompt = max(1, seq_len - response)
        else:
            prompt, response = rng.choice(pairs)
            if prompt + response > max_length:
                prompt = max(1, max_length - response)
        ids = tuple(_token(rng, vocab_size, pad_id) for _ in range(prompt + response))
        labels = (-100,) * prompt + ids[prompt:]
        examples.append(Encoded(ids, 0, labels))
    how = (f"all {seq_len} tokens, {share:.1%} of them response" if seq_len > 0 else
           f"(prompt, response) lengths drawn from {profile['source']}")
    return SyntheticData("synthetic", f"{n} random-token prompts, {how}, seed {seed}", tuple(examples))
