"""The frozen-prefix cache: the suffix computes the full model's numbers, and training with it gives the
same result as training without it."""

from __future__ import annotations

import pytest
import torch
from conftest import read_results
from test_classification import tiny
from test_first_token import sensitive

from bench.data.batching import Encoded, batches, sorted_order
from bench.host.cli import main
from bench.models import layers
from bench.speed import prefix_cache


class _Run:
    device = "cpu"

    @staticmethod
    def autocast():
        import contextlib

        return contextlib.nullcontext()


def _examples(n: int = 10, seed: int = 0) -> list[Encoded]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 12, (1,), generator=g))
        ids = [1, *torch.randint(5, 40, (length - 1,), generator=g).tolist()]
        out.append(Encoded(tuple(ids), int(torch.randint(0, 2, (1,), generator=g))))
    return out


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
@pytest.mark.parametrize("spec", ["head", "last:1", "blocks:1,2"])
def test_suffix_on_cached_prefix_computes_the_full_models_logits(kind, spec):
    model = sensitive(tiny(kind))
    layers.apply(model, layers.resolve(spec, model, always_train_new_head=True))
    model.eval()
    plan, why = prefix_cache.plan(model)
    assert plan is not None, why
    assert plan.frozen_blocks == {"head": 3, "last:1": 2, "blocks:1,2": 1}[spec]
    examples = _examples()
    order = sorted_order([len(e) for e in examples], 4)
    hidden = prefix_cache.compute(_Run(), model, plan, examples, 3, 0, "prefix")  # other batches than below
    assert [h.shape[0] for h in hidden] == [len(e) for e in examples]
    total = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        full = [model(**b.to("cpu")).logits for b in batches(examples, order, 0)]
        with prefix_cache.suffix_model(model, plan) as suffix:
            cached = [suffix(**b.to("cpu")).logits for b in prefix_cache.cached_batches(examples, hidden, order, 0)]
            assert sum(p.numel() for p in suffix.parameters()) < total  # the prefix is out of the model
    for a, b in zip(full, cached):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert torch.cat(full).std() > 0.01  # logits that move with their input
    assert sum(p.numel() for p in model.parameters()) == total  # restored on exit
    assert len(layers.model_layout(model).blocks) == 3
    assert type(model.base_model.embeddings).__name__ != "CachedEmbeddings"


@pytest.mark.parametrize(("kind", "spec", "reason"), [
    ("bert", "all", "the embeddings train"),
    ("bert", "blocks:0", "the first block trains"),
    ("llama", "head", "does not call one embeddings module"),
    ("gpt2", "last:1", "does not call one embeddings module"),
])
def test_no_cache_where_the_prefix_trains_or_the_layout_is_not_supported(kind, spec, reason):
    model = tiny(kind)
    layers.apply(model, layers.resolve(spec, model, always_train_new_head=True))
    plan, why = prefix_cache.plan(model)
    assert plan is None and reason in why


def test_training_with_the_cache_matches_training_without(tiny_bert, sentiment_csv, tmp_path):
    rows = {}
    for cache in ("true", "false"):
        out = tmp_path / cache
        assert main(["run", "-s", "last-layers", "-o", "last-layers.n_last=1", "-o", f"last-layers.prefix_cache={cache}",
                     "--model", str(tiny_bert), "--dataset", str(sentiment_csv), "--epochs", "2",
                     "--train-samples", "0", "--batch-size", "8", "--precision", "fp32", "--no-isolate",
                     "--out", str(out), "-p", "no:profiler", "-q"]) == 0
        rows[cache] = read_results(out)["results"][0]
    used, unused = rows["true"], rows["false"]
    assert used["techniques"]["prefix_cache"] == {
        "on": True, "detail": "embeddings + blocks 0-0 cached; 1 block(s) and the head train"}
    assert used["extra"]["prefix_cache_bytes"] > 0
    assert unused["techniques"]["prefix_cache"] == {"on": False, "detail": "prefix_cache=false"}
    assert unused["extra"]["prefix_cache_bytes"] == 0
    assert used["trained_parameters"] == unused["trained_parameters"]
    assert used["metrics"]["test_loss"] == pytest.approx(unused["metrics"]["test_loss"], rel=1e-4)
    assert used["metrics"]["best_val_accuracy"] == unused["metrics"]["best_val_accuracy"]
    losses = [[h["val_loss"] for h in r["extra"]["history"]] for r in (used, unused)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_no_cache_when_every_example_is_seen_once(tiny_bert, sentiment_csv, tmp_path):
    out = tmp_path / "one-epoch"
    assert main(["run", "-s", "last-layers", "--model", str(tiny_bert), "--dataset", str(sentiment_csv),
                 "--epochs", "1", "--train-samples", "0", "--batch-size", "8", "--no-isolate", "--out", str(out),
                 "-p", "no:profiler", "-q"]) == 0
    cache = read_results(out)["results"][0]["techniques"]["prefix_cache"]
    assert cache == {"on": False, "detail": "one epoch: no prefix output is used twice"}


def test_epochs_to_run_counts_the_max_steps_limit():
    from bench.training.classify import FinetuneConfig, epochs_to_run

    assert epochs_to_run(FinetuneConfig(epochs=3), 10) == 3
    assert epochs_to_run(FinetuneConfig(epochs=3, max_steps=10), 10) == 1
    assert epochs_to_run(FinetuneConfig(epochs=3, max_steps=11), 10) == 2
    assert epochs_to_run(FinetuneConfig(epochs=3, max_steps=11, grad_accum=2), 10) == 3
