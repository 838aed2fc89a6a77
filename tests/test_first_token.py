"""The first-token last block: the head's input is the full model's; other models are left alone."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from conftest import read_results
from test_classification import tiny

from bench.host.cli import main
from bench.models import layers
from bench.speed import first_token


def sensitive(model):
    """Random init leaves the head's logits near constant (std 0.02 weights): give the head unit-scale
    weights so that any change below it shows in the logits."""
    torch.manual_seed(1)
    for name in layers.model_layout(model).head:
        model.get_parameter(name).data.normal_(0.0, 1.0)
    return model


def _model(kind: str, attn: str):
    torch.manual_seed(0)
    if kind == "bert":
        cfg = tf.BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
                            vocab_size=40, max_position_embeddings=32, attn_implementation=attn)
        return sensitive(tf.BertForSequenceClassification(cfg))
    cfg = tf.RobertaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
                           vocab_size=40, max_position_embeddings=40, attn_implementation=attn)
    return sensitive(tf.RobertaForSequenceClassification(cfg))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_equal_the_full_models_with_padding(kind, attn):
    model = _model(kind, attn).eval()
    ids = torch.randint(3, 40, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padded rows
    mask[2, 2:] = 0
    ids[:, 0] = 1
    block, why = first_token.plan(model)
    assert block is not None, why
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        with first_token.first_token_last_block(block):
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            assert out.hidden_states[-1].shape[1] == 1  # the last block computed one position
        reference = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        again = model(input_ids=ids, attention_mask=mask).logits  # restored
    torch.testing.assert_close(out.hidden_states[-1][:, 0], reference[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits, full, rtol=1e-5, atol=1e-5)
    assert full.std() > 0.01  # logits that move with their input
    torch.testing.assert_close(again, full)
    assert "forward" not in vars(block)


def test_gradients_reach_the_last_block_and_below():
    model = _model("bert", "eager").train()
    model.config.hidden_dropout_prob = 0.0
    block, _ = first_token.plan(model)
    ids = torch.randint(3, 40, (4, 7))
    with first_token.first_token_last_block(block):
        model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    for name in ("bert.encoder.layer.1.attention.self.query.weight", "bert.encoder.layer.1.output.dense.weight",
                 "bert.encoder.layer.0.attention.self.key.weight", "bert.embeddings.word_embeddings.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


@pytest.mark.parametrize(("kind", "reason"), [("distilbert", "not known to read the first token"),
                                                ("llama", "not known to read the first token")])
def test_other_heads_are_left_alone(kind, reason):
    block, why = first_token.plan(tiny(kind))
    assert block is None and reason in why


def test_recorded_in_the_result_and_switchable(tiny_bert, sentiment_csv, tmp_path):
    rows = {}
    for value in ("true", "false"):
        out = tmp_path / value
        assert main(["run", "-s", "all-layers", "-o", f"all-layers.first_token={value}", "--model", str(tiny_bert),
                     "--dataset", str(sentiment_csv), "--epochs", "1", "--train-samples", "0", "--batch-size", "8",
                     "--precision", "fp32", "--no-isolate", "--out", str(out), "-p", "no:profiler", "-q"]) == 0
        rows[value] = read_results(out)["results"][0]
    assert rows["true"]["techniques"]["first_token"] == {"on": True, "detail": "last block computes position 0 only"}
    assert rows["false"]["techniques"]["first_token"] == {"on": False, "detail": "first_token=false"}
    # fewer FLOPs counted per token with the last block cut to one position
    assert rows["true"]["flops_per_token"] < rows["false"]["flops_per_token"]


def test_with_the_prefix_cache_for_the_head_alone():
    model = _model("bert", "eager").eval()
    layers.apply(model, layers.resolve("head", model, always_train_new_head=True))
    from bench.data.batching import Encoded, batches
    from bench.speed import prefix_cache

    examples = [Encoded((1, 5, 6, 7), 0), Encoded((1, 8, 9), 1), Encoded((1, 4, 4, 4, 4, 9), 0)]
    block, _ = first_token.plan(model)
    with first_token.first_token_last_block(block):
        plan, _ = prefix_cache.plan(model)
        hidden = prefix_cache.compute(type("R", (), {"device": "cpu", "autocast": staticmethod(
            lambda: torch.autocast("cpu", enabled=False))})(), model, plan, examples, 2, 0, "prefix")
        assert all(h.shape[0] == 1 for h in hidden)  # only the first position was kept
        order = [[0, 1, 2]]
        with torch.no_grad(), prefix_cache.suffix_model(model, plan) as suffix:
            (b,) = list(prefix_cache.cached_batches(examples, hidden, order, 0))
            cached = suffix(**b.to("cpu")).logits
    with torch.no_grad():
        (b,) = list(batches(examples, order, 0))
        full = model(**b.to("cpu")).logits
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
