"""bench-lora's own tests: registration, per-architecture targets, the bench contract, the tables.

Run with ``pytest plugins/bench-lora`` (or ``pytest`` inside plugins/bench-lora) after
``pip install -e plugins/bench-lora``. Everything runs on tiny random models in seconds.
"""

from __future__ import annotations

import json
import sys

import pytest
from bench.host.cli import main
from bench.testing import check_strategy, default_assets

from bench_lora import adapters
from bench_lora.options import LoraClassificationConfig

# peft is a hard dependency of bench-lora (its pyproject.toml): no importorskip, a missing peft fails loudly


@pytest.fixture(autouse=True)
def _quiet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    monkeypatch.delenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def test_registered_through_the_entry_point_group(capsys):
    assert main(["list"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["lora"][1:5] == ["classification", "lora", "bench-lora", "0.1.0"]
    assert rows["lora-sft"][1:5] == ["causal-lm", "lora", "bench-lora", "0.1.0"]
    assert main(["list", "--plugins"]) == 0
    plugin = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("lora "))
    assert plugin[1:4] == ["entry-point", "bench-lora", "0.1.0"]
    assert "bench_addoption," in plugin and "bench_register_strategies" in plugin
    assert main(["list", "-p", "no:lora"]) == 0  # blocked by its plugin name
    assert "lora" not in capsys.readouterr().out


def tiny(kind: str):
    import torch
    import transformers as tf

    torch.manual_seed(0)
    common = {"vocab_size": 40, "max_position_embeddings": 32}
    if kind == "bert":
        cfg = tf.BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20, **common)
        return tf.BertForSequenceClassification(cfg)
    if kind == "distilbert":
        return tf.DistilBertForSequenceClassification(tf.DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=20,
                                                                          **common))
    if kind == "roberta":
        cfg = tf.RobertaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
                               vocab_size=40, max_position_embeddings=40)
        return tf.RobertaForSequenceClassification(cfg)
    if kind == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=40, n_positions=32))
    cfg = tf.LlamaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=20, vocab_size=40, max_position_embeddings=32)
    return tf.LlamaForCausalLM(cfg)


@pytest.mark.parametrize(
    ("kind", "targets", "head"),
    [("bert", {"query", "value"}, {"classifier"}),
     ("distilbert", {"q_lin", "v_lin"}, {"pre_classifier", "classifier"}),
     ("roberta", {"query", "value"}, {"classifier"}),
     ("llama", {"q_proj", "v_proj"}, set()),
     ("gpt2", {"c_attn"}, set())],
)
def test_default_targets_per_architecture_and_the_head_trains(kind, targets, head):
    model = tiny(kind)
    assert set(adapters.default_targets(model)) == targets
    task = "CAUSAL_LM" if kind in ("llama", "gpt2") else "SEQ_CLS"
    saved = adapters.new_head_modules(model) if task == "SEQ_CLS" else ()
    assert set(saved) == head
    wrapped, _ = adapters.wrap(model, LoraClassificationConfig(rank=2), strategy="lora", task_type=task,
                               modules_to_save=saved)
    params, modules = adapters.trained(wrapped)
    lora_modules = {m.rsplit(".", 1)[-1] for m in modules if m.split(".", 1)[0] not in head}
    assert lora_modules == targets
    assert {m for m in modules if m in head} == head  # the new head trains in full
    assert all(".lora_" in p or ".modules_to_save." in p for p in params)  # nothing else trains
    size = adapters.adapter_size(wrapped)
    assert size.parameters == sum(p.numel() for _, p in wrapped.named_parameters() if p.requires_grad)


def test_bad_target_module_names_the_layers_it_has():
    from bench import UsageError

    with pytest.raises(UsageError, match=r"target module 'qkv' is not a linear layer.*query, key, value"):
        adapters.wrap(tiny("bert"), LoraClassificationConfig(target_modules=("qkv",)), strategy="lora",
                      task_type="SEQ_CLS", modules_to_save=())


def test_peft_the_hard_dependency_is_installed():
    import peft

    assert peft.LoraConfig is not None


def test_without_peft_the_run_says_what_to_install(monkeypatch):
    from bench import UsageError

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(UsageError, match="needs the peft package: pip install peft"):
        adapters.import_peft("lora")


def test_lora_meets_the_contract_in_an_isolated_run(tmp_path):
    # one optimizer step: all steps are warm-up, so the run skips the MFU peak probe (seconds on a CPU)
    report = check_strategy("lora", tmp_path=tmp_path, options={"batch_size": 8, "lr": 5e-3, "max_steps": 1})
    result = report.result
    assert result.metrics["adapter_mib"] > 0
    extra = result.extra
    assert extra["adapter_parameters"] == result.params.trainable < result.params.total
    assert extra["adapter_lora_parameters"] + extra["adapter_head_parameters"] == extra["adapter_parameters"]
    assert extra["target_modules"] == ["query", "value"] and extra["modules_to_save"] == ["classifier"]
    assert extra["adapter_file_bytes"] >= extra["adapter_bytes"]
    assert report.frozen is not None and report.frozen.checked > 0 and not report.frozen.changed


def test_lora_sft_meets_the_contract(tmp_path):
    report = check_strategy("lora-sft", tmp_path=tmp_path, isolate=False,
                            options={"max_steps": 1, "rank": 4}, plugin_options={"lora_save_adapter": False})
    result = report.result
    assert result.primary_metric == "exact_match_after"
    assert result.extra["adapter_parameters"] == result.params.trainable
    assert result.extra["target_modules"] == ["q_proj", "v_proj"] and "adapter_file_bytes" not in result.extra
    assert all(".lora_" in name for name in result.trained_parameters)
    assert report.frozen.checked > 0


def test_rows_sit_in_the_same_tables_as_the_builtins(tmp_path, capsys):
    model, data = default_assets("classification")
    out = tmp_path / "out"
    code = main(["run", "-s", "last-layers", "-s", "lora", "--model", str(model), "--dataset", str(data),
                 "--preset", "smoke", "--max-steps", "2", "--no-isolate", "-p", "no:profiler", "--out", str(out),
                 "--lora-save-adapter", "false", "-o", "lora.rank=4"])
    assert code == 0
    text = capsys.readouterr().out
    metrics_table = text.split("Task metrics", 1)[1].split("\n\n", 1)[0]
    assert "adapter_mib" in metrics_table and "last-layers" in metrics_table and "lora" in metrics_table
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [r["strategy"] for r in rows] == ["last-layers", "lora"]
    assert rows[1]["provenance"]["distribution"] == "bench-lora" and rows[1]["provenance"]["config"]["rank"] == 4
