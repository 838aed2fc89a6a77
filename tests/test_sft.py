"""The sft strategy: templating, response-only masking, token counts, generation evaluation, bad input,
and end-to-end runs on tiny random Llama and GPT-2 models built offline (plus one on the real assets)."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from bench.core.config import BenchConfig
from bench.core.errors import DataError, UsageError
from bench.data import instructions
from bench.data.batching import collate
from bench.data.instructions import InstructionExample
from bench.host.cli import main
from bench.models.loading import load_causal_lm, load_tokenizer, resolve_model
from bench.training import sft

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
WORDS = ("is this review positive or negative ? answer with one word . add two numbers : + = the film was good "
         "great fun bad dull awful movie plot positive negative")


def _examples(n: int = 40) -> list[dict[str, str]]:
    good, bad = ["good", "great", "fun"], ["bad", "dull", "awful"]
    out = []
    for i in range(n):
        positive = i % 2 == 0
        word = (good if positive else bad)[i % 3]
        out.append({"instruction": "Is this review positive or negative?", "input": f"the film was {word}",
                    "output": "positive" if positive else "negative"})
    return out


def make_tokenizer(folder: Path, *, chat: bool) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [WORDS, sft.ALPACA_WITH_INPUT, sft.ALPACA_NO_INPUT, *[str(n) for n in range(200)]]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIAL))
    # As in SmolLM2, a chat model's EOS is its end-of-turn marker.
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="<|end|>" if chat else "</s>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return fast


def make_tiny_lm(folder: Path, kind: str, *, chat: bool) -> Path:
    """A random 2-layer Llama or GPT-2 (hidden 32) with the tokenizer above, saved like a hub folder."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer(folder, chat=chat)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=True, **ids)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256, **ids)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-llama"), "llama", chat=True)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2", chat=False)


@pytest.fixture
def alpaca_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in _examples()), encoding="utf-8")
    return path


def _ex(instruction: str = "add two numbers :", inp: str = "2 + 3", out: str = "5", source: str = "s") -> Any:
    return InstructionExample(instruction, inp, out, source=source, template="t")


# ---------------------------------------------------------------------------------------------- templating


def test_chat_template_when_present_else_alpaca(tiny_llama, tiny_gpt2):
    chat_tok, plain_tok = load_tokenizer(str(tiny_llama)), load_tokenizer(str(tiny_gpt2))
    assert sft.prompt_style(chat_tok) == "chat" and sft.prompt_style(plain_tok) == "alpaca"
    ex = _ex()
    assert sft.render_prompt(chat_tok, ex, "chat") == "<|user|> add two numbers :\n\n2 + 3 <|end|><|assistant|>"
    assert sft.render_full(chat_tok, ex, "chat") == "<|user|> add two numbers :\n\n2 + 3 <|end|><|assistant|> 5 <|end|>"
    alpaca = sft.render_prompt(plain_tok, ex, "alpaca")
    assert alpaca.startswith("Below is an instruction") and "### Input:\n2 + 3\n\n### Response:\n" in alpaca
    no_input = sft.render_prompt(plain_tok, _ex(inp=""), "alpaca")
    assert "### Input" not in no_input and no_input.endswith("### Instruction:\nadd two numbers :\n\n### Response:\n")
    assert sft.prompt_style(chat_tok, "alpaca") == "alpaca"  # forced
    with pytest.raises(UsageError, match="no chat template"):
        sft.prompt_style(plain_tok, "chat")


