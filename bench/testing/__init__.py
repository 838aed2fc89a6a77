"""Testing helpers for strategy authors: tiny offline models and data, and a contract check.

Everything in ``__all__`` is public API (see docs/writing-plugins.md, "Testing with bench.testing")::

    from bench.testing import check_strategy

    def test_my_strategy_meets_the_contract(tmp_path):
        report = check_strategy("my-strategy", tmp_path=tmp_path, options={"epochs": 1})
        assert report.result.metrics["test_accuracy"] >= 0.0

:func:`check_strategy` runs a strategy through bench's own runner, in an isolated run process by
default, on a tiny random model built on the spot (no download, a few seconds on a CPU), then checks
the result against the contract (:data:`CHECKS`). It raises :class:`ContractError` listing every
problem, each with what to fix, or returns a :class:`ContractReport`.

The frozen-parameter check needs no help from the strategy: this module is also a bench plugin
(``-p bench.testing.watch``, which :func:`check_strategy` adds, and which ``bench run`` accepts too) whose
``bench_run_strategy`` wrapper installs a global forward pre-hook
(``torch.nn.modules.module.register_module_forward_pre_hook``) for the duration of the run. The first
call of a module that holds parameters and is not part of a model already seen makes it a watched
model, and a CPU copy of its parameters is kept. After the strategy returns, every parameter of each
watched model that ``StrategyOutput.trained_parameters`` does not name must be bit-identical to its
copy. Names are those of ``model.named_parameters()`` of the called model, or of a model inside it:
a wrapper's prefix is allowed (``lm.model.x.weight`` matches a declared ``model.x.weight``, as with
bench.training.sft's loss wrapper); for a peft model they read ``base_model.model...lora_A.default.weight``.
The copy is taken at the model's first call (before the first loss, so after the strategy froze what
it freezes). The plugin writes its findings to ``<run folder>/bench-testing.json``; the copy doubles
the parameters' memory on the CPU, which is nothing on the tiny models this kit is for.

It is also a pytest plugin: ``pytest_plugins = ["bench.testing"]`` in a ``conftest.py`` gives the
``bench_check`` fixture (:func:`check_strategy` bound to the test's ``tmp_path``).
"""

from bench.testing.check import (
    CHECKS,
    ENV_ISOLATE,
    ContractError,
    ContractReport,
    bench_check,
    check_result,
    check_strategy,
)
from bench.testing.tiny import default_assets, tiny_alpaca_jsonl, tiny_bert, tiny_llama, tiny_sentiment_csv
from bench.testing.watch import REPORT_FILENAME, FrozenCheck, WatchedModel

__all__ = [
    "CHECKS",
    "ENV_ISOLATE",
    "REPORT_FILENAME",
    "ContractError",
    "ContractReport",
    "FrozenCheck",
    "WatchedModel",
    "bench_check",
    "check_result",
    "check_strategy",
    "default_assets",
    "tiny_alpaca_jsonl",
    "tiny_bert",
    "tiny_llama",
    "tiny_sentiment_csv",
]
