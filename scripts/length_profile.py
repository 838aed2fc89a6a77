"""Write bench/data/lengths.json: the token lengths of the default data, which shape-only runs
(``--weights random``) draw their synthetic batches from.

* classification: the default training subset (``train_samples`` 3,000 of Rotten Tomatoes) tokenised by
  the default encoder's tokenizer (all-MiniLM-L6-v2), truncated at 128 tokens;
* causal-lm: the default sft training prompts (1,200) rendered with SmolLM2-135M-Instruct's chat
  template: (prompt tokens, response tokens) per example, as the sft recipe encodes them.

Run from the repository root with the default assets available (``bench assets pull``):
``python scripts/length_profile.py`` (``--check`` compares with the committed file instead).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "bench" / "data" / "lengths.json"


def profile() -> dict:
    from bench.core.config import BenchConfig
    from bench.data.batching import encode_texts
    from bench.data.classification import load_classification
    from bench.data.instructions import load_instruction_data
    from bench.models.loading import load_tokenizer, resolve_model
    from bench.training import sft
    from bench.training.classify import DATA_SEED, FinetuneConfig
    from bench.training.sft_recipe import SftConfig

    cls_cfg, sft_cfg = FinetuneConfig(), SftConfig()
    data = load_classification(None, seed=DATA_SEED).subset(train=cls_cfg.train_samples, seed=DATA_SEED)
    tok = load_tokenizer(resolve_model(None, "classification"))
    encoded = encode_texts(tok, [e.text for e in data.train], [e.label for e in data.train], cls_cfg.max_length)
    cls_lengths = sorted(len(e) for e in encoded)

    lm_tok = load_tokenizer(resolve_model(None, "causal-lm"))
    style = sft.prompt_style(lm_tok, sft_cfg.prompt_format)
    inst = load_instruction_data(BenchConfig().dataset, seed=sft_cfg.data_seed, train_samples=sft_cfg.train_samples,
                                 eval_samples=sft_cfg.eval_samples)
    split = sft.encode(lm_tok, inst.train, style, sft_cfg.max_length)
    pairs = sorted((len(it.encoded) - it.response_tokens, it.response_tokens) for it in split.items)
    return {
        "_comment": "token lengths of the default data, for synthetic batches of --weights random runs; written by "
                    "scripts/length_profile.py",
        "classification": {"source": f"{data.source}, {len(cls_lengths)} training examples, all-MiniLM-L6-v2 "
                                     f"tokenizer, max length {cls_cfg.max_length}",
                           "lengths": cls_lengths},
        "causal-lm": {"source": f"{inst.source}; {len(pairs)} training prompts, chat template of "
                                f"SmolLM2-135M-Instruct, max length {sft_cfg.max_length}",
                      "prompt_response": [list(p) for p in pairs]},
    }


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed file differs")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    data = profile()
    text = json.dumps(data, separators=(",", ":")) + "\n"
    if args.check:
        same = TARGET.is_file() and json.loads(TARGET.read_text()) == json.loads(text)
        print("lengths.json is up to date" if same else "lengths.json differs from the default data: rerun the script")
        return 0 if same else 1
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
