"""Sequence classification: data and model setup, fine-tuning and evaluation, shared by the
built-in classification strategies and by plugins (``from bench.api import train_and_test``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bench import speed
from bench.core import progress
from bench.core.context import RunContext
from bench.core.fields import option as _opt
from bench.core.strategy import StrategyOutput
from bench.data.batching import (
    Encoded,
    batches,
    encode_texts,
    length_grouped_order,
    random_order,
    sorted_order,
)
from bench.measure.meter import param_counts
from bench.measure.plan import PlanComplete
from bench.models import layers
from bench.models.loading import (
    attention_implementation,
    load_classifier,
    load_tokenizer,
    model_fingerprint,
    resolve_model,
)
from bench.speed import SpeedOptions, prefix_cache
from bench.training import parallel
from bench.training.loop import TrainOutcome, TrainSettings, train
from bench.training.parallel import ParallelOptions


@dataclass(frozen=True)
class TrainingOptions:
    """The training options every classification fine-tuning strategy shares (built-in or a plugin's,
    e.g. the baselines, LoRA): same names, so ``--epochs 2`` sets them all."""

    epochs: int = _opt(3, "training epochs", ge=1)
    max_steps: int = _opt(0, "stop after this many optimizer steps (0: no limit)", ge=0)
    batch_size: int = _opt(32, "training batch size (examples per micro-batch)", ge=1)
    grad_accum: int = _opt(1, "micro-batches per optimizer step", ge=1)
    lr: float = _opt(2e-4, "peak learning rate (AdamW)", gt=0)
    weight_decay: float = _opt(0.01, "AdamW weight decay (not on biases and norms)", ge=0)
    warmup_ratio: float = _opt(0.1, "share of steps with linear warm-up, then linear decay", ge=0, le=1)
    max_length: int = _opt(128, "truncate inputs to this many tokens", ge=2)
    train_samples: int = _opt(3000, "training examples used (0: the whole training split)", ge=0)
    eval_samples: int = _opt(0, "validation and test examples used, each (0: whole splits)", ge=0)
    eval_batch_size: int = _opt(128, "batch size for validation and test", ge=1)
    attn_implementation: str = _opt("auto", "auto | eager | sdpa (auto: eager, measured faster here)")


@dataclass(frozen=True)
class TrainingConfig(TrainingOptions, SpeedOptions, ParallelOptions):
    """The config of a strategy on the shared training path (:func:`train_and_test`): the training
    options, the speed techniques (:class:`bench.speed.SpeedOptions`), which it applies, and the data-parallel
    mode under torch.distributed (:class:`bench.training.parallel.ParallelOptions`)."""


@dataclass(frozen=True)
class FinetuneConfig(TrainingConfig):
    """Options of the built-in fine-tuning strategies (``all-layers``, ``last-layers``)."""

    train_layers: str = _opt("all", f"what trains: {layers.SYNTAX}")


@dataclass(frozen=True)
class Prepared:
    """Data tokenised once, with the tokenizer and the split sizes."""

    data: Any
    tokenizer: Any
    source: str
    train: list[Encoded]
    validation: list[Encoded]
    test: list[Encoded]
    pad_id: int


# The presets every classification fine-tuning strategy shares (a plugin's too: ``presets =
# CLASSIFICATION_PRESETS``). smoke: a sanity check that must show learning within a minute per strategy on
# a 2-core AVX2-only fp32 CPU: 640 examples, one epoch of 40 steps of 16 at a high learning rate (measured
# for all-layers on a majority class of 0.5312: 0.6797; 320 examples: 0.5859; one epoch of 10 steps of 32
# at 2e-4 stayed at the majority class; docs/cpu-presets.md). ci: one run per side of the three built-in classification strategies fits a
# 5-minute CI job on a 2-core CPU, with about 55 timed steps each for the paired comparison.
CLASSIFICATION_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"train_samples": 640, "eval_samples": 128, "epochs": 1, "batch_size": 16, "lr": 5e-4, "max_length": 64},
    "ci": {"train_samples": 960, "eval_samples": 256, "epochs": 1, "batch_size": 16, "max_length": 64},
    "full": {"train_samples": 0, "epochs": 3},
}

DATA_SEED = 0  # splits and subsets stay fixed across --seed, so seeds vary only training randomness


def load_data(run: RunContext, train_samples: int, eval_samples: int) -> Any:
    from bench.data.classification import load_classification

    data = load_classification(run.bench.dataset, text_column=run.bench.getoption("text_column", "text"),
                               label_column=run.bench.getoption("label_column", "label"), seed=DATA_SEED)
    return data.subset(train=train_samples or None, validation=eval_samples or None, test=eval_samples or None,
                       seed=DATA_SEED)


def prepare(run: RunContext, train_samples: int, eval_samples: int, max_length: int) -> Prepared:
    """The data, tokenised once, and the model source. Shape-only runs (``--weights random``) and plans
    get synthetic examples shaped like the default data (:mod:`bench.data.synthetic`; a plan: every
    example ``--seq-len`` or ``max_length`` long, the worst case of padding) and no evaluation splits."""
    if run.synthetic:
        return _synthetic(run, train_samples, max_length)
    data = load_data(run, train_samples, eval_samples)
    source = resolve_model(run.bench.model, "classification")
    tok = load_tokenizer(source)

    def enc(split: Any) -> list[Encoded]:
        return encode_texts(tok, [e.text for e in split], [e.label for e in split], max_length)

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return Prepared(data, tok, source, enc(data.train), enc(data.validation), enc(data.test), pad)


def _synthetic(run: RunContext, train_samples: int, max_length: int) -> Prepared:
    from bench.data import synthetic
    from bench.models.loading import pad_id_of_config, vocab_size_of

    source = resolve_model(run.bench.model, "classification", synthetic=True)
    pad = pad_id_of_config(source)
    seq_len = run.bench.seq_len or (max_length if run.bench.plan_only else 0)
    data = synthetic.classification(train_samples or 3000, vocab_size=vocab_size_of(source), pad_id=pad,
                                    seq_len=seq_len, max_length=max_length, seed=DATA_SEED)
    return Prepared(data, None, source, list(data.train), [], [], pad)


def classification_metrics(done: Finetuned) -> dict[str, float]:
    """The task metrics of a classification run; none for a shape-only run (random weights: not measured)."""
    if not done.test:
        return {}
    outcome = done.outcome
    return {
        "test_accuracy": done.test["accuracy"],
        "test_macro_f1": done.test["macro_f1"],
        "best_val_accuracy": outcome.best_score if outcome.best_score is not None else float("nan"),
        "test_loss": done.test["loss"],
    }


def classification_evidence(run: RunContext, prep: Prepared, done: Finetuned) -> dict[str, Any]:
    """The :class:`StrategyOutput` fields behind a classification row's intervals and paired tests: how
    many examples each metric saw, each test example's outcome, the data's and the model's identity."""
    if not done.test:
        return {"model_sha256": model_fingerprint(prep.source, run.synthetic)}
    return {
        "metric_samples": {"test_accuracy": len(prep.test), "test_macro_f1": len(prep.test),
                           "best_val_accuracy": len(prep.validation)},
        "correct": {"test_accuracy": done.test_correct},
        "data_sha256": str(getattr(prep.data, "sha256", "") or ""),
        "model_sha256": model_fingerprint(prep.source, run.synthetic),
    }


