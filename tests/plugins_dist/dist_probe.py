"""A test plugin for torch.distributed runs (loaded with ``--plugins-dir tests/plugins_dist``), driven by
environment variables, which the launched ranks inherit:

* ``BENCH_TEST_SAVE_PARAMS=1``: after the strategy, the parameters of the first model it called, whole
  (FSDP shards gathered; DDP's ``module.`` prefix dropped), go to ``params.pt`` in the run folder (rank 0);
* ``BENCH_TEST_FAIL=STRATEGY:RANK:MODE:AFTER[,...]``: in that strategy's run, that rank raises, kills itself
  or sleeps (MODE ``raise``, ``die`` or ``hang``) after AFTER training forwards of its model (0: at once).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from bench.api import hookimpl


def _fault(strategy: str, rank: int | None) -> tuple[str, int] | None:
    """(mode, after) for this strategy and rank, if a fault is asked for."""
    for spec in filter(None, os.environ.get("BENCH_TEST_FAIL", "").split(",")):
        name, who, mode, after = spec.split(":")
        if name == strategy and rank is not None and int(who) == rank:
            return mode, int(after)
    return None


def _fail(rank: int | None, mode: str) -> None:
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hang":
        time.sleep(3600)
    raise ValueError(f"injected failure on rank {rank}")


@hookimpl(wrapper=True)
def bench_run_strategy(run: Any) -> Any:
    import torch

    rank = run.dist.rank if run.dist is not None else None
    fault = _fault(run.strategy.name, rank)
    mode, after = fault or ("", 0)
    failing = fault is not None
    if failing and after <= 0:
        _fail(rank, mode)
    seen: list[Any] = []
    calls = [0]

    def pre(module: Any, args: Any) -> None:
        if not seen and any(True for _ in module.parameters()):
            seen.append(module)
        if failing and seen and module is seen[0] and module.training:
            calls[0] += 1
            if calls[0] > after:
                _fail(rank, mode)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(pre)
    try:
        output = yield
    finally:
        handle.remove()
    if os.environ.get("BENCH_TEST_SAVE_PARAMS") and seen:
        params = {}
        for name, p in seen[0].named_parameters():
            value = p.full_tensor() if hasattr(p, "full_tensor") else p  # a collective: every rank takes part
            params[name.removeprefix("module.")] = value.detach().float().cpu().clone()
        if rank in (None, 0):
            torch.save(params, run.out_dir / "params.pt")
    return output
