"""The shared training loop: AdamW with warm-up and linear decay, gradient accumulation, autocast,
measured step by step by the run's meter, validation after each epoch and the best state kept.

No host sync inside a step: the loss is logged as a tensor and read after the phase.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench.core import progress
from bench.core.context import RunContext
from bench.data.batching import Batch
from bench.measure.plan import PlanComplete, PlanFigures, figures_of, planned_activation_bytes
from bench.models.layers import frozen_modules
from bench.training import parallel


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    max_steps: int  # 0: no limit beyond epochs
    lr: float
    weight_decay: float
    warmup_ratio: float
    grad_accum: int
    max_grad_norm: float = 1.0
    fused_optimizer: bool = True  # False: foreach AdamW (measured slower; kept for the ablation)
    parallel: str = "ddp"  # under torch.distributed: ddp | fsdp (bench.training.parallel)
    loss_per: str = "sample"  # what a batch's loss is a mean over: "sample" (classification) or "token" (sft)


@dataclass(frozen=True)
class TrainOutcome:
    steps: int
    epochs_run: float
    best_epoch: int
    best_score: float | None
    history: tuple[dict[str, float], ...]
    optimizer: Any
    losses: tuple[float, ...] = ()  # each optimizer step's training loss (over every rank's examples)
    model: Any = None  # the model as trained: in DDP, or FSDP-sharded, under torch.distributed


def make_optimizer(params: list[Any], lr: float, weight_decay: float, device: str, fused: bool = True) -> Any:
    """AdamW, fused (one pass over each tensor) on CUDA and on CPU (torch >= 2.4), else foreach.

    On CPU the foreach version materialises full-size temporaries: measured ~5x slower than fused for
    SmolLM2-135M's 135M parameters on a 2-core machine, longer than the forward and backward passes.
    """
    import torch

    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if fused and device in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, TypeError):  # an older torch without fused CPU kernels
            pass
    return torch.optim.AdamW(groups, lr=lr, foreach=True)


def linear_schedule(optimizer: Any, warmup_steps: int, total_steps: int) -> Any:
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    run: RunContext,
    model: Any,
    epoch_batches: Callable[[int], Iterable[Batch]],
    batches_per_epoch: int,
    settings: TrainSettings,
    validate: Callable[[], dict[str, float]] | None = None,
    score_key: str = "val_accuracy",
) -> TrainOutcome:
    """Train ``model``'s trainable parameters; return after restoring the best validated state.
    In plan mode (``bench plan``) stop before the first step with the memory it would take.
    Under torch.distributed (``run.dist``) the model is wrapped as ``settings.parallel`` says
    (:func:`bench.training.parallel.wrap`; ``epoch_batches`` yields this rank's share of each step) and each
    rank's loss is scaled so that the averaged gradient is that of one process with the whole batch."""
    import torch

    if run.bench.plan_only:
        raise PlanComplete(_plan(run, model, epoch_batches))

    model = parallel.wrap(run, model, settings.parallel)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, settings.lr, settings.weight_decay, run.device, settings.fused_optimizer)
    if settings.fused_optimizer and not optimizer.defaults.get("fused"):
        run.record_technique("fused_optimizer", False, "this torch has no fused AdamW for the device; foreach used")
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / settings.grad_accum))
    total = steps_per_epoch * settings.epochs
    if settings.max_steps > 0:
        total = min(total, settings.max_steps)
    scheduler = linear_schedule(optimizer, int(settings.warmup_ratio * total), total)
    run.meter.expect_steps("train", total)
    frozen = frozen_modules(model)
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    best: tuple[float, int, dict[str, Any]] | None = None
    history: list[dict[str, float]] = []
    losses: list[Any] = []
    step = 0
    epoch = 0
    while step < total:
        with run.meter.phase("train"):
            model.train()
            for module in frozen:
                module.eval()  # frozen layers: no dropout, no work for autograd
            pending: list[Batch] = []
            label = f"train epoch {epoch + 1}/{math.ceil(total / steps_per_epoch)}"
            for batch in progress.bar(epoch_batches(epoch), desc=label, total=batches_per_epoch, unit="batch"):
                pending.append(batch)
                if len(pending) < settings.grad_accum:
                    continue
                losses.append(_optimizer_step(run, model, pending, optimizer, scheduler, params, settings, step))
                pending = []
                step += 1
                if step >= total:
                    break
            if pending and step < total:
                losses.append(_optimizer_step(run, model, pending, optimizer, scheduler, params, settings, step))
                step += 1
        epoch += 1
        record = {"epoch": float(epoch), "step": float(step)}
        if validate is not None:
            with run.meter.phase("eval"):
                record.update(validate())
            score = record.get(score_key)
            if score is not None and (best is None or score > best[0]):
                state = {n: p.detach().clone() for n, p in model.named_parameters() if n in set(trainable_names)}
                best = (score, epoch, state)
            for key, value in record.items():
                if key not in ("epoch", "step"):
                    run.meter.log(key, value, step)
        history.append(record)
    if best is not None and best[1] != epoch:
        with torch.no_grad():
            params_by_name = dict(model.named_parameters())
            for name, value in best[2].items():
                params_by_name[name].copy_(value)
    step_losses = [v / run.world_size for v in parallel.all_sum(run, [float(x) for x in losses])]
    for i, value in enumerate(step_losses):  # read after training: no host sync inside a step
        run.meter.log("train/loss", value, i)
    return TrainOutcome(step, epoch, best[1] if best else epoch, best[0] if best else None, tuple(history), optimizer,
                        tuple(step_losses), model)


