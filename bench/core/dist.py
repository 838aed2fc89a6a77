"""The torch.distributed context of one rank, as a strategy run sees it (``run.dist``).

A run that is one rank of a torch.distributed job (``bench run --nproc-per-node N``, or ``bench run`` under
``torchrun``) gets a :class:`DistContext`; a one-process run gets ``None``. The shared training path
(:mod:`bench.training.parallel`) reads it to wrap the model (DDP or FSDP2), deal batches to ranks, shard
evaluation and reduce its counts. It is plain data plus the process groups, and imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PARALLEL_MODES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job, and the groups it talks through.

    Attributes:
        rank, world_size: the global rank and the number of ranks.
        local_rank, local_world_size: the rank on this node and the ranks on it (CUDA: ``cuda:local_rank``).
        nnodes: nodes in the job.
        backend: ``nccl`` (CUDA) or ``gloo`` (CPU): the default group's, which training uses.
        cpu_group: a gloo group for Python objects and evaluation counts (the default group on gloo).
        timeout_s: the collective timeout the groups were made with.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    nnodes: int
    backend: str
    cpu_group: Any = None
    timeout_s: float = 300.0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes results."""
        return self.rank == 0