# ---------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("model_fixture", ["tiny_llama", "tiny_gpt2"])
def test_labels_mask_prompt_and_padding_and_loss_is_response_only(model_fixture, request):
    import torch

    folder = resolve_model(str(request.getfixturevalue(model_fixture)), "causal-lm")
    tok = load_tokenizer(folder)
    style = sft.prompt_style(tok)
    examples = [_ex(), _ex(instruction="is this review positive or negative ?", inp="the film was good",
                           out="positive"), _ex(inp="", out="12")]
    split = sft.encode(tok, examples, style, max_length=64)
    assert split.dropped == 0
    for item in split.items:
        ids, labels = item.encoded.input_ids, item.encoded.token_labels
        n_prompt = len(item.prompt_ids)
        assert ids[:n_prompt] == item.prompt_ids
        assert all(label == -100 for label in labels[:n_prompt])  # every prompt position masked
        assert list(labels[n_prompt:]) == list(ids[n_prompt:])  # every response position is a target
        response = tok.decode(list(ids[n_prompt:]))
        assert item.example.output in response
        end = "<|end|>" if style == "chat" else "</s>"
        assert response.rstrip().endswith(end)  # the model learns to stop
    batch = collate([it.encoded for it in split.items], sft.pad_id_of(tok))
    labels, mask = batch.tensors["labels"], batch.tensors["attention_mask"]
    assert bool((labels[mask == 0] == -100).all())  # padding masked
    expected = torch.full_like(labels, -100)
    for row, item in enumerate(split.items):
        start, stop = len(item.prompt_ids), len(item.encoded)
        expected[row, start:stop] = torch.tensor(item.encoded.input_ids[start:stop])
    assert torch.equal(labels, expected)  # -100 exactly on prompt and padding positions

    model = load_causal_lm(folder, "eager")
    model.eval()
    with torch.no_grad():
        out = model(**batch.tensors)
        logits = out.logits
        manual, n = [], 0
        for row, item in enumerate(split.items):
            for pos in range(len(item.prompt_ids), len(item.encoded)):
                target = torch.tensor([item.encoded.input_ids[pos]])
                manual.append(torch.nn.functional.cross_entropy(logits[row, pos - 1][None].float(), target))
                n += 1
        response_only = torch.stack(manual).mean()
        assert torch.allclose(out.loss, response_only, atol=1e-5)
    assert batch.tokens == n == sum(it.response_tokens for it in split.items)  # real tokens: the targets

    # The left-padded response-window batch used for training gives the same loss from the window's logits.
    window = sft.collate_window([it.encoded for it in split.items], sft.pad_id_of(tok))
    wl, wm, wp = (window.tensors[k] for k in ("labels", "attention_mask", "position_ids"))
    longest = max(it.response_tokens for it in split.items)
    assert wl.shape == (3, longest) and window.tokens == n
    for row, item in enumerate(split.items):
        r = item.response_tokens
        assert wl[row, longest - r:].tolist() == list(item.encoded.input_ids[-r:])
        assert bool((wl[row, : longest - r] == -100).all())
        assert int(wm[row].sum()) == len(item.encoded) and bool((wm[row, -len(item.encoded):] == 1).all())
        assert wp[row, -len(item.encoded):].tolist() == list(range(len(item.encoded)))
    wrapper = sft.response_window_lm(model)
    assert [p for p in wrapper.parameters()] == [p for p in model.parameters()]
    with torch.no_grad():
        assert torch.allclose(wrapper(**window.tensors).loss, response_only, atol=1e-5)


def test_long_prompts_dropped_and_long_answers_cut(tiny_llama):
    tok = load_tokenizer(str(tiny_llama))
    short, long = _ex(inp="1", out="2 3 4 5 6 7"), _ex(inp=" ".join(["good"] * 40))
    n_short = len(sft.encode(tok, [short], "chat", 64).items[0].prompt_ids)
    split = sft.encode(tok, [short, long], "chat", n_short + 2)
    assert split.dropped == 1 and len(split.items) == 1
    assert len(split.items[0].encoded) == n_short + 2 and split.items[0].response_tokens == 2
    with pytest.raises(DataError, match="every training prompt is at least --max-length 5"):
        sft.require_items(sft.encode(tok, [long], "chat", 5), "training", 5)


def test_eos_ends_every_answer_once(tiny_gpt2):
    tok = load_tokenizer(str(tiny_gpt2))
    eos = tok.eos_token_id
    assert sft._with_eos([7, 8], tok) == [7, 8, eos]
    assert sft._with_eos([7, eos], tok) == [7, eos]  # a template that wrote it already


def test_input_tokens_counted_per_batch_and_per_second():
    from bench.results.schema import StepSample

    examples = [sft.Encoded((1, 2, 3, 4)[:n], token_labels=(-100, -100, 3, 4)[:n]) for n in (3, 4, 4, 3, 4)]
    batches_ = [sft.collate_window(examples[i:i + 2], 0) for i in range(0, 5, 2)]
    assert [b.tokens for b in batches_] == [3, 3, 2]  # response tokens, padding excluded
    assert [b.input_tokens for b in batches_] == [7, 7, 4]  # non-padding inputs, prompt included
    assert [b.padded_tokens for b in batches_] == [8, 8, 4]
    steps = [StepSample("warmup", 1.0, 4, 7, "train", 14), StepSample("timed", 2.0, 1, 1, "train", 4),
             StepSample("timed", 1.0, 1, 1, "eval", 100)]
    assert sft.input_tokens_per_s(steps) == 2.0  # timed train steps only


