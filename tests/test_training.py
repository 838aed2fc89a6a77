"""The training loop's parts: gradient clipping, the optimizer choice, the schedule, batch orders."""

from __future__ import annotations

import pytest
import torch

from bench.data.batching import random_order
from bench.training.loop import clip_gradients, linear_schedule, make_optimizer


@pytest.mark.parametrize("scale", [1e-3, 1e2])
def test_clipping_is_bit_identical_to_clip_grad_norm(scale):
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(3)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for p, q in zip(ours, ref):
        p.grad = torch.randn_like(p) * scale
        q.grad = p.grad.clone()
    torch.nn.utils.clip_grad_norm_(ref, 1.0)
    clip_gradients(ours, 1.0, "cpu")
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(ours, ref))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ours]))
    assert norm <= 1.0 + 1e-5


def test_optimizer_is_fused_unless_asked_not_to():
    params = [torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4))]
    fused = make_optimizer(params, 1e-3, 0.01, "cpu")
    assert fused.defaults.get("fused") is True
    assert [g["weight_decay"] for g in fused.param_groups] == [0.01, 0.0]  # no decay on biases and norms
    foreach = make_optimizer(params, 1e-3, 0.01, "cpu", fused=False)
    assert not foreach.defaults.get("fused") and foreach.defaults.get("foreach") is True


def test_schedule_warms_up_then_decays_to_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_random_order_covers_every_example_once_per_epoch():
    order = random_order(10, 3, seed=1)
    assert sorted(i for batch in order for i in batch) == list(range(10))
    assert [len(b) for b in order] == [3, 3, 3, 1] and order != random_order(10, 3, seed=2)
