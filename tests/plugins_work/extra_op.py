"""Test-only plugin: one extra elementwise operation per layer norm (an ``aten::mul`` by 1.0).

The numbers do not change, the work does: ``bench compare`` must report it as more work naming
``mul``, from one run per side, whatever the machine's load. Load it with ``--plugins-dir
tests/plugins_work``.
"""

from __future__ import annotations

from typing import Any

from bench.api import hookimpl


@hookimpl(wrapper=True)
def bench_run_strategy(run: Any) -> Any:
    import torch
    from torch.nn.modules.module import register_module_forward_hook

    def extra(module: Any, args: Any, output: Any) -> Any:
        if isinstance(module, torch.nn.LayerNorm) and isinstance(output, torch.Tensor):
            return output * 1.0
        return None

    handle = register_module_forward_hook(extra)
    try:
        return (yield)
    finally:
        handle.remove()
