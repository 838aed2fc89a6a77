"""finetune-bench: a plugin-based benchmark harness for fine-tuning strategies of transformers.

Plugin authors need only what this module exports::

    from bench import hookimpl, option, StrategyOutput, ParamCounts
"""

from bench.errors import BenchError, DataError, ModelError, PluginError, UsageError
from bench.hookimpl import ENTRY_POINT_GROUP, hookimpl
from bench.hookspecs import hookspec
from bench.options import option
from bench.strategy import ParamCounts, Strategy, StrategyOutput

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "BenchError",
    "DataError",
    "ModelError",
    "ParamCounts",
    "PluginError",
    "Strategy",
    "StrategyOutput",
    "UsageError",
    "__version__",
    "hookimpl",
    "hookspec",
    "option",
]
