"""The sft recipe: supervised fine-tuning of a causal LM on instruction/response pairs, as the built-in
``sft`` strategy runs it, open to plugins (``lora-sft`` wraps the model with adapters; the
``hf-trainer-sft`` baseline reuses the inputs). The building blocks are in :mod:`bench.training.sft`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench import speed
from bench.core.context import RunContext
from bench.core.fields import check_bounds
from bench.core.fields import option as _opt
from bench.core.strategy import StrategyOutput
from bench.models.layers import SYNTAX
from bench.speed import SpeedOptions
from bench.training import parallel
from bench.training.parallel import ParallelOptions


@dataclass(frozen=True)
class SftOptions:
    """The options every sft-style strategy shares (``sft``, ``lora-sft``, ``hf-trainer-sft``): data,
    prompts, training and evaluation. The defaults (400 training examples: 50 steps of 8; 150 held-out)
    took 6 min 40 s on the default assets on a quiet 2-core AVX2-only CPU in fp32 (docs/cpu-presets.md);
    1,200 and 300, the earlier defaults, took 25 minutes there under load."""

    epochs: int = _opt(1, "training epochs", ge=1)
    max_steps: int = _opt(0, "stop after this many optimizer steps (0: no limit)", ge=0)
    batch_size: int = _opt(8, "training batch size (examples per micro-batch)", ge=1)
    grad_accum: int = _opt(1, "micro-batches per optimizer step", ge=1)
    lr: float = _opt(1e-4, "peak learning rate (AdamW; 1e-4 beat 2e-4 and 3e-4 on the default data, README)", gt=0)
    weight_decay: float = _opt(0.0, "AdamW weight decay (not on biases and norms)", ge=0)
    warmup_ratio: float = _opt(0.05, "share of steps with linear warm-up, then linear decay", ge=0, le=1)
    max_length: int = _opt(256, "prompt+response tokens kept (longer responses are cut; prompts that fill it are "
                                "dropped)", ge=2)
    train_samples: int = _opt(400, "training examples (default data: the first N of a fixed pool, balanced by "
                                   "source; files: a seeded random subset; 0: all)", ge=0)
    eval_samples: int = _opt(150, "held-out examples (default data: the first N of a fixed pool, balanced by "
                                  "source; files: a seeded random subset; 0: all)", ge=0)
    eval_batch_size: int = _opt(16, "batch size for held-out loss and generation", ge=1)
    max_new_tokens: int = _opt(8, "greedy generation length for exact match (answers are a word or a number)", ge=1)
    prompt_format: str = _opt("auto", "auto | chat | alpaca (auto: the chat template when the tokenizer has one)")
    data_seed: int = _opt(0, "seed of the data split and subsets (kept fixed across --seed)", ge=0)
    test_fraction: float = _opt(0.1, "held-out share of a --dataset file or hub set without a test split", gt=0, lt=1)
    show_generations: int = _opt(9, "generations (before and after) kept in the result", ge=0)
    attn_implementation: str = _opt("auto", "auto | eager | sdpa (auto: eager on CPU, sdpa on CUDA)")

    def __post_init__(self) -> None:
        check_bounds(self)  # the host checks first, naming the option; this catches direct construction
        more = getattr(super(), "__post_init__", None)  # the other bases' checks (ParallelOptions)
        if more is not None:
            more()


@dataclass(frozen=True)
class SftTrainingConfig(SftOptions, SpeedOptions, ParallelOptions):
    """The config of a strategy on the sft recipe (:func:`run_sft`): the sft options, the speed
    techniques (:class:`bench.speed.SpeedOptions`), which it applies, and the data-parallel mode under
    torch.distributed (:class:`bench.training.parallel.ParallelOptions`)."""


@dataclass(frozen=True)
class SftConfig(SftTrainingConfig):
    """The built-in ``sft`` strategy's options: the shared ones and ``--train-layers``."""

    train_layers: str = _opt("all", f"what trains: {SYNTAX}")


@dataclass(frozen=True)
class SftInputs:
    """The model source, its tokenizer and prompt style, the data and both encoded splits."""

    source: str
    tokenizer: Any
    style: str
    data: Any
    train: Any  # bench.sft.EncodedSplit
    test: Any


def load_inputs(bench_config: Any, cfg: SftOptions) -> SftInputs:
    """Resolve the model, load its tokenizer, load and encode the data as ``cfg`` says; a split left with
    no example (every prompt too long) is a DataError. Shared by ``sft`` and the strategies that compare
    with it (``lora-sft``, ``hf-trainer-sft``)."""
    from bench.data.instructions import load_instruction_data
    from bench.models.loading import load_tokenizer, resolve_model
    from bench.training import sft

    source = resolve_model(bench_config.model, "causal-lm")
    tokenizer = load_tokenizer(source)
    style = sft.prompt_style(tokenizer, cfg.prompt_format)
    data = load_instruction_data(bench_config.dataset, seed=cfg.data_seed, train_samples=cfg.train_samples,
                                     eval_samples=cfg.eval_samples, test_fraction=cfg.test_fraction)
    train_split = sft.encode(tokenizer, data.train, style, cfg.max_length)
    test_split = sft.encode(tokenizer, data.test, style, cfg.max_length)
    sft.require_items(train_split, "training", cfg.max_length)
    sft.require_items(test_split, "held-out", cfg.max_length)
    return SftInputs(source, tokenizer, style, data, train_split, test_split)


