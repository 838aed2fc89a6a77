"""``sft``: InstructGPT-style supervised fine-tuning of a causal LM on instruction/response pairs.

Default: SmolLM2-135M-Instruct on the built-in instruction set (Rotten Tomatoes fresh/rotten, VADER
positive/negative, two-digit addition). Loss on response tokens only; evaluated before and after
training by held-out loss/perplexity and exact match of greedy answers. The recipe is the library's
(:func:`bench.api.run_sft`), so plugins such as ``lora-sft`` train and evaluate the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.api import (
    BenchConfig,
    BenchError,
    RunContext,
    SftConfig,
    StrategyOutput,
    generation_sections,
    hookimpl,
    load_inputs,
    run_sft,
    strategy_config,
)

# smoke: long enough to move exact match above the zero-shot figure (the answer format is learnt first),
# short enough for a minute on a 2-core AVX2-only CPU, start-up included: 6 steps of 4 at a high learning
# rate, 12 held-out prompts answered in at most 5 tokens (the answers are a word or a sum of two 2-digit
# numbers: SmolLM2 writes digits one token each). Measured in docs/cpu-presets.md.
SMOKE = {"train_samples": 24, "eval_samples": 12, "batch_size": 4, "max_steps": 6, "lr": 3e-4, "max_length": 128,
         "max_new_tokens": 5, "show_generations": 3}
FULL = {"train_samples": 3000, "eval_samples": 300, "epochs": 1}


class Sft:
    name = "sft"
    description = "supervised fine-tuning of a causal LM on instructions (loss on responses; exact match before/after)"
    task = "causal-lm"
    config_class = SftConfig
    presets = {"smoke": SMOKE, "full": FULL}

    def run(self, run: RunContext) -> StrategyOutput:
        return run_sft(run, run.config)


# -------------------------------------------------------------------------------------------------
# Hooks.
# -------------------------------------------------------------------------------------------------


@hookimpl
def bench_register_strategies() -> list[Any]:
    return [Sft()]


@hookimpl
def bench_configure(config: BenchConfig) -> None:
    """Fail fast, in the host, on bad sft input the user gave (a --dataset file, a --model): one line, exit 2,
    before a run process starts or weights load. Skipped in run processes (the host already checked)."""
    if "sft" not in config.strategies or config.in_run_process or config.random_weights or config.plan_only:
        return  # the run process, and shape-only runs and plans (no data; the model's shape is checked there)
    if config.model is None and config.dataset is None:
        return
    try:
        _check_inputs(config)
    except BenchError as exc:
        raise type(exc)(f"sft: {exc}") from None


def _check_inputs(config: BenchConfig) -> None:
    from pathlib import Path

    from bench.api import check_causal_lm, resolve_model

    if config.model is not None:
        check_causal_lm(resolve_model(config.model, "causal-lm"))
    if config.dataset is None or not Path(config.dataset).expanduser().is_file():
        return  # the default data, or a hub id: checked in the run
    load_inputs(config, strategy_config(Sft(), config))


@hookimpl
def bench_report_sections(results: Sequence[Any]) -> list[Any]:
    return generation_sections(results)
