"""The meter: wall time and peak memory per phase, and per-step timing with warm-up excluded.

Rules it enforces (see docs/measurement in README.md):

* clocks are ``time.perf_counter``; on CUDA the device is synchronised before every clock read;
* the first ``warmup_steps`` steps of each phase are tagged ``warmup``; then the profiler's window
  (``profiled``); only the rest are ``timed`` and feed throughput;
* nothing inside a step calls ``.item()``: values logged with :meth:`Meter.log` may be tensors and
  are read after the phase ends;
* memory is measured in each phase after a reset: GPU ``max_memory_allocated``/``max_memory_reserved``
  after ``reset_peak_memory_stats``; CPU peak RSS after resetting the kernel's high-water mark
  (``/proc/self/clear_refs``), so each phase reports its own peak, not the process's.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

from bench.core import progress
from bench.core.strategy import ParamCounts
from bench.measure.energy import EnergyCounter
from bench.measure.work import WorkCounts
from bench.results.schema import ActivationMeasure, PhaseMeasure, StepSample, StepStats, Throughput


@runtime_checkable
class Profiler(Protocol):
    """What ``bench_make_profiler`` returns and the meter drives.

    The meter calls :meth:`start` before the first step of its window (right after the warm-up
    steps), :meth:`step` after each step in the window, and :meth:`stop` after the last one (or when
    the phase ends first). ``window_steps`` is how many steps the window holds; those steps are
    tagged ``profiled`` and never counted in throughput.
    """

    window_steps: int

    def start(self) -> None: ...

    def step(self) -> None: ...

    def stop(self) -> None: ...


class SpeedIndex:
    """The machine's speed at a moment: a fixed reference workload timed right after each timed step,
    outside its timed region, on the run's device and threads. Two runs that ran the same steps on a
    machine whose speed changed between them see their steps and their references slow alike, so
    ``bench compare`` can divide the machine's speed out of the step times.

    The workload is one BERT-sized transformer block's forward (attention and MLP, ``dim`` wide,
    ``batch`` x ``seq`` tokens, fixed random weights and input, fp32, no autograd): the kernels a step
    runs, at the sizes a step runs them. On a shared 2-core VM, whose speed moved 10-15% between
    processes of identical code, a BERT layer of this size (about 19 ms there) tracked the steps of a
    MiniLM forward to 1.6-1.9% (standard deviation of identical pairs), where the single 192x192 matrix
    product used before tracked them to 3.8%, and smaller ones (5 ms: a quarter of the tokens, or 256
    wide) to 6-8%; this block, in 20 pairs of ``bench run --preset ci``, to 2.5% (docs/ci.md). ``name`` identifies the workload in results files: two runs are
    divided by each other's index only when their names agree."""

    name = "block-d384-16x32"

    def __init__(self, device: str, dim: int = 384, heads: int = 12, batch: int = 16, seq: int = 32) -> None:
        import torch

        self.device = device
        self.shape = (batch, seq, dim, heads)
        gen = torch.Generator().manual_seed(0)
        self._w = [(torch.randn(i, o, generator=gen) / i ** 0.5).to(device)
                   for i, o in ((dim, 3 * dim), (dim, dim), (dim, 4 * dim), (4 * dim, dim))]
        self._b = [torch.zeros(w.shape[1], device=device) for w in self._w]
        self._x = torch.randn(batch, seq, dim, generator=gen).to(device)
        self._sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self.probe()  # warm up: the first call allocates and picks kernels
        self.probe()

    def _block(self) -> Any:
        import torch
        import torch.nn.functional as F

        b, t, d, h = self.shape
        x = self._x
        w, bias = self._w, self._b
        q, k, v = torch.addmm(bias[0], x.view(b * t, d), w[0]).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b * t, d)
        y = F.layer_norm(x.view(b * t, d) + torch.addmm(bias[1], attn, w[1]), (d,))
        return F.layer_norm(y + torch.addmm(bias[3], F.gelu(torch.addmm(bias[2], y, w[2])), w[3]), (d,))

    def probe(self) -> float:
        """Seconds of one forward of the reference block."""
        import torch

        with torch.no_grad(), torch.autocast(self.device if self.device in ("cpu", "cuda") else "cpu", enabled=False):
            self._sync()
            start = time.perf_counter()
            self._block()
            self._sync()
            return time.perf_counter() - start