def evaluate(run: RunContext, model: Any, examples: list[Encoded], batch_size: int, pad_id: int,
             hidden: list[Any] | None = None) -> dict[str, float]:
    """Accuracy, macro-F1 and mean cross-entropy over ``examples`` (inference mode, autocast).
    ``hidden``: the examples' cached prefix outputs, when ``model`` is a :func:`prefix_cache.suffix_model`."""
    return evaluate_examples(run, model, examples, batch_size, pad_id, hidden)[0]


def evaluate_examples(run: RunContext, model: Any, examples: list[Encoded], batch_size: int, pad_id: int,
                      hidden: list[Any] | None = None) -> tuple[dict[str, float], list[int]]:
    """:func:`evaluate`, and each example's outcome (1 correct, 0 wrong) in the order of ``examples``.
    Under torch.distributed each rank evaluates its shard of the batches and the metrics come from the
    confusion matrix, the loss sum and the outcomes added over the ranks (each example is one rank's): exact,
    the same figures as one process."""
    import torch

    model.eval()
    order = sorted_order([len(e) for e in examples], batch_size)
    runs = [parallel.stand_in(b, order) for b in parallel.shard(order, run.dist)]
    picked = [idx for idx, _ in runs]
    source = batches(examples, picked, pad_id) if hidden is None else \
        prefix_cache.cached_batches(examples, hidden, picked, pad_id)
    loss_sum = torch.zeros((), dtype=torch.float64)
    confusion: Any = None
    correct = [0.0] * len(examples)
    with parallel.no_grad(model):
        for (indices, real), batch in zip(runs, progress.bar(source, desc="eval", total=len(runs), unit="batch")):
            inputs = batch.to(run.device)
            with run.autocast():
                out = model(**inputs)
            logits = out.logits.float()
            classes = logits.shape[-1]
            if confusion is None:
                confusion = torch.zeros(classes * classes, dtype=torch.long)
            if not real:  # a stand-in: this rank has no batch left, the others do
                continue
            loss_sum += torch.nn.functional.cross_entropy(logits, inputs["labels"], reduction="sum").double().cpu()
            pairs = inputs["labels"] * classes + logits.argmax(-1)
            confusion += torch.bincount(pairs, minlength=classes * classes).cpu()
            hits = (logits.argmax(-1) == inputs["labels"]).tolist()
            for index, hit in zip(indices, hits):
                correct[index] = float(hit)
    cells = confusion.numel() if confusion is not None else 0
    counts = [float(loss_sum), *(confusion.tolist() if confusion is not None else []), *correct]
    total = parallel.all_sum(run, counts)
    outcomes = [int(round(v)) for v in total[1 + cells:]]
    return {**confusion_metrics(total[1:1 + cells]), "loss": total[0] / max(1, len(examples))}, outcomes