# ---------------------------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize(("prediction", "reference", "same"), [
    ("  Fresh. ", "fresh", True), ("POSITIVE!", "positive", True), ("133", "133", True), ("1 3 3", "133", False),
    ("fresh\n\n", "Fresh", True), ("The answer is fresh.", "fresh", False), ("rotten ...", "rotten", True),
    ("", "fresh", False), ("new  york", "New York", True),
])
def test_normalised_exact_match(prediction, reference, same):
    assert sft.exact_match(prediction, reference) is same


class _ScriptedLM:
    """Answers each prompt with the tokens scripted for its last prompt token, then EOS and padding."""

    def __init__(self, script: dict[int, list[int]], eos: int, pad: int) -> None:
        self.script, self.eos, self.pad = script, eos, pad
        self.generation_config = types.SimpleNamespace(eos_token_id=eos)
        self.calls: list[tuple[Any, Any]] = []

    def eval(self) -> None:
        pass

    def generate(self, input_ids: Any, attention_mask: Any, generation_config: Any) -> Any:
        import torch

        self.calls.append((input_ids.clone(), attention_mask.clone()))
        assert generation_config.do_sample is False and generation_config.max_new_tokens == 4
        width = 4
        rows = []
        for prompt in input_ids.tolist():
            answer = (self.script[prompt[-1]] + [self.eos] + [self.pad] * width)[:width]
            rows.append(prompt + answer)
        return torch.tensor(rows)


def test_generation_left_pads_stops_at_eos_and_scores_per_source(tiny_llama):
    from bench.core.context import RunContext
    from bench.measure.meter import Meter

    tok = load_tokenizer(str(tiny_llama))
    vocab = tok.get_vocab()
    pos, neg, n12 = vocab["positive"], vocab["negative"], vocab["12"]
    items = [
        sft.SftItem(_ex(out="positive", source="a"), (5, 6, 7, 8), sft.Encoded((5,))),
        sft.SftItem(_ex(out="negative", source="a"), (9,), sft.Encoded((9,))),
        sft.SftItem(_ex(out="12", source="b"), (10, 11), sft.Encoded((10,))),
    ]
    model = _ScriptedLM({8: [pos], 9: [pos, neg], 11: [n12]}, tok.eos_token_id, tok.pad_token_id)
    run = RunContext(None, None, BenchConfig(device="cpu", precision="fp32", seed=0), Meter(), Path("."),
                     Path("."))
    answers = sft.generate(run, model, tok, items, batch_size=8, max_new_tokens=4, pad_id=tok.pad_token_id)
    assert answers == ["positive", "positive negative", "12"]  # input order, cut at EOS, padding dropped
    ids, mask = model.calls[0]
    assert mask.tolist() == [[0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]]  # left padding, sorted by length
    assert ids[0, :3].tolist() == [tok.pad_token_id] * 3
    scores = sft.score(items, answers)
    assert scores.hits == (True, False, True)
    assert scores.overall == pytest.approx(2 / 3)
    assert scores.by_source == {"a": 0.5, "b": 1.0}
    sample = sft.sample_generations(items, ["x", "y", "z"], answers, 2)
    assert [g["source"] for g in sample] == ["a", "b"]  # round-robin across sources
    assert sample[1] == {"source": "b", "prompt": "add two numbers :\n\n2 + 3", "reference": "12", "before": "z",
                         "after": "12"}


def test_real_generation_on_tiny_model_is_well_formed(tiny_gpt2):
    from bench.core.context import RunContext
    from bench.measure.meter import Meter

    tok = load_tokenizer(str(tiny_gpt2))
    model = load_causal_lm(str(tiny_gpt2), "eager")
    items = sft.encode(tok, [_ex(), _ex(inp="the film was good bad dull great fun")], "alpaca", 128).items
    run = RunContext(None, None, BenchConfig(device="cpu", precision="bf16", seed=0), Meter(), Path("."),
                     Path("."))
    answers = sft.generate(run, model, tok, items, batch_size=2, max_new_tokens=3, pad_id=sft.pad_id_of(tok))
    alone = sft.generate(run, model, tok, items[:1], batch_size=1, max_new_tokens=3, pad_id=sft.pad_id_of(tok))
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert answers[0] == alone[0]  # left padding does not change a greedy answer