class NullProfiler:
    """The do-nothing profiler: same calls, zero steps, zero cost."""

    window_steps = 0

    def start(self) -> None:
        pass

    def step(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Meter:
    """Measures one run. Strategies use :meth:`phase` and :meth:`step`; the host reads the results."""

    def __init__(self, device: str = "cpu", warmup_steps: int = 2, profiler: Profiler | None = None,
                 energy: EnergyCounter | None = None) -> None:
        self.device = device
        self.warmup_steps = max(0, int(warmup_steps))
        self.profiler: Profiler = profiler if profiler is not None else NullProfiler()
        self.energy = energy
        self.phases: list[PhaseMeasure] = []
        self.steps: list[StepSample] = []
        self._scalars: list[tuple[str, int, Any]] = []
        self._phase: str | None = None
        self._phase_steps: dict[str, int] = {}
        self._profiler_phase: str | None = None
        self._profiler_state = "idle"  # idle -> running -> done
        self._expected: dict[str, int] = {}
        self.flops_per_token: dict[str, float] = {}
        self.activations: dict[str, ActivationMeasure] = {}
        self.work: dict[str, WorkCounts] = {}
        self.speed_index: SpeedIndex | None = None
        self._kind_now = ""
        self.rss_resettable = _reset_peak_rss()
        self.failed_phase: str | None = None  # the phase an exception left (an out-of-memory row names it)
        self.on_phase: Callable[[str | None], None] | None = None  # told each phase's start (name) and end (None)

    # -- phases --------------------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time and measure the peak memory of one phase: ``with meter.phase("train"): ...``.

        A phase may be entered several times (train, eval, train, ...): its wall times add up, its
        peaks are the maximum over the entries, and its step count continues.
        """
        if self._phase is not None:
            raise RuntimeError(f"phase {name!r} started inside phase {self._phase!r}; phases do not nest")
        self._phase = name
        self._phase_steps.setdefault(name, 0)
        if self.on_phase is not None:
            self.on_phase(name)
        cuda = self._cuda()
        if cuda is not None:
            cuda.synchronize()
            cuda.reset_peak_memory_stats()
        self.rss_resettable = _reset_peak_rss()
        energy_start = self._read_energy()
        progress.activity().phase_started(name)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.failed_phase = name
            raise
        finally:
            if cuda is not None and self.failed_phase != name:
                cuda.synchronize()  # not after a failure: a CUDA error would raise again here
            wall = time.perf_counter() - start
            energy_j = self._energy_since(energy_start)
            if self._profiler_state == "running" and self._profiler_phase == name:
                self.profiler.stop()
                self._profiler_state = "done"
            self._record(PhaseMeasure(
                name=name,
                wall_s=wall,
                cpu_peak_rss_bytes=_peak_rss_bytes(),
                gpu_peak_allocated_bytes=int(cuda.max_memory_allocated()) if cuda is not None else None,
                gpu_peak_reserved_bytes=int(cuda.max_memory_reserved()) if cuda is not None else None,
                energy_j=energy_j,
            ))
            self._phase = None
            if self.on_phase is not None:
                self.on_phase(None)
            progress.activity().phase_ended()

    def _record(self, new: PhaseMeasure) -> None:
        for i, old in enumerate(self.phases):
            if old.name == new.name:
                self.phases[i] = PhaseMeasure(new.name, old.wall_s + new.wall_s,
                                              _max(old.cpu_peak_rss_bytes, new.cpu_peak_rss_bytes),
                                              _max(old.gpu_peak_allocated_bytes, new.gpu_peak_allocated_bytes),
                                              _max(old.gpu_peak_reserved_bytes, new.gpu_peak_reserved_bytes),
                                              _sum(old.energy_j, new.energy_j))
                return
        self.phases.append(new)

    # -- steps ---------------------------------------------------------------------------------------

    @contextmanager
    def step(self, samples: int, tokens: int = 0, input_tokens: int | None = None) -> Iterator[None]:
        """Time one step (an optimizer step, or one inference batch) of the current phase.

        ``samples`` and ``tokens`` are the work done in it; count real tokens (no padding, no masked
        positions) from the CPU copy of the batch so that counting costs no device sync.
        ``input_tokens`` are the non-padding tokens the model processed (default: ``tokens``); they
        turn FLOPs per token into MFU.
        """
        if self._phase is None:
            raise RuntimeError("meter.step() used outside a meter.phase(...)")
        index = self._phase_steps[self._phase]
        self._phase_steps[self._phase] += 1
        kind = self._kind_now = self._kind(index)
        if kind == "profiled" and self._profiler_state == "idle":
            self._profiler_phase = self._phase
            self._profiler_state = "running"
            self.profiler.start()
        cuda = self._cuda()
        if cuda is not None:
            cuda.synchronize()
        cpu_start = time.process_time()
        start = time.perf_counter()
        yield
        if cuda is not None:
            cuda.synchronize()
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        self._kind_now = ""
        reference = self.speed_index.probe() if self.speed_index is not None and kind == "timed" else None
        self.steps.append(StepSample(kind, seconds, int(samples), int(tokens), self._phase,
                                     int(tokens if input_tokens is None else input_tokens), reference, cpu_seconds))
        progress.activity().step_done(samples)
        if kind == "profiled":
            self.profiler.step()
            if index + 1 == self.warmup_steps + self.profiler.window_steps:
                self.profiler.stop()
                self._profiler_state = "done"

    def count_flops(self, fn: Any, padded_tokens: int, samples: int = 0) -> Any:
        """Run ``fn`` (a forward and backward, or a forward) and, once per phase and only inside a
        warm-up step (never a timed one), count its FLOPs per padded token for MFU and the bytes
        autograd saved for its backward (the activations of one micro-batch of ``samples`` examples)."""
        if self._kind_now != "warmup" or self._phase in self.flops_per_token or padded_tokens <= 0:
            return fn()
        from bench.measure.flops import count_flops
        from bench.measure.plan import saved_activation_bytes
        from bench.measure.work import WorkCounts, counting_mode

        counter = counting_mode()
        with counter:
            (result, flops), saved = saved_activation_bytes(lambda: count_flops(fn))
        phase = str(self._phase)
        self.flops_per_token[phase] = flops / padded_tokens
        self.work[phase] = WorkCounts(int(samples), int(padded_tokens), float(flops), int(counter.allocated),
                                      dict(sorted(counter.ops.items())))
        if saved > 0 and samples > 0:
            self.activations[phase] = ActivationMeasure(saved, samples, padded_tokens // samples)
        return result

    def expect_steps(self, phase: str, steps: int) -> None:
        """Announce how many steps ``phase`` will take: when warm-up plus the profiler's window would
        leave no step to time, that phase is not profiled (timed steps come first)."""
        self._expected[phase] = int(steps)
        progress.activity().expect(phase, int(steps))

    def _kind(self, index: int) -> str:
        if index < self.warmup_steps:
            return "warmup"
        expected = self._expected.get(str(self._phase))
        if expected is not None and self._profiler_state == "idle" and \
                expected <= self.warmup_steps + self.profiler.window_steps:
            return "timed"  # too short for a profiled window apart from the timed steps
        profiling_here = self._profiler_state == "idle" or self._profiler_phase == self._phase
        if profiling_here and self._profiler_state != "done" and index < self.warmup_steps + self.profiler.window_steps:
            return "profiled"
        return "timed"

    # -- scalars -------------------------------------------------------------------------------------

    def log(self, tag: str, value: Any, step: int) -> None:
        """Record a scalar (a float or a 0-d tensor, read later, never inside the step)."""
        self._scalars.append((tag, int(step), value.detach() if hasattr(value, "detach") else value))

    def scalars(self) -> list[tuple[str, int, float]]:
        """All logged scalars as floats, plus per-step throughput derived from the step samples."""
        out = [(tag, step, float(value)) for tag, step, value in self._scalars]
        for phase in {s.phase for s in self.steps}:
            for i, s in enumerate(x for x in self.steps if x.phase == phase):
                if s.seconds > 0:
                    out.append((f"{phase}/samples_per_s", i, s.samples / s.seconds))
                    if s.tokens:
                        out.append((f"{phase}/real_tokens_per_s", i, s.tokens / s.seconds))
        return out

    # -- results -------------------------------------------------------------------------------------

    def throughput(self) -> dict[str, Throughput]:
        """Throughput per phase that had steps, from its timed steps only."""
        return throughput_of(self.phases, self.steps)

    def _read_energy(self) -> Any:
        if self.energy is None:
            return None
        try:
            return self.energy.read()
        except OSError:
            return None

    def _energy_since(self, start: Any) -> float | None:
        end = self._read_energy()
        if start is None or end is None or self.energy is None:
            return None
        return self.energy.delta_j(start, end)

    def _cuda(self) -> Any:
        if self.device != "cuda":
            return None
        import torch

        return torch.cuda


def throughput_of(phases: Sequence[PhaseMeasure], steps: Sequence[StepSample]) -> dict[str, Throughput]:
    """Throughput per phase that had steps, from its timed steps only (a run's, or the ranks' combined)."""
    out: dict[str, Throughput] = {}
    for measure in phases:
        mine = [s for s in steps if s.phase == measure.name]
        if not mine:
            continue
        timed = [s for s in mine if s.kind == "timed"]
        out[measure.name] = Throughput(
            samples_per_s=timed_rate(timed, "samples"),
            real_tokens_per_s=timed_rate(timed, "tokens") if any(s.tokens for s in timed) else None,
            step=StepStats.from_values([s.seconds for s in timed]),
            timed_steps=len(timed),
            warmup_steps=sum(1 for s in mine if s.kind == "warmup"),
            profiled_steps=sum(1 for s in mine if s.kind == "profiled"),
            phase_samples_per_s=phase_rate(mine, measure.wall_s),
        )
    return out


def achieved_flops(steps: Sequence[StepSample], phase: str, flops_per_token: float) -> float | None:
    """The FLOP/s ``phase``'s timed steps achieved (for several ranks: their steps combined), by
    :func:`bench.measure.peak.achieved_flops`; ``None`` without timed time. MFU is this over the peak."""
    from bench.measure.peak import achieved_flops as formula

    timed = [s for s in steps if s.phase == phase and s.kind == "timed"]
    seconds = sum(s.seconds for s in timed)
    if seconds <= 0:
        return None
    return formula(flops_per_token, sum(s.input_tokens for s in timed), seconds)


# -------------------------------------------------------------------------------------------------
# The published throughput formulas, pure (tests/test_formulas.py checks each by hand).
# -------------------------------------------------------------------------------------------------


def timed_rate(steps: Sequence[StepSample], work: str = "samples") -> float | None:
    """Work per second over the timed steps among ``steps``: the sum of their ``work`` (``samples``,
    ``tokens``: real tokens, padding excluded, or ``input_tokens``) over the sum of their seconds (not a
    mean of per-step rates); warm-up and profiled steps are left out. None when no timed step took time."""
    timed = [s for s in steps if s.kind == "timed"]
    seconds = sum(s.seconds for s in timed)
    return sum(getattr(s, work) for s in timed) / seconds if seconds > 0 else None


def phase_rate(steps: Sequence[StepSample], wall_s: float, work: str = "samples") -> float | None:
    """Work per second over a whole phase: the ``work`` of every step in it (warm-up and profiled
    included) over the phase's wall time (everything in the phase included)."""
    return sum(getattr(s, work) for s in steps) / wall_s if wall_s > 0 else None


# -------------------------------------------------------------------------------------------------
# Memory helpers.
# -------------------------------------------------------------------------------------------------


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    """Peak RSS since the last reset (VmHWM), else the process's lifetime peak (getrusage)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (OSError, ValueError):
        return None


def param_counts(model: Any, optimizer: Any = None) -> ParamCounts:
    """Exact parameter counts and the bytes held by parameters, gradients and optimizer state.

    Gradient bytes count trainable parameters (a gradient of the parameter's dtype each); optimizer
    bytes are the tensors actually held in ``optimizer.state`` (call after at least one step). Under FSDP
    (sharded ``DTensor`` parameters) the counts are the whole model's and the bytes this rank's shards.
    """
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    param_bytes = sum(_local(p).numel() * p.element_size() for p in params)
    grad_bytes = sum(_local(p).numel() * p.element_size() for p in trainable)
    opt_bytes = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            for value in state.values():
                if hasattr(value, "numel") and hasattr(value, "element_size"):
                    opt_bytes += _local(value).numel() * value.element_size()
    return ParamCounts(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in trainable),
        param_bytes=param_bytes,
        grad_bytes=grad_bytes,
        optimizer_state_bytes=opt_bytes,
    )


def _local(tensor: Any) -> Any:
    """A DTensor's local shard (what this rank holds), else the tensor."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
