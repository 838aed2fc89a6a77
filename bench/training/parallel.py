"""Data parallelism on the shared training path: the ``parallel`` option, the model wrapped in DDP or FSDP2,
batches dealt to ranks, evaluation sharded and its counts reduced.

Every function here is the identity (or its one-process equivalent) when ``run.dist`` is ``None``, so the
recipes call them unconditionally and a one-process run takes the same code path.

* **Batch size is global.** ``--batch-size B`` is the number of examples in one optimizer step's micro-batch
  summed over all ranks: each of the W ranks takes B/W of them (B not divisible by W: some take one more). The
  learning rate, the schedule and the number of steps are those of a one-process run with batch B, and so is
  the loss: each rank scales its loss by its share of the step's examples (or, for sft, response tokens),
  counted across ranks, times W, which DDP's and FSDP's gradient averaging divides out again (:func:`loss_scale`).
* **Dealing.** The recipe's global order (length-grouped batches of B) is dealt per batch: its examples sorted by
  length and handed out in a snake (0, 1, ..., W-1, W-1, ..., 0, ...), so each step's ranks get examples of
  similar length and the same total within one example. A global batch with fewer than W examples (the
  epoch's last, when ``n % B < W``) is dropped on every rank (:func:`batches_per_epoch` counts it).
* **Evaluation** is sharded by batch (:func:`shard`); ranks left short of batches run stand-in batches whose
  outputs are dropped, so every rank makes the same number of forward calls (FSDP gathers parameters in each).
  Metrics are reduced exactly: sums and counts (:func:`all_sum`), or every prediction (:func:`all_gather`).
* **Accumulation.** With several micro-batches a step the ranks reduce gradients once, after the last
  (:func:`gradient_sync`).
* **DDP** (``DistributedDataParallel``, ``gradient_as_bucket_view=True``: the gradients are views into the
  communication buckets, so they hold no second copy). **FSDP** is FSDP2 (``fully_shard``): each transformer
  block is one unit, the whole model the root; under ``--precision bf16`` a ``MixedPrecisionPolicy`` gathers
  parameters in bf16 and reduces gradients in fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.core.dist import PARALLEL_MODES
from bench.core.errors import UsageError
from bench.core.fields import option

if TYPE_CHECKING:
    from bench.core.context import RunContext
    from bench.core.dist import DistContext

BATCH_SIZE_IS = "global"  # recorded in every distributed result: --batch-size counts the examples of all ranks


@dataclass(frozen=True)
class ParallelOptions:
    """The data-parallel option of every strategy on the shared training path (a base class of
    ``TrainingConfig`` and ``SftTrainingConfig``): only strategies whose config has it are launched as
    torch.distributed jobs."""

    parallel: str = option("ddp", "with --nproc-per-node or under torchrun: ddp (DistributedDataParallel: every rank "
                                  "holds the whole model) | fsdp (FSDP2 fully_shard: parameters, gradients and "
                                  "optimizer state sharded; bf16 mixed precision under --precision bf16)")

    def __post_init__(self) -> None:
        if self.parallel not in PARALLEL_MODES:
            raise ValueError(f"parallel must be one of {', '.join(PARALLEL_MODES)}, got {self.parallel!r}")


def is_parallel_config(config_class: type) -> bool:
    """Whether a strategy with this config class can run as a torch.distributed job."""
    return isinstance(config_class, type) and issubclass(config_class, ParallelOptions)


# -------------------------------------------------------------------------------------------------
# The model.
# -------------------------------------------------------------------------------------------------


def wrap(run: RunContext, model: Any, mode: str) -> Any:
    """``model`` ready for training on this rank: in DDP, or sharded in place with FSDP2 (each block a unit,
    the model the root). One process: ``model`` itself."""
    if run.dist is None:
        return model
    if mode not in PARALLEL_MODES:
        raise UsageError(f"--parallel {mode!r}: one of {', '.join(PARALLEL_MODES)}")
    import torch

    torch.manual_seed(run.seed + run.dist.rank)  # dropout: each rank its own stream, reproducible per rank
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        devices = [torch.cuda.current_device()] if run.device == "cuda" else None
        return DistributedDataParallel(model, device_ids=devices, gradient_as_bucket_view=True)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(run.device, (run.dist.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if run.precision == "bf16" else MixedPrecisionPolicy()
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def transformer_blocks(model: Any) -> list[Any]:
    """The blocks of the longest ``ModuleList`` of same-typed modules that hold parameters (a transformer's
    layers), or none."""
    import torch

    best: Any = None
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1 \
                and any(True for _ in module.parameters()) and (best is None or len(module) > len(best)):
            best = module
    return list(best) if best is not None else []


def is_sharded(model: Any) -> bool:
    """Whether any module of ``model`` is FSDP2-sharded (its forward then gathers parameters: a collective)."""
    import torch

    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    modules = getattr(model, "modules", None)  # a duck-typed model (a test's scripted LM) holds no FSDP module
    return modules is not None and any(isinstance(m, FSDPModule) for m in modules())


def no_grad(model: Any) -> contextlib.AbstractContextManager[Any]:
    """``inference_mode`` for evaluation, or ``no_grad`` for an FSDP-sharded model (parameters gathered
    under inference mode would be inference tensors that training cannot use afterwards)."""
    import torch

    return torch.no_grad() if is_sharded(model) else torch.inference_mode()


def gradient_sync(model: Any, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """Around one micro-batch's backward: with ``sync`` False (not the step's last micro-batch) the gradients
    only accumulate, without DDP's all-reduce or FSDP's reduce-scatter; the last one reduces them all."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext() if sync else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 module
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def full_state_dict(model: Any) -> dict[str, Any] | None:
    """The whole state dict of an FSDP-sharded ``model``, on the CPU, for saving (a collective: call it on every
    rank; rank 0 gets the tensors, the others an empty dict); ``None`` for a model that is not sharded (its own
    ``state_dict()`` is whole)."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


@contextlib.contextmanager
def unsharded_root(model: Any) -> Iterator[None]:
    """Within the block the FSDP root's own parameters (embeddings, final norm, head) stay gathered, so a
    submodule (a causal LM's ``generate`` under a loss wrapper) can run without the root's forward."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without distributed
        yield
        return
    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


# -------------------------------------------------------------------------------------------------
# Training batches.
# -------------------------------------------------------------------------------------------------


def deal(order: Sequence[Sequence[int]], lengths: Sequence[int], dist: DistContext | None) -> list[list[int]]:
    """This rank's share of each global batch of ``order``: the batch sorted by length (longest first) and
    dealt in a snake, so each step's ranks get similar lengths; batches with fewer examples than ranks are
    dropped on every rank."""
    if dist is None:
        return [list(b) for b in order]
    world, rank = dist.world_size, dist.rank
    mine = []
    for batch in order:
        if len(batch) < world:
            continue
        ranked = sorted(batch, key=lambda i: (-lengths[i], i))
        take = []
        for start in range(0, len(ranked), world):
            chunk = ranked[start:start + world]
            if (start // world) % 2:
                chunk = chunk[::-1]  # the snake: who got the longest of this round gets the shortest of the next
            if rank < len(chunk):
                take.append(chunk[rank])
        mine.append(take)
    return mine


def batches_per_epoch(examples: int, batch_size: int, dist: DistContext | None) -> int:
    """Global batches in an epoch of ``examples``, less a last one too small to give every rank an example."""
    full, rest = divmod(examples, batch_size)
    return full + (1 if rest >= (dist.world_size if dist is not None else 1) else 0)


def loss_scale(run: RunContext, local_count: int) -> Any:
    """The denominator a rank's loss terms share: the step's count (examples, or response tokens for sft)
    over every rank's micro-batches, divided by the ranks (their gradients are averaged, so the sum of
    ``loss_b * count_b / loss_scale`` over ranks and micro-batches is the mean of one process with the whole
    batch). One process: the count itself. A tensor on the run's device under torch.distributed (one small
    all-reduce per step; no host sync)."""
    if run.dist is None:
        return local_count
    import torch
    import torch.distributed as dist

    total = torch.tensor(float(local_count), device=run.device)
    dist.all_reduce(total)
    return total / run.dist.world_size


# -------------------------------------------------------------------------------------------------
# Evaluation.
# -------------------------------------------------------------------------------------------------


def shard(order: Sequence[Sequence[int]], dist: DistContext | None) -> list[list[int]]:
    """This rank's evaluation batches (every W-th, from its rank on), padded with empty stand-ins to the same
    count on every rank: run a forward on some real batch for each and drop its output."""
    if dist is None:
        return [list(b) for b in order]
    mine = [list(b) for b in order[dist.rank::dist.world_size]]
    count = -(-len(order) // dist.world_size)
    return mine + [[] for _ in range(count - len(mine))]


def stand_in(batch: Sequence[int], order: Sequence[Sequence[int]]) -> tuple[list[int], bool]:
    """The indices to run for a batch of :func:`shard`, and whether its outputs count (not a stand-in)."""
    return (list(batch), True) if batch else (list(order[0]), False)


def all_sum(run: RunContext, values: Sequence[float]) -> list[float]:
    """``values`` summed over the ranks (float64 on the CPU group: exact for counts below 2**53)."""
    if run.dist is None:
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(tensor, group=run.dist.cpu_group)
    return [float(v) for v in tensor.tolist()]


def all_gather(run: RunContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; one process: ``[obj]``."""
    if run.dist is None:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * run.dist.world_size
    dist.all_gather_object(out, obj, group=run.dist.cpu_group)
    return out
