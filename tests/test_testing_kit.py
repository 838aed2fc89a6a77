"""bench.testing: the tiny builders, the contract check (each broken rule named with what to fix), the
frozen-parameter watch, isolation, and the pytest fixture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench import UsageError
from bench.testing import (
    ContractError,
    check_strategy,
    tiny_alpaca_jsonl,
    tiny_bert,
    tiny_llama,
    tiny_sentiment_csv,
)

pytest_plugins = ["pytester"]

KIT = '''
import math
from dataclasses import dataclass

import torch

from bench import ParamCounts, StrategyOutput
from bench import hookimpl


@dataclass(frozen=True)
class KitConfig:
    steps: int = 3


class Wrapper(torch.nn.Module):
    """A loss wrapper around the model, as bench.training.sft's response_window_lm is."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, x):
        return self.lm(x).sum()


class Kit:
    description = "a strategy that breaks one rule of the contract"
    task = "classification"
    config_class = KitConfig

    def __init__(self, mode):
        self.mode = mode
        self.name = f"kit-{mode}"

    def run(self, run):
        mode = self.mode
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        declared = ("1.weight", "1.bias")
        if mode in ("frozen", "wrapped"):
            model[0].requires_grad_(False)
        caller = Wrapper(model) if mode == "wrapped" else (lambda x: model(x).sum())
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        with run.meter.phase("train"):
            for _ in range(0 if mode == "no-steps" else run.config.steps):
                with run.meter.step(samples=8, tokens=32):
                    caller(torch.randn(8, 4)).backward()
                    opt.step()
                    opt.zero_grad()
        if mode == "raise":
            raise ValueError("kit failure: the data was bad")
        metrics = {"test_accuracy": 0.5}
        params = ParamCounts(26, 10, 104, 40, 80)
        extra = {"layers": 2}
        if mode == "nan":
            metrics["test_loss"] = math.nan
        if mode == "no-primary":
            metrics = {"accuracy": 0.5}
        if mode == "params":
            params = ParamCounts(26, 30, 104, -1, 80)
        if mode == "unserialisable":
            extra = {"model": model}
        return StrategyOutput(metrics=metrics, params=params, trained_parameters=declared, extra=extra)


MODES = ("ok", "frozen", "wrapped", "lie", "no-steps", "raise", "nan", "no-primary", "params", "unserialisable")
STRATEGIES = {m: Kit(m) for m in MODES}


@hookimpl
def bench_register_strategies():
    return list(STRATEGIES.values())