# ---------------------------------------------------------------------------------------------- data


def test_hub_dataset_path(monkeypatch):
    class Table:
        def __init__(self, rows: list[dict[str, str]]) -> None:
            self.rows = rows
            self.column_names = list(rows[0])

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, column: str) -> list[str]:
            return [r[column] for r in self.rows]

    loaded: dict[str, Any] = {"train": Table(_examples(30))}
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda dataset_id: loaded  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    data = instructions.load_instruction_data("someone/alpaca-mini", seed=0, train_samples=0, eval_samples=0)
    assert (len(data.train), len(data.test)) == (27, 3) and data.source.startswith("hub:someone/alpaca-mini")
    assert data.train[0].source == "someone/alpaca-mini"
    loaded["train"] = Table([{"prompt": "x", "output": "y"}])
    with pytest.raises(DataError, match="no column 'instruction'"):
        instructions.load_instruction_data("someone/other", seed=0, train_samples=0, eval_samples=0)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UsageError, match="pip install datasets"):
        instructions.load_instruction_data("someone/alpaca-mini", seed=0, train_samples=0, eval_samples=0)


def test_default_set_cut_round_robin_by_source():
    pool = tuple(_ex(inp=str(i), source=src) for i, src in enumerate("aabbbbcaca"))
    cut = instructions._round_robin(pool, 5)
    assert [e.input for e in cut] == ["0", "1", "2", "3", "6"]  # a, a, b, b, c: in turn, original order kept
    assert set(instructions._round_robin(pool, 3)) <= set(cut) and instructions._round_robin(pool, 0) == pool


def test_file_subsets_are_seeded(alpaca_jsonl):
    a = instructions.load_instruction_data(str(alpaca_jsonl), seed=1, train_samples=10, eval_samples=2)
    b = instructions.load_instruction_data(str(alpaca_jsonl), seed=1, train_samples=10, eval_samples=2)
    assert a == b and (len(a.train), len(a.test)) == (10, 2)
    assert instructions.load_instruction_data(str(alpaca_jsonl), seed=2, train_samples=10, eval_samples=2) != a
    whole = instructions.load_instruction_data(str(alpaca_jsonl), seed=1, train_samples=0, eval_samples=0)
    assert (len(whole.train), len(whole.test)) == (36, 4) and whole.train[0].template == "alpaca"


# ---------------------------------------------------------------------------------------------- CLI


def _run(tmp_path: Path, model: Path, dataset: Path, *extra: str) -> int:
    return main(["run", "-s", "sft", "--model", str(model), "--dataset", str(dataset), "--no-isolate",
                 "--out", str(tmp_path / "out"), "-p", "no:profiler", *extra])


