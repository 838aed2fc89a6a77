"""Data: text classification data (:mod:`~bench.data.classification`), instruction data for sft
(:mod:`~bench.data.instructions`), tokenised batches (:mod:`~bench.data.batching`) and the default
assets fetched through pip (:mod:`~bench.data.assets`)."""