@dataclass(frozen=True)
class Adapted:
    """What a ``wrap`` callback of :func:`run_sft` returns (e.g. LoRA adapters around the model).

    ``model`` is what generates; ``inner`` the causal LM whose forward the response-window loss calls
    (the same module, or the model inside a wrapper); ``trained_parameters``/``trained_modules`` name
    what trains; ``finish`` is called after training and returns extra metrics and extra fields."""

    model: Any
    inner: Any
    trained_parameters: tuple[str, ...]
    trained_modules: tuple[str, ...]
    finish: Callable[[], tuple[dict[str, float], dict[str, Any]]] = lambda: ({}, {})


def run_sft(run: RunContext, cfg: SftTrainingConfig, wrap: Callable[[Any], Adapted] | None = None) -> StrategyOutput:
    """Supervised fine-tuning as the ``sft`` strategy does it. ``wrap`` (plugins): replace the layer
    selection by another way of choosing what trains, given the loaded model (see :class:`Adapted`)."""
    from bench.data.batching import length_grouped_order, random_order
    from bench.measure.meter import param_counts
    from bench.models import layers
    from bench.models.loading import attention_implementation, load_lm
    from bench.training import sft
    from bench.training.loop import TrainSettings, train

    with run.meter.phase("setup"):
        if run.synthetic:
            source, examples, pad, synthetic_data = _synthetic_examples(run, cfg)
        else:
            inputs = load_inputs(run.bench, cfg)
            source, tokenizer, style, data = inputs.source, inputs.tokenizer, inputs.style, inputs.data
            train_split, test_split = inputs.train, inputs.test
            examples = [it.encoded for it in train_split.items]
            pad = sft.pad_id_of(tokenizer)
        base = load_lm(run, source, attention_implementation(run.device, cfg.attn_implementation))
        if wrap is None:
            if not isinstance(cfg, SftConfig):
                raise TypeError(f"run_sft without wrap chooses what trains from train_layers: pass an SftConfig, "
                                f"not a {type(cfg).__name__}")
            selection = layers.resolve(cfg.train_layers, base, always_train_new_head=False)
            layers.apply(base, selection)
            adapted = Adapted(base, base, selection.parameters, selection.modules)
        else:
            adapted = wrap(base)
        model = adapted.model
        model.to(run.device)
        lm = sft.response_window_lm(adapted.inner)  # loss and LM head over the response positions only

    def evaluate(desc: str) -> tuple[float, list[str]]:
        loss, _ = sft.evaluate_loss(run, lm, test_split.items, cfg.eval_batch_size, pad)
        with parallel.unsharded_root(lm):  # FSDP: generate runs the LM inside the sharded root
            return loss, sft.generate(run, model, tokenizer, test_split.items, cfg.eval_batch_size,
                                      cfg.max_new_tokens, pad, desc)

    if not run.synthetic:
        with run.meter.phase("baseline"):
            loss_before, before = evaluate("generate (before)")

    lengths = [len(e) for e in examples]
    n_batches = parallel.batches_per_epoch(len(examples), cfg.batch_size, run.dist)
    settings = TrainSettings(cfg.epochs, cfg.max_steps, cfg.lr, cfg.weight_decay, cfg.warmup_ratio, cfg.grad_accum,
                             fused_optimizer=cfg.fused_optimizer, parallel=cfg.parallel, loss_per="token")
    with speed.apply(run, adapted.inner, cfg, epochs=cfg.epochs, classifier=False) as applied:

        def epoch_batches(epoch: int) -> Iterator[Any]:
            if applied.options.group_by_length:
                order = length_grouped_order(lengths, cfg.batch_size, run.seed + epoch)
            else:
                order = random_order(len(lengths), cfg.batch_size, run.seed + epoch)
            return sft.window_batches(examples, parallel.deal(order, lengths, run.dist), pad)

        outcome = train(run, speed.maybe_compile(lm, applied.options), epoch_batches, n_batches, settings)

    train_steps = [s for s in run.meter.steps if s.phase == "train"]
    tokens = {"train_response_tokens": sum(s.tokens for s in train_steps),
              "train_input_tokens": sum(s.input_tokens for s in train_steps),
              "train_input_tokens_per_s": sft.input_tokens_per_s(run.meter.steps)}
    if run.synthetic:  # shape-only: random weights, nothing to evaluate
        more_metrics, more_extra = adapted.finish()
        return StrategyOutput(
            metrics={}, params=param_counts(model, outcome.optimizer), primary_metric="exact_match_after",
            trained_parameters=adapted.trained_parameters, trained_modules=adapted.trained_modules,
            extra={**more_extra, "model": source, "data": {"name": synthetic_data.name, "source": synthetic_data.source},
                   "optimizer_steps": outcome.steps, "epochs_run": outcome.epochs_run,
                   "train_losses": list(outcome.losses), **tokens})
    test = test_split.items
    with run.meter.phase("eval"):
        loss_after, after = evaluate("generate (after)")

    scores_before, scores_after = sft.score(test, before), sft.score(test, after)
    metrics = {
        "exact_match_before": scores_before.overall,
        "exact_match_after": scores_after.overall,
        "eval_loss": loss_after,
        "eval_perplexity": _perplexity(loss_after),
        "eval_loss_before": loss_before,
        "eval_perplexity_before": _perplexity(loss_before),
    }
    if len(scores_after.by_source) > 1:
        for src in scores_after.by_source:
            suffix = sft.metric_suffix(src)
            metrics[f"exact_match_before_{suffix}"] = scores_before.by_source[src]
            metrics[f"exact_match_after_{suffix}"] = scores_after.by_source[src]
    generations_file = run.out_dir / "generations.jsonl"
    if run.is_main:  # every rank holds every answer; one writes them
        sft.write_generations(generations_file, test, before, after)
    more_metrics, more_extra = adapted.finish()
    from bench.models.loading import model_fingerprint

    return StrategyOutput(
        metrics={**metrics, **more_metrics},
        params=param_counts(model, outcome.optimizer),
        primary_metric="exact_match_after",
        metric_samples={"exact_match_after": len(test), "exact_match_before": len(test)},
        correct={"exact_match_after": [int(h) for h in scores_after.hits],
                 "exact_match_before": [int(h) for h in scores_before.hits]},
        data_sha256=_examples_sha256(data),
        model_sha256=model_fingerprint(source),
        trained_parameters=adapted.trained_parameters,
        trained_modules=adapted.trained_modules,
        extra={
            **more_extra,
            "model": source,
            "prompt_format": style,
            "train_layers": cfg.train_layers if isinstance(cfg, SftConfig) and wrap is None else "",
            "data": _data_summary(data, train_split, test_split),
            "optimizer_steps": outcome.steps,
            "epochs_run": outcome.epochs_run,
            "train_losses": list(outcome.losses),
            **tokens,
            "eval_response_tokens": sum(it.response_tokens for it in test),
            "exact_match_by_source": {"before": scores_before.by_source, "after": scores_after.by_source},
            "generations": sft.sample_generations(test, before, after, cfg.show_generations),
            "generations_file": str(generations_file),
        },
    )