@pytest.mark.parametrize(("content", "message"), [
    ('{"instruction": "a", "output": "b"}\n{not json}\n', "line 2 is not JSON"),
    ('{"instruction": "a", "output": "b"}\n\n{"instruction": "a", "input": "c"}\n', "line 3 has no 'output'"),
])
def test_bad_jsonl_exits_2_naming_the_line(tiny_llama, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content, encoding="utf-8")
    assert _run(tmp_path, tiny_llama, bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and message in err[-1] and "bad.jsonl" in err[-1]


def test_non_causal_model_exits_2(tiny_bert, alpaca_jsonl, tmp_path, capsys):
    assert _run(tmp_path, tiny_bert, alpaca_jsonl) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'bert' model is not a causal language model" in err and str(tiny_bert) in err


def test_prompts_longer_than_max_length_exit_2(tiny_llama, alpaca_jsonl, tmp_path, capsys):
    assert _run(tmp_path, tiny_llama, alpaca_jsonl, "--max-length", "6") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "at least --max-length 6 tokens long" in err and "raise --max-length" in err


@pytest.mark.parametrize(("model_fixture", "style"), [("tiny_llama", "chat"), ("tiny_gpt2", "alpaca")])
def test_sft_end_to_end_on_tiny_models(model_fixture, style, alpaca_jsonl, tmp_path, capsys, request):
    folder = request.getfixturevalue(model_fixture)
    code = _run(tmp_path, folder, alpaca_jsonl, "--epochs", "2", "--batch-size", "4", "--lr", "3e-3",
                "--eval-batch-size", "3", "--precision", "fp32")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Sample generations: sft" in captured.out
    result = json.loads((tmp_path / "out" / "results.json").read_text())["results"][0]
    assert result["status"] == "passed", result.get("error")
    m = result["metrics"]
    assert result["primary_metric"] == "exact_match_after"
    for key in ("exact_match_before", "exact_match_after", "eval_loss", "eval_perplexity", "eval_loss_before"):
        assert key in m
    assert 0 <= m["exact_match_after"] <= 1
    assert m["eval_perplexity"] == pytest.approx(math.exp(m["eval_loss"]))
    assert m["eval_loss"] < m["eval_loss_before"]  # it learned something about the answers
    assert [p["name"] for p in result["phases"]] == ["setup", "baseline", "train", "eval"]
    assert result["throughput"]["train"]["real_tokens_per_s"] > 0
    extra = result["extra"]
    assert extra["prompt_format"] == style
    assert extra["data"]["train"] == 36 and extra["data"]["test"] == 4
    assert extra["optimizer_steps"] == 2 * 9
    assert extra["train_response_tokens"] == sum(s["tokens"] for s in result["steps"] if s["phase"] == "train")
    assert extra["train_input_tokens"] > extra["train_response_tokens"] > 0
    gens = extra["generations"]
    assert gens and set(gens[0]) == {"prompt", "reference", "before", "after", "source"}
    lines = Path(extra["generations_file"]).read_text().splitlines()
    assert len(lines) == 4 and {"match_before", "match_after"} <= set(json.loads(lines[0]))
    assert result["params"]["trainable"] == result["params"]["total"]
    # the report renders the generations again from the file
    assert main(["report", str(tmp_path / "out" / "results.json")]) == 0
    assert "Sample generations: sft" in capsys.readouterr().out


def test_train_layers_last_1_freezes_the_rest(tiny_llama, alpaca_jsonl, tmp_path, capsys):
    code = _run(tmp_path, tiny_llama, alpaca_jsonl, "--train-layers", "last:1", "--max-steps", "2",
                "--eval-samples", "2")
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "results.json").read_text())["results"][0]
    assert result["trained_modules"] == ["model.layers.1"]
    assert all(name.startswith("model.layers.1.") for name in result["trained_parameters"])


def test_train_layers_last_1_leaves_every_other_parameter_bit_identical(tiny_llama, alpaca_jsonl, tmp_path):
    """The weights themselves, watched before and after training (bench.testing's frozen watch): every
    parameter outside the last block is bit-identical, and the last block's did change."""
    from bench.testing import check_strategy

    report = check_strategy("sft", model=tiny_llama, dataset=alpaca_jsonl, tmp_path=tmp_path, isolate=False,
                            options={"train_layers": "last:1", "max_steps": 2, "eval_samples": 2, "lr": 1e-2})
    assert report.frozen is not None and report.ok
    (model,) = [m for m in report.frozen.models if m.declared_trained]
    trained = len(report.result.trained_parameters)
    assert model.declared_trained == trained and model.frozen == model.parameters - trained > trained
    assert model.changed_undeclared == () and model.changed_trained == trained


# ---------------------------------------------------------------------------------------------- real assets


@pytest.mark.assets
@pytest.mark.slow
def test_sft_smoke_preset_learns_on_the_default_assets(tmp_path):
    """End to end on the embedded defaults (SmolLM2-135M, the default instructions): the smoke preset is a
    sanity check that sees learning: exact match after above the zero-shot figure."""
    assert main(["run", "-s", "sft", "--preset", "smoke", "--no-isolate", "-p", "no:profiler",
                 "--out", str(tmp_path / "o")]) == 0
    result = json.loads((tmp_path / "o" / "results.json").read_text())["results"][0]
    assert result["status"] == "passed", result.get("error")
    extra, metrics = result["extra"], result["metrics"]
    assert extra["prompt_format"] == "chat" and extra["data"]["name"] == "default-instructions"
    assert set(extra["data"]["sources"]) == {"rotten-tomatoes", "vader-movie-reviews", "arithmetic"}
    assert "exact_match_after_arithmetic" in metrics
    assert result["params"]["total"] == 134_515_008
    assert metrics["exact_match_after"] > metrics["exact_match_before"], metrics
