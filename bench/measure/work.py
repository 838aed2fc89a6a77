"""Deterministic work counters of one step: what the code asked the device to do, independent of how
fast the machine was. Wall time on a shared runner moves 10-30% with no change in the code; the
operators a step calls and the bytes it allocates do not (the role instruction counts play in
CodSpeed), so ``bench compare`` reports any change in them exactly, without statistics.

:class:`WorkCounter` is a ``TorchDispatchMode`` run over one counted step (the first warm-up step of
a phase, the one whose FLOPs are counted): it counts each aten operator's calls and sums the bytes of
the tensors the operators return (the allocations a step makes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkCounts:
    """One counted step: its batch (samples, padded tokens), FLOPs, operator calls and bytes allocated."""

    samples: int
    padded_tokens: int
    flops: float
    allocated_bytes: int
    ops: dict[str, int] = field(default_factory=dict)


def counting_mode() -> Any:
    """A dispatch mode that counts operator calls and returned bytes (``mode.ops``, ``mode.allocated``)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class WorkCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: Counter[str] = Counter()
            self.allocated = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            self.ops[str(func.overloadpacket.__name__)] += 1
            inputs = {id(t) for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            for t in torch.utils._pytree.tree_leaves(out):  # new storage only: not views, not in-place results
                if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                    self.allocated += t.numel() * t.element_size()
            return out

    return WorkCounter()
