"""Tiny offline models and data for plugin authors' tests: built in well under a second each."""

from __future__ import annotations

import csv
import json
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


# -------------------------------------------------------------------------------------------------
# Tiny models and data, built offline in well under a second each.
# -------------------------------------------------------------------------------------------------


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Writing model shards" bars from save_pretrained in the tests of plugin authors."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()

POSITIVE = ("good", "great", "fine", "superb", "lovely", "fun", "brilliant", "moving")
NEGATIVE = ("bad", "awful", "dull", "boring", "poor", "weak", "messy", "tedious")
FILLER = ("the", "movie", "film", "was", "a", "plot", "story", "very", "quite", "and")
_BERT_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_LLAMA_SPECIAL = ("<unk>", "<s>", "</s>", "<pad>")


def tiny_bert(folder: str | Path, *, layers: int = 2, hidden: int = 32, seed: int = 0, dropout: float = 0.1) -> Path:
    """Save a random BERT (2 blocks, hidden size 32, ~19k parameters) and its WordPiece tokenizer
    over the words of :func:`tiny_sentiment_csv` into ``folder``; return the folder (``--model``).
    ``dropout``: its hidden and attention dropout (0: deterministic training, to compare runs exactly)."""
    import inspect

    import torch
    import transformers
    from transformers import BertConfig, BertModel

    BertTokenizerFast = getattr(transformers, "BertTokenizerFast")  # noqa: B009, N806 - lazily exported

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = [*_BERT_SPECIAL, *POSITIVE, *NEGATIVE, *FILLER]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    else:  # pragma: no cover - transformers 4
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(folder)
    config = BertConfig(vocab_size=len(words), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    with torch.random.fork_rng(), _quiet_transformers():
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(folder)
    return folder


def tiny_sentiment_csv(path: str | Path, *, rows: int = 96, seed: int = 0) -> Path:
    """Write a learnable two-class CSV (``text``, ``label`` = pos/neg): filler words plus two
    sentiment words; return the path (``--dataset``)."""
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(rows):
            label = i % 2
            words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label else NEGATIVE, 2)
            rng.shuffle(words)
            writer.writerow([" ".join(words), "pos" if label else "neg"])
    return path


def _alpaca_rows(rows: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        if i % 2 == 0:
            label = (i // 2) % 2
            words = rng.sample(FILLER, 3) + rng.sample(POSITIVE if label else NEGATIVE, 1)
            rng.shuffle(words)
            out.append({"instruction": "Is the sentiment of this sentence positive or negative?",
                        "input": " ".join(words), "output": "positive" if label else "negative"})
        else:
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            out.append({"instruction": f"What is {a} plus {b}?", "input": "", "output": str(a + b)})
    return out


def tiny_alpaca_jsonl(path: str | Path, *, rows: int = 64, seed: int = 0) -> Path:
    """Write an Alpaca-format JSONL file (``instruction``, ``input``, ``output``): sentiment of a
    short sentence and one-digit additions; return the path (``--dataset`` of causal-lm strategies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in _alpaca_rows(rows, seed)), encoding="utf-8")
    return path


def tiny_llama(folder: str | Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random Llama (2 blocks, hidden size 32) with a byte-level BPE tokenizer trained on the
    Alpaca prompts of :func:`tiny_alpaca_jsonl` (no chat template: prompts use the Alpaca format)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from bench.training.sft import ALPACA_NO_INPUT, ALPACA_WITH_INPUT

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = [ALPACA_WITH_INPUT.format(**r) + r["output"] if r["input"] else
              ALPACA_NO_INPUT.format(instruction=r["instruction"]) + r["output"] for r in _alpaca_rows(256, seed)]
    corpus += [" ".join(POSITIVE + NEGATIVE + FILLER)] * 4
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(_LLAMA_SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer=trainer)
    bos = bpe.token_to_id("<s>")
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    tok.save_pretrained(folder)
    config = LlamaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=2 * hidden,
                         max_position_embeddings=512, bos_token_id=bos, eos_token_id=bpe.token_to_id("</s>"),
                         pad_token_id=bpe.token_to_id("<pad>"), tie_word_embeddings=False)
    with torch.random.fork_rng(), _quiet_transformers():
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder


_ASSETS: dict[str, tuple[Path, Path]] = {}


def default_assets(task: str) -> tuple[Path, Path]:
    """The tiny model and data :func:`check_strategy` uses for ``task``: built once per process in a
    temporary folder (removed at exit) and shared by every check, since strategies only read them."""
    if task not in _ASSETS:
        import atexit
        import shutil

        folder = Path(tempfile.mkdtemp(prefix=f"bench-tiny-{task}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        if task == "causal-lm":
            _ASSETS[task] = tiny_llama(folder / "tiny-llama"), tiny_alpaca_jsonl(folder / "tiny-alpaca.jsonl")
        else:
            _ASSETS[task] = tiny_bert(folder / "tiny-bert"), tiny_sentiment_csv(folder / "tiny-sentiment.csv")
    return _ASSETS[task]


