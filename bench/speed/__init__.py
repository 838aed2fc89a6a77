"""The speed techniques, behind one seam.

Every strategy on the shared training path (the classification recipe that ``all-layers``,
``last-layers`` and ``lora`` use, the sft recipe that ``sft`` and ``lora-sft`` use, and any
third-party strategy that calls them) gets the same techniques by default, through one settings
block and one function:

* :class:`SpeedOptions`: the techniques as options, a base class of every shared-path config
  (``TrainingConfig``, ``SftConfig``), so ``--prefix-cache false`` turns one off for every selected
  strategy that has it;
* :func:`apply`: applies each technique that fits the model, device and precision, and records in
  the run (``run.techniques``, then ``RunResult.techniques``) whether it was on, and what it did or
  why it was off. ``bench report`` shows the techniques and says when rows differ in them.

The techniques, each exact (same numbers) unless it says otherwise:

``fast_dropout``     CPU only: dropout with a cheaper random draw (same distribution, not the same
                     draw; :mod:`bench.speed.fast_dropout`).
``cast_frozen``      bf16 only: frozen ``nn.Linear`` weights stored in bf16 once, as autocast would
                     cast them every step (:func:`bench.models.layers.cast_frozen_linears`).
``first_token``      BERT-family classifiers: the last block computes position 0 only, the one the
                     head reads (:mod:`bench.speed.first_token`).
``prefix_cache``     frozen embeddings and leading blocks run once, not every epoch
                     (:mod:`bench.speed.prefix_cache`); needs more than one epoch.
``group_by_length``  batches of similar length (less padding); changes the batch order, not the data.
``fused_optimizer``  fused AdamW kernels (one pass per tensor).
``compile``          ``torch.compile`` (off by default: measured slower for training here).

Under torch.distributed (``run.dist``) each technique works as in one process, except: with
``--parallel fsdp`` ``cast_frozen`` and ``prefix_cache`` are off (FSDP's mixed-precision policy casts the
parameters it gathers, and an FSDP unit's parameters must share one dtype; the frozen prefix is sharded
with the rest), and ``compile`` is off (not measured with DDP or FSDP here). With ``--parallel ddp`` the
prefix cache holds every training example's prefix on every rank (ranks get other examples each epoch).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.core.fields import option

if TYPE_CHECKING:
    from bench.core.context import RunContext
    from bench.speed.prefix_cache import PrefixPlan


@dataclass(frozen=True)
class SpeedOptions:
    """The speed techniques as strategy options (a base class of every shared-path config)."""

    fast_dropout: bool = option(True, "on the CPU, dropout with a cheaper random draw (same distribution; "
                                      "F.dropout's bernoulli_ was 16% of a step here)")
    cast_frozen: bool = option(True, "under bf16 autocast, store frozen Linear weights in bf16 once (exact)")
    first_token: bool = option(True, "last block: compute only the first position, which the head reads "
                                     "(BERT-family classifiers; exact)")
    prefix_cache: bool = option(True, "compute the frozen embeddings and leading frozen blocks once, not every "
                                      "epoch (exact: frozen modules run in eval mode)")
    group_by_length: bool = option(True, "batches of similar length (little padding); false: random batches")
    fused_optimizer: bool = option(True, "fused AdamW (one kernel per tensor); false: foreach AdamW")
    compile: bool = option(False, "torch.compile the model (dynamic shapes); measured slower for training here")


TECHNIQUES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SpeedOptions))


def settings(cfg: Any) -> SpeedOptions:
    """The speed settings of a strategy config, which must derive from :class:`SpeedOptions`."""
    if not isinstance(cfg, SpeedOptions):
        raise TypeError(f"{type(cfg).__name__} is not a SpeedOptions: derive the strategy's config class from "
                        "bench.api.TrainingConfig (classification) or bench.api.SftConfig (causal LM), which "
                        "carry the speed options")
    return SpeedOptions(**{name: getattr(cfg, name) for name in TECHNIQUES})


@dataclass
class Applied:
    """What :func:`apply` set up: the frozen-prefix plan when the cache applies (the recipe computes the
    cache and trains the suffix), and the settings the recipe still applies itself (batch order,
    optimizer, compile)."""

    options: SpeedOptions
    prefix_plan: PrefixPlan | None


@contextlib.contextmanager
def apply(run: RunContext, model: Any, cfg: Any, *, epochs: int, classifier: bool) -> Iterator[Applied]:
    """Apply the speed techniques ``cfg`` asks for that fit ``model`` (after its trainable parameters
    are chosen and it is on the run's device), recording each in ``run``; undo the temporary ones on
    exit. ``epochs``: how many epochs will run (the prefix cache pays off from the second);
    ``classifier``: a sequence classifier (first-token and prefix cache apply to those only)."""
    opts = settings(cfg)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    record = run.record_technique
    fsdp = run.dist is not None and getattr(cfg, "parallel", "") == "fsdp"

    if not opts.fast_dropout:
        record("fast_dropout", False, "fast_dropout=false")
    elif run.bench.device != "cpu":
        record("fast_dropout", False, f"CPU only ({run.bench.device}'s own dropout is fast)")
    else:
        from bench.speed import fast_dropout

        info = fast_dropout.install(model)
        record("fast_dropout", info["modules"] > 0 or info["attention"],
               f"{info['modules']} dropout modules" + (" + attention probabilities" if info["attention"] else ""))

    if not opts.cast_frozen:
        record("cast_frozen", False, "cast_frozen=false")
    elif fsdp:
        record("cast_frozen", False, "FSDP: its mixed-precision policy casts what it gathers, and one unit's "
                                     "parameters share one dtype")
    elif run.precision != "bf16":
        record("cast_frozen", False, f"bf16 only (precision {run.precision})")
    else:
        import torch

        from bench.models.layers import cast_frozen_linears

        count = cast_frozen_linears(model, torch.bfloat16)
        record("cast_frozen", count > 0, f"{count:,} frozen Linear parameters in bf16" if count else
               "no frozen Linear layer")

    with contextlib.ExitStack() as stack:
        if not opts.first_token:
            record("first_token", False, "first_token=false")
        elif not classifier:
            record("first_token", False, "sequence classifiers only")
        else:
            from bench.speed import first_token

            block, why = first_token.plan(base)
            if block is not None:
                stack.enter_context(first_token.first_token_last_block(block))
            record("first_token", block is not None, "last block computes position 0 only" if block is not None
                   else why)

        plan = None
        if not opts.prefix_cache:
            record("prefix_cache", False, "prefix_cache=false")
        elif not classifier:
            record("prefix_cache", False, "sequence classifiers only")
        elif fsdp:
            record("prefix_cache", False, "FSDP: the frozen prefix is sharded with the rest of the model")
        else:
            from bench.speed import prefix_cache

            plan, why = prefix_cache.plan(base)
            if plan is not None and epochs <= 1:
                plan, why = None, "one epoch: no prefix output is used twice"
            detail = plan.describe() if plan is not None else why
            if plan is not None and run.dist is not None:
                detail += "; every rank holds every training example's prefix"
            record("prefix_cache", plan is not None, detail)

        record("group_by_length", opts.group_by_length, "" if opts.group_by_length else "group_by_length=false")
        record("fused_optimizer", opts.fused_optimizer, "" if opts.fused_optimizer else "fused_optimizer=false")
        if opts.compile and run.dist is not None:
            opts = dataclasses.replace(opts, compile=False)
            record("compile", False, "not with torch.distributed here (not measured with DDP or FSDP)")
        else:
            record("compile", opts.compile, "torch.compile(dynamic=True)" if opts.compile else "compile=false")
        yield Applied(opts, plan)


def maybe_compile(model: Any, opts: SpeedOptions) -> Any:
    """``torch.compile(model, dynamic=True)`` when the options ask for it (dynamic: batches vary in length)."""
    if not opts.compile:
        return model
    import torch

    return torch.compile(model, dynamic=True)