def _synthetic_examples(run: RunContext, cfg: SftOptions) -> tuple[str, list[Any], int, Any]:
    """Shape-only runs and plans: the model's shape, synthetic prompt+response examples, the padding id."""
    from bench.data import synthetic
    from bench.models.loading import pad_id_of_config, resolve_model, vocab_size_of

    source = resolve_model(run.bench.model, "causal-lm", synthetic=True)
    pad = pad_id_of_config(source)
    seq_len = run.bench.seq_len or (cfg.max_length if run.bench.plan_only else 0)
    data = synthetic.causal_lm(cfg.train_samples or 1200, vocab_size=vocab_size_of(source), pad_id=pad,
                               seq_len=seq_len, max_length=cfg.max_length, seed=cfg.data_seed)
    return source, list(data.train), pad, data


def _examples_sha256(data: Any) -> str:
    """The identity of an instruction set: sha256 over its examples, train then test, in order."""
    import hashlib
    import json

    h = hashlib.sha256()
    for split in (data.train, data.test):
        for e in split:
            h.update(json.dumps([e.instruction, e.input, e.output]).encode())
        h.update(b"|")
    return h.hexdigest()


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def _data_summary(data: Any, train_split: Any, test_split: Any) -> dict[str, Any]:
    sources: dict[str, dict[str, int]] = {}
    for split, items in (("train", train_split.items), ("test", test_split.items)):
        for it in items:
            sources.setdefault(it.example.source, {"train": 0, "test": 0})[split] += 1
    templates = sorted({it.example.template for it in (*train_split.items, *test_split.items)})
    return {"name": data.name, "source": data.source, "train": len(train_split.items), "test": len(test_split.items),
            "dropped_train": train_split.dropped, "dropped_test": test_split.dropped,
            "longest_prompt_tokens": max(train_split.longest_prompt, test_split.longest_prompt),
            "sources": sources, "templates": templates}