def _plan(run: RunContext, model: Any, epoch_batches: Callable[[int], Iterable[Batch]]) -> PlanFigures:
    """The plan's figures: the model's parameter, gradient and AdamW bytes, and the activations its
    first micro-batch's forward and loss save (on fake tensors: no memory, no compute)."""
    batch = next(iter(epoch_batches(0)))
    model.train()
    for module in frozen_modules(model):
        module.eval()  # as in training: frozen layers drop nothing and save nothing
    saved = planned_activation_bytes(model, batch.to(run.device), run.precision)
    return figures_of(model, saved, batch.samples, batch.padded_tokens // max(1, batch.samples))


def _optimizer_step(run: RunContext, model: Any, micro: list[Batch], optimizer: Any, scheduler: Any,
                    params: list[Any], settings: TrainSettings, step: int) -> Any:
    """One optimizer step over ``micro``; returns this rank's part of the step's loss (a tensor: the step's
    loss is the sum of the ranks' parts over the ranks)."""

    def count(b: Batch) -> int:  # what the batch's loss is a mean over
        return b.tokens if settings.loss_per == "token" else b.samples

    samples = sum(b.samples for b in micro)
    tokens = sum(b.tokens for b in micro)
    with run.meter.step(samples=samples, tokens=tokens, input_tokens=sum(b.input_tokens for b in micro)):
        total_loss = None
        denominator = parallel.loss_scale(run, sum(count(b) for b in micro))
        for batch in micro:
            inputs = batch.to(run.device)

            def forward_backward(inputs: dict[str, Any] = inputs, batch: Batch = batch) -> Any:
                with run.autocast():
                    loss = model(**inputs).loss
                scaled = loss * (count(batch) / denominator)
                scaled.backward()
                return scaled.detach()

            with parallel.gradient_sync(model, batch is micro[-1]):  # reduce once, after the last micro-batch
                scaled = run.meter.count_flops(forward_backward, batch.padded_tokens, batch.samples)
            total_loss = scaled if total_loss is None else total_loss + scaled
        if settings.max_grad_norm > 0:
            clip_gradients(params, settings.max_grad_norm, run.device)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    run.meter.log("train/lr", scheduler.get_last_lr()[0], step)
    return total_loss


def clip_gradients(params: list[Any], max_norm: float, device: str) -> None:
    """``clip_grad_norm_``; on the CPU, where reading the norm costs no device sync, the rescale (a
    read and a write of every gradient) is skipped when the norm is within ``max_norm``, where it
    would multiply by exactly 1."""
    import torch

    utils = torch.nn.utils
    if device != "cpu" or not hasattr(utils, "get_total_norm") or not hasattr(utils, "clip_grads_with_norm_"):
        utils.clip_grad_norm_(params, max_norm, foreach=True)
        return
    grads = [p.grad for p in params if p.grad is not None]
    norm = utils.get_total_norm(grads, foreach=True)  # FSDP's sharded gradients: a replicated DTensor
    if float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm) > max_norm:
        utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
