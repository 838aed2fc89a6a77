"""bench-baselines: what users would run instead of finetune-bench, as finetune-bench strategies.

* ``hf-trainer``: ``transformers.Trainer`` with its recommended setup (dynamic padding collator,
  length-grouped sampling, bf16 where supported), any ``--train-layers`` selection;
* ``hf-trainer-sft``: the same Trainer doing the ``sft`` strategy's supervised fine-tuning;
* ``seed-loop``: the seed's recipe (Raschka, SciPy 2023, section 7): every example padded to the
  longest in the split, frozen layers left in training mode, Adam at lr 5e-5, batch 12.

Each uses the built-ins' data, tokenisation, subsets and evaluation, so a row compares one to one
with the built-in strategy it stands for. ``python -m bench_baselines.speed`` runs the pairs and
prints the speed ratios (see :mod:`bench_baselines.speed`).
"""

__version__ = "0.1.0"
