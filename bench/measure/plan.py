"""Memory before running: the exact bytes of parameters, gradients and optimizer state, an activation
estimate, and whether that fits the device (``bench plan``; ``bench run --weights random`` checks it
first and refuses in one line when it does not fit).

How each figure is made:

* **parameters, gradients, optimizer**: exact, from the model the strategy itself builds and the
  parameters it leaves trainable (after its own layer selection, adapters and the speed techniques,
  e.g. frozen weights stored in bf16): gradients are one tensor of the parameter's dtype per
  trainable parameter; AdamW keeps ``exp_avg`` and ``exp_avg_sq`` (the parameter's dtype) and a
  float32 ``step`` per trainable tensor. The same rule as :func:`bench.measure.meter.param_counts`
  applies to a real run's optimizer, so the two agree to the byte.
* **activations**: the bytes autograd saves for backward in one micro-batch (unique storages),
  counted by running the strategy's own forward and loss on *fake tensors*
  (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes and dtypes, no memory, no compute), under
  the run's autocast, for the first batch the strategy would train on (``--seq-len`` long, or its
  ``max_length``: the worst case of dynamic padding). A real run measures the same quantity on its
  first warm-up step (``RunResult.activations``), so estimate and measurement compare like for like.
* **fits**: parameters + gradients + optimizer + activations, plus a margin for transient buffers
  (``TRANSIENT_MARGIN``), against the device's free memory (CUDA: ``torch.cuda.mem_get_info``; CPU:
  ``MemAvailable`` in ``/proc/meminfo``, or the cgroup's limit when lower).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRANSIENT_MARGIN = 0.10  # share added to the planned total for transient buffers and allocator slack


@dataclass(frozen=True)
class PlanFigures:
    """What a strategy's first training step would hold, found by running it in plan mode."""

    params_total: int
    params_trainable: int
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    batch_size: int
    seq_len: int
    cache_bytes: int = 0  # what the frozen-prefix cache holds, when the strategy uses it


class PlanComplete(Exception):  # noqa: N818 - control flow, not an error
    """Raised by the training loop in plan mode at its first step, carrying the figures."""

    def __init__(self, figures: PlanFigures) -> None:
        super().__init__("plan complete")
        self.figures = figures


@dataclass(frozen=True)
class MemoryPlan:
    """One strategy's plan on one device."""

    strategy: str
    model: str
    device: str
    precision: str
    figures: PlanFigures
    device_free_bytes: int | None
    device_what: str

    @property
    def total_bytes(self) -> int:
        f = self.figures
        return f.param_bytes + f.grad_bytes + f.optimizer_bytes + f.activation_bytes + f.cache_bytes

    @property
    def needed_bytes(self) -> int:
        return int(self.total_bytes * (1 + TRANSIENT_MARGIN))

    @property
    def fits(self) -> bool | None:
        return None if self.device_free_bytes is None else self.needed_bytes <= self.device_free_bytes


def gradient_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def adamw_state_bytes(model: Any) -> int:
    """AdamW's state once every trainable parameter has had a step: two moments in the parameter's dtype
    and a float32 step counter per tensor (fused and foreach alike)."""
    return sum(2 * p.numel() * p.element_size() + 4 for p in model.parameters() if p.requires_grad)


def figures_of(model: Any, activation_bytes: int, batch_size: int, seq_len: int) -> PlanFigures:
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    return PlanFigures(
        params_total=sum(p.numel() for p in params),
        params_trainable=sum(p.numel() for p in trainable),
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        grad_bytes=gradient_bytes(model),
        optimizer_bytes=adamw_state_bytes(model),
        activation_bytes=activation_bytes,
        batch_size=batch_size,
        seq_len=seq_len,
    )


def saved_activation_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` (a forward and loss; a backward inside it saves nothing more) and return its result and
    the bytes autograd saved for the backward pass: each storage counted once, parameters (and views of
    them, which the backward of a matmul keeps) left out, as they are counted as parameters."""
    import torch

    seen: dict[int, int] = {}

    def pack(t: Any) -> Any:
        base = t._base if t._base is not None else t
        if isinstance(base, torch.nn.Parameter):
            return t
        storage = t.untyped_storage()
        fake = getattr(t, "fake_mode", None) is not None
        key = id(storage) if fake else storage.data_ptr()
        seen[key] = max(seen.get(key, 0), t.numel() * t.element_size() if fake else storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return result, sum(seen.values())


def planned_activation_bytes(model: Any, inputs: dict[str, Any], precision: str) -> int:
    """The bytes one forward and loss of ``model`` (on the ``meta`` device) on ``inputs`` (meta tensors)
    would save for backward: run on fake CPU tensors of the same shapes and dtypes (no memory, no
    compute), with the parameters' ``requires_grad`` as they are, under CPU bf16 autocast when
    ``precision`` is bf16 (the casts autocast makes are what a bf16 run saves)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.func import functional_call

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    convert = mode.fake_tensor_converter

    def fake(t: Any) -> Any:
        return convert.from_meta_and_device(mode, t.detach().to("meta"), torch.device("cpu"))

    tensors: dict[str, Any] = {n: torch.nn.Parameter(fake(p), requires_grad=p.requires_grad)
                               for n, p in model.named_parameters()}
    tensors.update({n: fake(b) for n, b in model.named_buffers()})
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with mode:
        fake_inputs = {k: fake(v) for k, v in inputs.items()}

        def forward() -> Any:
            with autocast:
                return functional_call(model, tensors, args=(), kwargs=fake_inputs, strict=False).loss

        _, saved = saved_activation_bytes(forward)
    return saved


def device_free_memory(device: str) -> tuple[int | None, str]:
    """Bytes free for a run on ``device`` now, and what they are."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None, "no CUDA device here to compare with"
        free, total = torch.cuda.mem_get_info()
        return int(free), f"{torch.cuda.get_device_name(0)}: {free / 2**30:,.1f} GiB free of {total / 2**30:,.1f} GiB"
    available = _meminfo_available()
    limit = _cgroup_limit()
    if available is None and limit is None:
        return None, "the host's free memory cannot be read"
    if limit is not None and (available is None or limit < available):
        return limit, f"cgroup limit {limit / 2**30:,.1f} GiB"
    assert available is not None
    return available, f"MemAvailable {available / 2**30:,.1f} GiB"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limit() -> int | None:
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            used = _cgroup_usage(path.parent)
            return int(text) - used
    return None


def _cgroup_usage(folder: Path) -> int:
    for name in ("memory.current", "memory.usage_in_bytes"):
        try:
            return int((folder / name).read_text().strip())
        except (OSError, ValueError):
            continue
    return 0


def gib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**30:,.2f}"


__all__ = [
    "TRANSIENT_MARGIN",
    "MemoryPlan",
    "PlanComplete",
    "PlanFigures",
    "adamw_state_bytes",
    "device_free_memory",
    "planned_activation_bytes",
    "figures_of",
    "gib",
    "gradient_bytes",
    "saved_activation_bytes",
]
