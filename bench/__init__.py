"""finetune-bench: a plugin-based benchmark harness for fine-tuning strategies of transformers.

The package, by layer (each imports only the layers above it in this list):

* :mod:`bench.core`: the contract every layer shares (errors, hook markers, the strategy protocol,
  the run context, option fields, progress output);
* :mod:`bench.results`: the result schema, the results file, report tables and plots;
* :mod:`bench.measure`: the meter, FLOPs and device peaks, the profiler, machine information;
* :mod:`bench.data`: classification and instruction data, batching, the default assets;
* :mod:`bench.models`: loading models, choosing what trains (``--train-layers``);
* :mod:`bench.speed`: the speed techniques, applied through one seam;
* :mod:`bench.training`: the training loop and the classification and sft recipes;
* :mod:`bench.compare`: ``bench compare`` and saved baselines;
* :mod:`bench.host`: hook specs, plugin discovery, the registry, options, the setup owner
  (:class:`~bench.host.harness.Harness`), the worker that runs one strategy, the CLI;
* :mod:`bench.pytest_plugin` and :mod:`bench.testing`: the pytest plugin and the plugin authors' test kit.

Plugin authors import from one module, :mod:`bench.api`. The names below are kept here too, for
the most common imports (``from bench import hookimpl``).
"""

from bench.core.errors import BenchError, DataError, ModelError, PluginError, UsageError
from bench.core.fields import option
from bench.core.markers import ENTRY_POINT_GROUP, hookimpl, hookspec
from bench.core.strategy import ParamCounts, Strategy, StrategyOutput

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
