"""The cheaper dropout: same distribution and scaling as F.dropout, identity when off; installed into a
model without changing its parameters or its eval-mode numbers."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from test_classification import tiny
from test_first_token import sensitive

from bench.speed import fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drops_with_probability_p_and_scales_the_rest(p):
    torch.manual_seed(0)
    x = torch.rand(200_000) + 1.0  # no zeros of its own
    y = fast_dropout.drop(x, p)
    dropped = (y == 0).double().mean().item()
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(dropped - p) < 5 * sigma
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # independent draws: a second call drops a different set
    assert not torch.equal(fast_dropout.drop(x, p) == 0, y == 0)


def test_identity_when_off_and_gradient_is_the_mask():
    x = torch.randn(4, 5, requires_grad=True)
    assert fast_dropout.drop(x, 0.1, training=False) is x and fast_dropout.drop(x, 0.0) is x
    y = fast_dropout.drop(x, 0.3)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.7)
    assert torch.equal(fast_dropout.drop(torch.ones(3), 1.0), torch.zeros(3))


def test_install_swaps_every_dropout_and_keeps_numbers_and_names():
    torch.manual_seed(0)
    cfg = tf.BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
                        vocab_size=40, max_position_embeddings=32, attn_implementation="eager")
    model = sensitive(tf.BertForSequenceClassification(cfg)).eval()
    ids = torch.randint(3, 40, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    names = [n for n, _ in model.named_parameters()]
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
    info = fast_dropout.install(model)
    assert info == {"modules": 8, "attention": True}  # embeddings, 3 per block, classifier; and attention
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert all(not m.training for m in model.modules())  # the swap kept eval mode
    assert [n for n, _ in model.named_parameters()] == names
    assert model.config._attn_implementation == fast_dropout.ATTENTION_NAME
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-6)
    # in training the registered attention drops attention probabilities with the config's p
    seen = []
    original = fast_dropout.drop

    def spy(x, p, training=True):
        seen.append((tuple(x.shape), p, training))
        return original(x, p, training)

    fast_dropout.drop = spy
    try:
        model.train()
        model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 0])).loss.backward()
    finally:
        fast_dropout.drop = original
    assert ((3, 2, 9, 9), cfg.attention_probs_dropout_prob, True) in seen  # attention probabilities
    assert len(seen) == 8


def test_other_models_get_the_module_swap_only():
    model = tiny("distilbert")
    info = fast_dropout.install(model)
    assert info["modules"] > 0 and info["attention"] is False
