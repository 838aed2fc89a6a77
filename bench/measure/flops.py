"""FLOPs and the device's peak, for model FLOPs utilisation (MFU).

* FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one real
  warm-up step (forward and backward), divided by the padded tokens it processed, gives FLOPs per
  token; MFU = FLOPs per token x real tokens/s of the timed steps / peak. Padding costs compute but
  counts as no useful work, so it lowers MFU, as it should.
* The peak comes from a table keyed by GPU name and dtype (vendor datasheet figures, dense, no
  sparsity) or, on CPUs and unknown GPUs, from a measured matmul probe, settled once per run by the
  host (:mod:`bench.measure.peak`). The result records which (``peak_flops_source``). No constant is
  assumed for a device that is not in the table.
"""

from __future__ import annotations

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


def attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *_: Any, **__: Any) -> int:
    """FLOPs of one fused attention forward: ``QK^T`` and ``PV`` over every query head.

    Grouped-query attention (fewer key/value heads than query heads, as Llama and SmolLM2 use) does the
    same products as full multi-head attention: each query head meets its group's key/value head.
    torch's own formula before 2.12 asserted equal head counts and so failed every GQA model on CUDA.
    """
    b, heads, s_q, d_qk = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return 2 * b * heads * s_q * s_k * d_qk + 2 * b * heads * s_q * s_k * d_v


def attention_backward_flops(grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any,
                             *_: Any, **__: Any) -> int:
    """FLOPs of one fused attention backward: the scores recomputed, then the gradients of P, V, Q and K."""
    b, heads, s_q, d_qk = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    # five products of s_q x s_k size: QK^T recomputed, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q
    return 2 * b * heads * s_q * s_k * (3 * d_qk + 2 * d_v)


def _attention_mapping() -> dict[Any, Any]:
    import torch

    aten = torch.ops.aten
    forward = ("_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
               "_scaled_dot_product_cudnn_attention")
    mapping: dict[Any, Any] = {}
    for name in forward:
        for op, formula in ((name, attention_flops), (name + "_backward", attention_backward_flops)):
            if hasattr(aten, op):
                mapping[getattr(aten, op)] = formula
    return mapping


def count_flops(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` under ``FlopCounterMode``; return its result and the FLOPs it performed.

    The fused attention kernels are counted with :func:`attention_flops`, which knows grouped-query
    attention on every torch version this project supports.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_attention_mapping()) as counter:
        result = fn()
    return result, float(counter.get_total_flops())