def confusion_metrics(cells: list[float]) -> dict[str, float]:
    """Accuracy and macro-F1 (as scikit-learn's ``f1_score(average="macro")``: classes that are neither true
    nor predicted left out) from a flattened square confusion matrix (row: true class, column: predicted)."""
    import numpy as np

    n = int(round(len(cells) ** 0.5))
    matrix = np.asarray(cells, dtype=np.float64).reshape(n, n)
    total = matrix.sum()
    true, predicted, hits = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    present = (true + predicted) > 0
    f1 = np.where(present, 2.0 * hits / np.where(present, true + predicted, 1.0), 0.0)[present]
    return {"accuracy": float(hits.sum() / total) if total else float("nan"),
            "macro_f1": float(np.mean(f1)) if f1.size else float("nan")}


def finetune(run: RunContext, cfg: FinetuneConfig, train_layers: str) -> StrategyOutput:
    """Fine-tune a sequence classifier with ``train_layers`` trainable; evaluate the best epoch on test."""
    with run.meter.phase("setup"):
        prep = prepare(run, cfg.train_samples, cfg.eval_samples, cfg.max_length)
        model = load_classifier(run, prep.source, prep.data.label_names,
                                attention_implementation(run.device, cfg.attn_implementation))
        selection = layers.resolve(train_layers, model, always_train_new_head=True)
        layers.apply(model, selection)
        model.to(run.device)
    done = train_and_test(run, cfg, prep, model)
    outcome = done.outcome
    evidence = classification_evidence(run, prep, done)
    return StrategyOutput(
        metrics=classification_metrics(done),
        params=param_counts(model, outcome.optimizer),
        **evidence,
        trained_parameters=selection.parameters,
        trained_modules=selection.modules,
        extra={
            "train_layers": train_layers,
            "model": prep.source,
            "model_sha256": evidence["model_sha256"],
            "data": data_summary(prep.data),
            "best_epoch": outcome.best_epoch,
            "optimizer_steps": outcome.steps,
            "history": list(outcome.history),
            "train_losses": list(outcome.losses),
            "prefix_cache_bytes": done.prefix_cache_bytes,
        },
    )


@dataclass(frozen=True)
class Finetuned:
    """What :func:`train_and_test` returns: the training outcome, the test metrics, and the bytes the
    frozen-prefix cache held (0 when it was off; ``run.techniques`` says which techniques were on)."""

    outcome: TrainOutcome
    test: dict[str, float]  # empty for a shape-only run (nothing evaluated)
    prefix_cache_bytes: int = 0
    test_correct: tuple[int, ...] = ()  # each test example's outcome, in the test split's order


def train_and_test(run: RunContext, cfg: TrainingConfig, prep: Prepared, model: Any) -> Finetuned:
    """Train ``model`` (its trainable parameters, already chosen; the model on the run's device) on
    ``prep``, validating each epoch and keeping the best state, then evaluate on the test split.
    ``cfg`` is a :class:`TrainingConfig` (plugins, e.g. LoRA, pass their own subclass and model).

    The speed techniques of ``cfg`` apply through :func:`bench.speed.apply`, the same for every
    strategy that calls this: among them, the last block computes only the first position where the
    head reads only that one, and when the embeddings and the first blocks are frozen
    (``last-layers``) their outputs are computed once (in the train phase for the training split, in
    the eval phase for the validation split) and the epochs run the rest of the model only."""
    n_batches = parallel.batches_per_epoch(len(prep.train), cfg.batch_size, run.dist)
    with speed.apply(run, model, cfg, epochs=epochs_to_run(cfg, n_batches), classifier=True) as applied:
        return _train_and_test(run, cfg, prep, model, applied, n_batches)


