"""Measuring transformers.Trainer with the run's meter, as the built-in strategies are measured.

Each epoch of ``Trainer.train`` is a ``train`` phase (from ``on_epoch_begin`` to ``on_epoch_end``,
before Trainer's own per-epoch evaluation and checkpoint, which are left out of the phase and so
cost the baseline nothing); each optimizer step is a meter step (``on_step_begin`` to
``on_step_end``). The work in a step is counted from the very batches Trainer hands to that step
(:meth:`get_batch_samples`, which Trainer calls just before ``on_step_begin``; its data loader reads
one batch ahead, so counting in the collator would be off by one): samples, real tokens (positions
with a loss for token labels, else non-padding tokens, as :mod:`bench.data.batching` counts them) and
non-padding input tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def count_work(batches: Iterable[dict[str, Any]]) -> tuple[int, int, int]:
    """(samples, real tokens, input tokens) of one optimizer step's micro-batches."""
    samples = tokens = inputs = 0
    for batch in batches:
        mask = batch["attention_mask"]
        labels = batch.get("labels")
        n_inputs = int(mask.sum())
        samples += int(mask.shape[0])
        inputs += n_inputs
        tokens += int((labels[:, 1:] != -100).sum()) if labels is not None and labels.dim() == 2 else n_inputs
    return samples, tokens, inputs


def metered_trainer(meter: Any, **kwargs: Any) -> Any:
    """A ``transformers.Trainer`` (built with ``kwargs``) whose epochs and steps the meter measures."""
    from transformers import Trainer, TrainerCallback

    class MeteredTrainer(Trainer):
        step_work: tuple[int, int, int] = (0, 0, 0)

        def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
            batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
            self.step_work = count_work(batch_samples)
            return batch_samples, num_items

    trainer = MeteredTrainer(**kwargs)

    class MeterCallback(TrainerCallback):
        def __init__(self) -> None:
            self.phase: Any = None
            self.step: Any = None

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.phase = meter.phase("train")
            self.phase.__enter__()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            samples, tokens, inputs = trainer.step_work
            self.step = meter.step(samples=samples, tokens=tokens, input_tokens=inputs)
            self.step.__enter__()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._close("step")

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._close("step")
            self._close("phase")

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._close("step")
            self._close("phase")

        def _close(self, what: str) -> None:
            ctx = getattr(self, what)
            if ctx is not None:
                setattr(self, what, None)
                ctx.__exit__(None, None, None)

    trainer.add_callback(MeterCallback())
    return trainer
