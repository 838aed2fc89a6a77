"""The plugin API: every name a strategy plugin may use, in one module.

Plugins (the built-in strategies in ``strategies/``, the distributions in ``plugins/``, and third
parties) import from here and nothing else of ``bench`` (a test enforces it for the shipped ones);
``bench.testing`` is the test kit for their tests. docs/writing-plugins.md documents every name.

    from bench.api import StrategyOutput, TrainingConfig, hookimpl, prepare, train_and_test

Importing this module loads no torch; the functions import what they need when called.
"""

from __future__ import annotations

# -- the contract: hooks, the strategy protocol, its output, errors ----------------------------------
from bench.core.config import BenchConfig
from bench.core.context import RunContext
from bench.core.dist import DistContext
from bench.core.errors import BenchError, DataError, ModelError, PluginError, UsageError
from bench.core.fields import option
from bench.core.markers import ENTRY_POINT_GROUP, hookimpl, hookspec
from bench.core.progress import bar as progress_bar
from bench.core.progress import note
from bench.core.strategy import ParamCounts, Strategy, StrategyOutput

# -- data ---------------------------------------------------------------------------------------------
from bench.data.assets import cache_dir, checksum_problem, save_with_checksum
from bench.data.batching import Batch, Encoded, batches, length_grouped_order, random_order, sorted_order

# -- the host side a plugin may touch: options, a strategy's resolved config ---------------------------
from bench.host.config import strategy_config
from bench.host.options import OptionParser

# -- measurement -----------------------------------------------------------------------------------------
from bench.measure.meter import Meter, Profiler, param_counts

# -- models and what trains ------------------------------------------------------------------------------
from bench.models.layers import SYNTAX as TRAIN_LAYERS_SYNTAX
from bench.models.layers import Selection as LayerSelection
from bench.models.layers import apply as freeze_all_but
from bench.models.layers import cast_frozen_linears
from bench.models.layers import resolve as select_layers
from bench.models.loading import (
    attention_implementation,
    check_causal_lm,
    load_causal_lm,
    load_classifier,
    load_encoder,
    load_lm,
    load_sequence_classifier,
    load_tokenizer,
    model_fingerprint,
    resolve_model,
)

# -- results and reports ---------------------------------------------------------------------------------
from bench.results.report import Section
from bench.results.schema import (
    RESULTS_FILENAME,
    ActivationMeasure,
    CollectiveTime,
    DistributedInfo,
    EnergyInfo,
    ErrorInfo,
    PhaseMeasure,
    Provenance,
    RankMeasure,
    ResultsFile,
    RunResult,
    StepSample,
    StepStats,
    TechniqueUse,
    Throughput,
)
from bench.results.store import load_results

# -- the speed techniques ----------------------------------------------------------------------------------
from bench.speed import TECHNIQUES as SPEED_TECHNIQUES
from bench.speed import SpeedOptions

# -- the training library: classification --------------------------------------------------------------------
from bench.training.classify import (
    CLASSIFICATION_PRESETS,
    FinetuneConfig,
    Finetuned,
    Prepared,
    TrainingConfig,
    TrainingOptions,
    classification_evidence,
    classification_metrics,
    data_summary,
    evaluate,
    evaluate_examples,
    finetune,
    prepare,
    train_and_test,
)
from bench.training.loop import TrainOutcome, TrainSettings, train
from bench.training.parallel import ParallelOptions, full_state_dict

# -- the training library: sft ----------------------------------------------------------------------------------
from bench.training.sft import (
    evaluate_loss,
    generate,
    generation_sections,
    metric_suffix,
    pad_id_of,
    response_window_lm,
)
from bench.training.sft import score as exact_match_scores
from bench.training.sft_recipe import (
    Adapted,
    SftConfig,
    SftInputs,
    SftOptions,
    SftTrainingConfig,
    load_inputs,
    run_sft,
)

__all__ = [
    "CLASSIFICATION_PRESETS",
    "ENTRY_POINT_GROUP",
    "RESULTS_FILENAME",
    "SPEED_TECHNIQUES",
    "TRAIN_LAYERS_SYNTAX",
    "ActivationMeasure",
    "Adapted",
    "Batch",
    "BenchConfig",
    "BenchError",
    "CollectiveTime",
    "DataError",
    "DistContext",
    "DistributedInfo",
    "EnergyInfo",
    "Encoded",
    "ErrorInfo",
    "FinetuneConfig",
    "Finetuned",
    "LayerSelection",
    "Meter",
    "ModelError",
    "OptionParser",
    "ParallelOptions",
    "ParamCounts",
    "PhaseMeasure",
    "PluginError",
    "Prepared",
    "Profiler",
    "Provenance",
    "RankMeasure",
    "ResultsFile",
    "RunContext",
    "RunResult",
    "Section",
    "SftConfig",
    "SftInputs",
    "SftOptions",
    "SftTrainingConfig",
    "SpeedOptions",
    "StepSample",
    "StepStats",
    "Strategy",
    "StrategyOutput",
    "TechniqueUse",
    "Throughput",
    "TrainOutcome",
    "TrainSettings",
    "TrainingConfig",
    "TrainingOptions",
    "UsageError",
    "attention_implementation",
    "batches",
    "cache_dir",
    "cast_frozen_linears",
    "check_causal_lm",
    "checksum_problem",
    "classification_evidence",
    "classification_metrics",
    "data_summary",
    "evaluate",
    "evaluate_examples",
    "evaluate_loss",
    "exact_match_scores",
    "finetune",
    "freeze_all_but",
    "full_state_dict",
    "generate",
    "generation_sections",
    "hookimpl",
    "hookspec",
    "length_grouped_order",
    "load_causal_lm",
    "load_classifier",
    "load_encoder",
    "load_inputs",
    "load_lm",
    "load_results",
    "load_sequence_classifier",
    "load_tokenizer",
    "metric_suffix",
    "model_fingerprint",
    "note",
    "option",
    "pad_id_of",
    "param_counts",
    "prepare",
    "progress_bar",
    "random_order",
    "resolve_model",
    "response_window_lm",
    "run_sft",
    "save_with_checksum",
    "select_layers",
    "sorted_order",
    "strategy_config",
    "train",
    "train_and_test",
]
