"""Tiny, randomly initialised models and small datasets built offline, for fast tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "superb", "lovely", "fun", "brilliant", "moving"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "weak", "messy", "tedious"]
FILLER = ["the", "movie", "film", "was", "a", "plot", "story", "very", "quite", "and"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_bert(folder: Path, *, layers: int = 2, hidden: int = 32) -> Path:
    """A random 2-layer BERT with a WordPiece tokenizer over the words used by make_sentiment_csv."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = SPECIAL + POSITIVE + NEGATIVE + FILLER
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    import inspect

    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    else:
        tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tok.save_pretrained(folder)
    config = BertConfig(vocab_size=len(SPECIAL + POSITIVE + NEGATIVE + FILLER), hidden_size=hidden,
                        num_hidden_layers=layers, num_attention_heads=2, intermediate_size=37,
                        max_position_embeddings=64)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def make_sentiment_csv(path: Path, rows: int = 96, seed: int = 0) -> Path:
    """A learnable two-class dataset: sentences with positive or negative words."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(rows):
            label = i % 2
            words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label else NEGATIVE, 2)
            rng.shuffle(words)
            writer.writerow([" ".join(words), "pos" if label else "neg"])
    return path
