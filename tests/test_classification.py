"""Layer selection on real model layouts, real freezing, and the classification strategies end to end
on a tiny random BERT."""

from __future__ import annotations

import pytest
import torch
from conftest import read_results

from bench.core.errors import UsageError
from bench.host.cli import main
from bench.models import layers


def tiny(kind: str):
    import transformers as tf

    torch.manual_seed(0)
    common = {"vocab_size": 40, "max_position_embeddings": 32}
    if kind == "bert":
        cfg = tf.BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=20, **common)
        return tf.BertForSequenceClassification(cfg)
    if kind == "distilbert":
        cfg = tf.DistilBertConfig(dim=16, n_layers=3, n_heads=2, hidden_dim=20, **common)
        return tf.DistilBertForSequenceClassification(cfg)
    if kind == "roberta":
        cfg = tf.RobertaConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=20,
                               vocab_size=40, max_position_embeddings=40)
        return tf.RobertaForSequenceClassification(cfg)
    if kind == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=16, n_layer=3, n_head=2, vocab_size=40, n_positions=32))
    if kind == "llama":
        cfg = tf.LlamaConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
                             intermediate_size=20, vocab_size=40, max_position_embeddings=32)
        return tf.LlamaForCausalLM(cfg)
    raise ValueError(kind)


HEADS = {
    "bert": {"bert.pooler.dense", "classifier"},
    "distilbert": {"pre_classifier", "classifier"},
    "roberta": {"classifier.dense", "classifier.out_proj"},
}
BLOCKS = {"bert": "bert.encoder.layer", "distilbert": "distilbert.transformer.layer",
          "roberta": "roberta.encoder.layer", "gpt2": "transformer.h", "llama": "model.layers"}


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_head_is_pooler_or_pre_classifier_plus_classifier(kind):
    model = tiny(kind)
    sel = layers.resolve("head", model, always_train_new_head=True)
    assert set(sel.modules) == HEADS[kind]


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta", "gpt2", "llama"])
def test_last_and_blocks_select_real_blocks(kind):
    model = tiny(kind)
    prefix = BLOCKS[kind]
    sel = layers.resolve("last:2", model, always_train_new_head=False)
    assert {m for m in sel.modules if m.startswith(prefix)} == {f"{prefix}.1", f"{prefix}.2"}
    sel = layers.resolve("blocks:0,-1", model, always_train_new_head=False)
    assert set(sel.modules) == {f"{prefix}.0", f"{prefix}.2"}
    emb = layers.resolve("embeddings", model, always_train_new_head=False)
    assert emb.parameters and all("emb" in p or "wte" in p or "wpe" in p for p in emb.parameters)
    everything = layers.resolve("all", model, always_train_new_head=False)
    assert len(everything.parameters) == len(list(model.named_parameters()))


@pytest.mark.parametrize(
    ("spec", "message"),
    [("last:9", "the model has 3"), ("blocks:7", "block 7 does not exist"), ("lats:2", "unknown term 'lats:2'; did you mean 'last'?"),
     ("blocks:x", "needs an integer"), ("", "empty selection")],
)
def test_bad_selections_name_the_term(spec, message):
    with pytest.raises(UsageError, match=message):
        layers.resolve(spec, tiny("bert"), always_train_new_head=True)


def test_freezing_really_freezes(tiny_bert, sentiment_csv, tmp_path):
    """Frozen parameters are bit-identical after training; trainable ones changed."""

    out = tmp_path / "out"
    assert main(["run", "-s", "all-layers", "--train-layers", "blocks:1", "--model", str(tiny_bert),
                 "--dataset", str(sentiment_csv), "--epochs", "1", "--train-samples", "0", "--batch-size", "8",
                 "--lr", "1e-2", "--no-isolate", "--out", str(out), "-p", "no:profiler"]) == 0
    trained = set(read_results(out)["results"][0]["trained_parameters"])
    assert trained and all(p.startswith(("bert.encoder.layer.1.", "classifier.")) for p in trained)

    # Re-run the same training in-process and compare parameters before/after.
    from bench.core.config import BenchConfig
    from bench.core.context import RunContext
    from bench.measure.meter import Meter
    from bench.training import classify
    from strategies.all_layers import AllLayers, AllLayersConfig

    before: dict[str, torch.Tensor] = {}
    after: dict[str, torch.Tensor] = {}
    original = classify.load_classifier

    def capture(*args, **kwargs):
        model = original(*args, **kwargs)
        before.update({n: p.detach().clone() for n, p in model.named_parameters()})
        capture.model = model
        return model

    classify.load_classifier = capture
    try:
        cfg = AllLayersConfig(train_layers="blocks:1", epochs=1, train_samples=0, batch_size=8, lr=1e-2)
        bench_cfg = BenchConfig(model=str(tiny_bert), dataset=str(sentiment_csv), out_dir=tmp_path / "o2",
                                precision="fp32")
        AllLayers().run(RunContext(AllLayers(), cfg, bench_cfg, Meter(), tmp_path / "o2", tmp_path / "p"))
    finally:
        classify.load_classifier = original
    after = {n: p.detach() for n, p in capture.model.named_parameters()}
    for name, value in after.items():
        if name in trained:
            assert not torch.equal(value, before[name]), f"{name} should have trained"
        else:
            assert torch.equal(value, before[name]), f"{name} is frozen but changed"