def _train_and_test(run: RunContext, cfg: TrainingConfig, prep: Prepared, model: Any, applied: speed.Applied,
                    n_batches: int) -> Finetuned:
    import contextlib

    lengths = [len(e) for e in prep.train]
    plan = applied.prefix_plan
    train_hidden = val_hidden = None
    cache_bytes = 0
    if plan is not None and run.bench.plan_only:  # what the cache would hold: every example's prefix output
        cache_bytes = _planned_cache_bytes(model, prep, run.precision)
        plan = None
    if plan is not None:
        with run.meter.phase("train"):
            train_hidden = prefix_cache.compute(run, model, plan, prep.train, cfg.eval_batch_size, prep.pad_id,
                                                "prefix (train)")
        if prep.validation:
            with run.meter.phase("eval"):
                val_hidden = prefix_cache.compute(run, model, plan, prep.validation, cfg.eval_batch_size,
                                                  prep.pad_id, "prefix (validation)")
        cache_bytes = prefix_cache.nbytes(train_hidden) + prefix_cache.nbytes(val_hidden or [])

    with (prefix_cache.suffix_model(model, plan) if plan is not None else contextlib.nullcontext(model)) as trained:
        def epoch_batches(epoch: int) -> Any:
            if cfg.group_by_length:
                order = length_grouped_order(lengths, cfg.batch_size, run.seed + epoch)
            else:
                order = random_order(len(lengths), cfg.batch_size, run.seed + epoch)
            order = parallel.deal(order, lengths, run.dist)  # this rank's share of each global batch
            if train_hidden is None:
                return batches(prep.train, order, prep.pad_id)
            return prefix_cache.cached_batches(prep.train, train_hidden, order, prep.pad_id)

        def validate() -> dict[str, float]:
            m = evaluate(run, trained, prep.validation, cfg.eval_batch_size, prep.pad_id, val_hidden)
            return {"val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"], "val_loss": m["loss"]}

        evaluating = bool(prep.validation)  # shape-only runs have nothing to evaluate on

        settings = TrainSettings(cfg.epochs, cfg.max_steps, cfg.lr, cfg.weight_decay, cfg.warmup_ratio,
                                 cfg.grad_accum, fused_optimizer=cfg.fused_optimizer, parallel=cfg.parallel)
        try:
            outcome = train(run, speed.maybe_compile(trained, applied.options), epoch_batches, n_batches, settings,
                            validate if evaluating else None)
        except PlanComplete as done:
            raise PlanComplete(dataclasses.replace(done.figures, cache_bytes=cache_bytes)) from None
    for cached in (train_hidden, val_hidden):
        if cached is not None:
            cached.clear()  # free the cache before the test pass
    if not prep.test:
        return Finetuned(outcome, {}, cache_bytes)
    with run.meter.phase("eval"):
        test, correct = evaluate_examples(run, model, prep.test, cfg.eval_batch_size, prep.pad_id)
    return Finetuned(outcome, test, cache_bytes, tuple(correct))


def _planned_cache_bytes(model: Any, prep: Prepared, precision: str) -> int:
    """The frozen-prefix cache of the training and validation splits: one hidden state per token."""
    hidden = int(getattr(model.config, "hidden_size", 0) or getattr(model.config, "dim", 0))
    width = 2 if precision == "bf16" else 4
    return sum(len(e) for e in (*prep.train, *prep.validation)) * hidden * width


def epochs_to_run(cfg: TrainingConfig, batches_per_epoch: int) -> int:
    """Epochs the training loop will start: ``cfg.epochs``, fewer when ``cfg.max_steps`` stops it sooner."""
    if cfg.max_steps <= 0:
        return cfg.epochs
    steps_per_epoch = max(1, -(-batches_per_epoch // cfg.grad_accum))
    return min(cfg.epochs, -(-cfg.max_steps // steps_per_epoch))


def data_summary(data: Any) -> dict[str, Any]:
    return {
        "name": data.name,
        "source": data.source,
        "sha256": data.sha256,
        "label_names": list(data.label_names),
        "label_map": {str(k): v for k, v in data.label_map.items()},
        "train": len(data.train),
        "validation": len(data.validation),
        "test": len(data.test),
    }