'''


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The kit strategies, in a module importable by name (as an installed plugin's would be)."""
    folder = tmp_path / "kitsite"
    folder.mkdir()
    (folder / "kit_strategies.py").write_text(KIT)
    monkeypatch.syspath_prepend(str(folder))
    import kit_strategies

    yield kit_strategies.STRATEGIES
    sys.modules.pop("kit_strategies", None)


def test_tiny_builders_make_loadable_models_and_data(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from bench.data.classification import load_classification
    from bench.data.instructions import load_alpaca_jsonl

    bert = tiny_bert(tmp_path / "bert")
    tok = AutoTokenizer.from_pretrained(bert)
    assert tok.unk_token_id not in tok("the movie was great and fun")["input_ids"]
    assert AutoModelForSequenceClassification.from_pretrained(bert, num_labels=2).num_parameters() < 50_000
    data = load_classification(str(tiny_sentiment_csv(tmp_path / "s.csv")), text_column="text", label_column="label",
                               seed=0)
    assert data.label_names == ("neg", "pos") and len(data.train) > 50
    llama = tiny_llama(tmp_path / "llama")
    tok = AutoTokenizer.from_pretrained(llama)
    text = "What is 3 plus 4?"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text and tok.chat_template is None
    model = AutoModelForCausalLM.from_pretrained(llama)
    assert model.config.model_type == "llama" and model.num_parameters() < 100_000
    examples = load_alpaca_jsonl(tiny_alpaca_jsonl(tmp_path / "a.jsonl"))
    assert len(examples) == 64 and {e.output for e in examples} >= {"positive", "negative"}


def test_a_builtin_strategy_passes_with_its_frozen_layers_checked(tmp_path):
    report = check_strategy("last-layers", tmp_path=tmp_path, isolate=False, options={"n_last": 1, "max_steps": 1})
    assert report.ok and report.result.passed and not report.isolated
    frozen = report.frozen
    assert [m.type for m in frozen.models] == ["BertForSequenceClassification"]
    assert frozen.checked > 0 and not frozen.changed and not frozen.unmatched_trained
    assert frozen.models[0].changed_trained > 0  # what it declared did train
    assert (report.out_dir / report.result.run_dir / "bench-testing.json").is_file()
    assert report.result.run_dir == "runs/last-layers-1"


def test_isolated_check_loads_the_strategy_module_in_the_run_process(kit, tmp_path):
    report = check_strategy(kit["frozen"], tmp_path=tmp_path)
    assert report.isolated and report.result.passed
    assert report.result.provenance.plugin == "kit_strategies"  # found by name in the child via -p
    assert report.frozen.checked == 2 and not report.frozen.changed  # 0.weight, 0.bias stayed frozen


def test_names_through_a_wrapper_module_still_match(kit, tmp_path):
    report = check_strategy(kit["wrapped"], tmp_path=tmp_path, isolate=False)
    assert [m.type for m in report.frozen.models] == ["Wrapper"] and report.frozen.checked == 2


@pytest.mark.parametrize(
    ("mode", "messages"),
    [
        ("lie", ["2 parameter(s) not listed in StrategyOutput.trained_parameters changed during the run: "
                 "0.weight, 0.bias", "requires_grad_(False)"]),
        ("no-steps", ["no step was measured; wrap each optimizer step"]),
        ("raise", ["the run failed: ValueError: kit failure: the data was bad", "raise ValueError"]),
        ("nan", ["metric 'test_loss' is nan; every metric must be a finite float"]),
        ("no-primary", ["the primary metric 'test_accuracy' is missing (metrics: accuracy)"]),
        ("params", ["params.trainable is 30 with total 26", "params.grad_bytes is -1"]),
        ("unserialisable", ["extra['model'] (Sequential", "not JSON-serialisable"]),
    ],
)
def test_each_broken_rule_is_named_with_what_to_fix(kit, tmp_path, mode, messages):
    with pytest.raises(ContractError) as info:
        check_strategy(kit[mode], tmp_path=tmp_path, isolate=False)
    text = str(info.value)
    assert f"strategy 'kit-{mode}' breaks the bench strategy contract" in text
    for message in messages:
        assert message in text
    assert info.value.report is not None and info.value.report.problems


def test_a_strategy_a_run_process_cannot_import_is_refused(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Cfg:
        x: int = 1

    class Local:
        name, description, task, config_class = "local-only", "d", "classification", Cfg

        def run(self, run):
            raise AssertionError("never runs")

    Local.__module__ = "__main__"
    with pytest.raises(ContractError, match="which a run process cannot import by name; register it through the "
                                            "'finetune_bench' entry point"):
        check_strategy(Local(), tmp_path=tmp_path)


def test_option_errors_and_devices_are_reported_before_running(kit, tmp_path):
    with pytest.raises(UsageError, match="option 'steps' of strategy 'kit-ok': expected int, got 'abc'"):
        check_strategy(kit["ok"], tmp_path=tmp_path, options={"steps": "abc"}, isolate=False)
    with pytest.raises(UsageError, match="unknown strategy 'kit-okk'; did you mean 'kit-ok'"):
        check_strategy("kit-okk", tmp_path=tmp_path, plugins=["kit_strategies"])
    kit["ok"].devices = ("cuda",)
    with pytest.raises(ContractError, match=r"declares devices \('cuda',\), so it cannot be checked on 'cpu'"):
        check_strategy(kit["ok"], tmp_path=tmp_path, isolate=False)


def test_the_bench_check_fixture(kit, pytester):
    pytester.makeconftest('pytest_plugins = ["bench.testing"]\n')
    pytester.makepyfile(test_kit='''
        def test_it(bench_check, tmp_path):
            report = bench_check("kit-frozen", plugins=["kit_strategies"], isolate=False)
            assert report.out_dir.parent == tmp_path and report.frozen.checked == 2
    ''')
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
