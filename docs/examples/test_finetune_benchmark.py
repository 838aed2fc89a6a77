"""Benchmark fine-tuning strategies with pytest and pytest-benchmark (finetune-bench's pytest plugin).

Copy this file into your tests and run, for example::

    pytest test_finetune_benchmark.py --bench-preset smoke --benchmark-json=bench.json
    pytest test_finetune_benchmark.py --bench-preset smoke --benchmark-autosave
    pytest test_finetune_benchmark.py --bench-preset smoke --benchmark-compare --benchmark-compare-fail=median:10%
    bench compare old.json bench.json --format markdown       # or: pytest-benchmark compare *.json

Every pytest-benchmark round is one timed training step of the run (warm-up steps excluded), so
``min``, ``median``, ``IQR`` and ``ops`` are per-step figures; accuracy, samples/s, tokens/s, peak
memory and parameter counts are in each benchmark's ``extra_info``. ``--bench-model``,
``--bench-dataset``, ``--bench-strategy`` and ``--bench-option KEY=VALUE`` choose what runs without
editing the file.
"""

import pytest


@pytest.mark.bench_strategy("last-layers", "all-layers", options={"epochs": 1})
def test_finetune(finetune_bench):
    """One benchmark per strategy: test_finetune[last-layers], test_finetune[all-layers]."""
    result = finetune_bench()
    assert result.passed
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
    assert result.throughput["train"].samples_per_s > 0


@pytest.mark.bench_strategy("all-layers", options={"epochs": 1, "train_layers": "head+last:1"})
def test_head_and_last_block(finetune_bench, benchmark):
    """Options of the strategy (here: which layers train) come from the marker; extra_info from the run."""
    result = finetune_bench()
    assert result.params.trainable < result.params.total
    assert benchmark.extra_info["params_trainable"] == result.params.trainable