def test_classification_strategies_end_to_end(tiny_bert, sentiment_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))  # no embeddings cached by earlier runs
    out = tmp_path / "out"
    code = main(["run", "--model", str(tiny_bert), "--dataset", str(sentiment_csv), "--epochs", "3",
                 "--train-samples", "0", "--batch-size", "8", "--lr", "5e-3", "-o", "last-layers.lr=1e-2",
                 "--no-isolate", "--out", str(out), "-p", "no:profiler"])
    assert code == 0, capsys.readouterr().err
    rows = {r["strategy"]: r for r in read_results(out)["results"]}
    assert set(rows) == {"all-layers", "last-layers", "feature-extraction"}
    for r in rows.values():
        assert r["status"] == "passed"
        assert 0.0 <= r["metrics"]["test_accuracy"] <= 1.0 and "test_macro_f1" in r["metrics"]
        assert r["extra"]["data"]["label_map"] == {"neg": 0, "pos": 1}
    assert rows["all-layers"]["params"]["trainable"] == rows["all-layers"]["params"]["total"]
    head = rows["last-layers"]["params"]
    assert 0 < head["trainable"] < head["total"]
    assert set(rows["last-layers"]["trained_modules"]) == {"bert.pooler.dense", "classifier"}
    assert rows["feature-extraction"]["throughput"]["extract"]["samples_per_s"] > 0
    assert rows["all-layers"]["metrics"]["test_accuracy"] >= 0.7  # the toy task is learnable


def test_feature_cache_reused(tiny_bert, sentiment_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    args = ["run", "-s", "feature-extraction", "--model", str(tiny_bert), "--dataset", str(sentiment_csv),
            "--train-samples", "0", "--no-isolate", "-p", "no:profiler"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a = read_results(tmp_path / "a")["results"][0]
    b = read_results(tmp_path / "b")["results"][0]
    assert a["extra"]["features_cached"] == {"train": False, "validation": False, "test": False}
    assert b["extra"]["features_cached"] == {"train": True, "validation": True, "test": True}
    assert a["metrics"]["test_accuracy"] == b["metrics"]["test_accuracy"]
    assert "extract" not in b["throughput"]  # nothing measured, nothing reported
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train-layers", "blocks:5"], "block 5 does not exist"),
        (["--model", "EMPTY"], "holds no model (no config.json)"),
        (["--dataset", "NOCOL"], "label"),
        (["--dataset", "ONELABEL"], "needs at least two labels"),
    ],
)
def test_bad_input_exits_2(tiny_bert, sentiment_csv, tmp_path, capsys, extra, message):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("text,sentiment\nfine film,1\nbad film,0\n")
    onelabel = tmp_path / "one.csv"
    onelabel.write_text("text,label\n" + "".join(f"film {i},1\n" for i in range(20)))
    subst = {"EMPTY": str(empty), "NOCOL": str(nocol), "ONELABEL": str(onelabel)}
    extra = [subst.get(x, x) for x in extra]
    base = {"--model": str(tiny_bert), "--dataset": str(sentiment_csv)}
    for flag, value in base.items():
        if flag not in extra:
            extra += [flag, value]
    code = main(["run", "-s", "all-layers", "--epochs", "1", "--no-isolate", "--out", str(tmp_path / "o"),
                 "-p", "no:profiler", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert message in last
    if extra[0] == "--train-layers":  # found when the strategy resolves it: a failed row, named by strategy
        assert last.startswith("bench: error: all-layers:")
        row = read_results(tmp_path / "o")["results"][0]
        assert row["status"] == "failed" and row["error"]["usage"] is True
    else:  # the model folder and the data file are checked before any strategy runs, named by their path
        assert last.startswith("bench: error: ") and str(tmp_path) in last


@pytest.mark.assets
def test_smoke_preset_on_the_real_default_assets(tmp_path):
    """End to end on the embedded defaults (MiniLM, Rotten Tomatoes; fetched through pip on first use),
    small subsets: every classification strategy passes and learns something real."""
    out = tmp_path / "out"
    # in this process: isolated run processes are tested on tiny models (test_run.py, test_faults.py); here they
    # only added three imports of torch and transformers
    assert main(["run", "--preset", "smoke", "--out", str(out), "-p", "no:profiler", "--no-isolate"]) == 0
    rows = {r["strategy"]: r for r in read_results(out)["results"]}
    assert set(rows) == {"all-layers", "feature-extraction", "last-layers"}
    for r in rows.values():
        assert r["status"] == "passed"
        assert r["extra"]["data"]["label_names"] == ["rotten", "fresh"]
        assert r["extra"]["data"]["train"] == r["provenance"]["config"]["train_samples"]  # the small subset
    assert rows["all-layers"]["params"]["total"] == 22_713_986  # MiniLM + a 2-way head
    for name, r in rows.items():  # a smoke check that sees learning: 5 points above the majority class
        assert r["extra"]["data"]["test"] == 128
        assert r["metrics"]["test_accuracy"] >= SMOKE_MAJORITY + 0.05, (name, r["metrics"])


SMOKE_MAJORITY = 68 / 128  # the smoke test split (128 examples, stratified, seed 0): 68 of one class
