"""FLOPs and the device's peak, for model FLOPs utilisation (MFU).

* FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one real
  warm-up step (forward and backward), divided by the padded tokens it processed, gives FLOPs per
  token; MFU = FLOPs per token x real tokens/s of the timed steps / peak. Padding costs compute but
  counts as no useful work, so it lowers MFU, as it should.
* The peak comes from a table keyed by GPU name and dtype (vendor datasheet figures, dense, no
  sparsity) or, on CPUs and unknown GPUs, from a short measured matmul probe. The result records
  which (``peak_flops_source``). No constant is assumed for a device that is not in the table.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

# (substring of torch.cuda.get_device_name(), dtype) -> dense peak FLOP/s from the vendor datasheet.
GPU_PEAK_FLOPS: dict[tuple[str, str], float] = {
    ("H200", "bf16"): 989.4e12, ("H200", "fp32"): 66.9e12,
    ("H100 PCIe", "bf16"): 756.0e12, ("H100 PCIe", "fp32"): 51.2e12,
    ("H100", "bf16"): 989.4e12, ("H100", "fp32"): 66.9e12,  # SXM / HBM3
    ("A100", "bf16"): 312.0e12, ("A100", "fp32"): 19.5e12,
    ("L40S", "bf16"): 362.1e12, ("L40S", "fp32"): 91.6e12,
    ("L4", "bf16"): 121.0e12, ("L4", "fp32"): 30.3e12,
    ("A10G", "bf16"): 70.0e12, ("A10G", "fp32"): 31.2e12,
    ("RTX 4090", "bf16"): 165.2e12, ("RTX 4090", "fp32"): 82.6e12,
}


def table_peak(device_name: str, precision: str) -> float | None:
    """The table's peak for this GPU and dtype, most specific name first (``H100 PCIe`` before ``H100``)."""
    for (name, dtype), flops in sorted(GPU_PEAK_FLOPS.items(), key=lambda kv: -len(kv[0][0])):
        if dtype == precision and name in device_name:
            return flops
    return None


def probe_peak(device: str, precision: str, size: int = 2048, repeats: int = 5) -> float:
    """Measured matmul FLOP/s: the best of ``repeats`` timed ``size``-square matmuls after a warm-up."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


@functools.cache
def peak_flops(device: str, precision: str) -> tuple[float, str]:
    """The device's peak FLOP/s for ``precision`` and where the figure came from (measured once per
    process and device: later in-process runs reuse the probe)."""
    if device == "cuda":
        import torch

        name = torch.cuda.get_device_name()  # the current device: a rank's own GPU
        flops = table_peak(name, precision)
        if flops is not None:
            return flops, f"datasheet table: {name}, {precision} dense"
        return probe_peak(device, precision, size=8192), f"measured: 8192x8192 {precision} matmul on {name}"
    return probe_peak(device, precision), f"measured: 2048x2048 {precision} matmul probe on the CPU, best of 5"


def count_flops(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` under ``FlopCounterMode``; return its result and the FLOPs it performed."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, float(counter.get_total_flops())
