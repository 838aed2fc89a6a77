"""Measuring transformers.Trainer with the run's meter, as the built-in strategies are measured.

Each epoch of ``Trainer.train`` is a ``train`` phase (from ``on_epoch_begin`` to ``on_epoch_end``,
before Trainer's own per-epoch evaluation and checkpoint, which are left out of the phase and so
cost the baseline nothing); each optimizer step is a meter step (``on_step_begin`` to
``on_step_end``). The work in a step is counted by :class:`CountingCollator` from the CPU batches,
as the built-ins count theirs: samples, real tokens, non-padding input tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class CountingCollator:
    """Wraps a collator; records (samples, real tokens, input tokens) of each batch it makes.

    Real tokens: positions with a loss (labels != -100, after the causal shift) for token labels,
    else non-padding tokens, as :func:`bench.batching.collate` counts them."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], Any]) -> None:
        self.collate = collate
        self.pending: list[tuple[int, int, int]] = []

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.collate(features)
        mask = batch["attention_mask"]
        labels = batch.get("labels")
        input_tokens = int(mask.sum())
        tokens = int((labels[:, 1:] != -100).sum()) if labels is not None and labels.dim() == 2 else input_tokens
        self.pending.append((int(mask.shape[0]), tokens, input_tokens))
        return batch

    def take(self) -> tuple[int, int, int]:
        """The work of the batches made since the last call (one optimizer step's micro-batches)."""
        samples, tokens, inputs = (sum(x) for x in zip(*self.pending)) if self.pending else (0, 0, 0)
        self.pending.clear()
        return samples, tokens, inputs


def meter_callback(meter: Any, counter: CountingCollator) -> Any:
    """A ``TrainerCallback`` that opens meter phases and steps around Trainer's epochs and steps."""
    from transformers import TrainerCallback

    class MeterCallback(TrainerCallback):
        def __init__(self) -> None:
            self.phase: Any = None
            self.step: Any = None

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.phase = meter.phase("train")
            self.phase.__enter__()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            samples, tokens, inputs = counter.take()
            self.step = meter.step(samples=samples, tokens=tokens, input_tokens=inputs)
            self.step.__enter__()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._close("step")

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._close("step")
            self._close("phase")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._close("step")
            self._close("phase")

        def _close(self, what: str) -> None:
            ctx = getattr(self, what)
            if ctx is not None:
                setattr(self, what, None)
                ctx.__exit__(None, None, None)

    return MeterCallback()
