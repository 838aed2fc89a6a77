"""Supervised fine-tuning of causal LMs: prompts, response-only labels, held-out loss and greedy
exact-match evaluation. Shared by the built-in ``sft`` strategy and open to plugins (a LoRA strategy
needs the same data, masking and evaluation: ``from bench.training.sft import encode, evaluate_loss, ...``).

* Prompts are written with the tokenizer's chat template when it has one (one user turn, the
  template's own system prompt if it adds one), else with the Alpaca template.
* Labels are -100 on every prompt position (and on padding, added by :func:`collate_window` or
  :func:`bench.batching.collate`): the loss is over response tokens only, the end-of-turn / EOS included.
  Training batches are left-padded so that the LM head runs over the response window only.
* Evaluation: mean cross-entropy over response tokens (and its perplexity), and exact match of
  greedy generations (batched, left-padded, inference mode + autocast) after :func:`normalise_answer`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core import progress
from bench.core.errors import DataError, UsageError
from bench.data.batching import Batch, Encoded, sorted_order
from bench.data.instructions import InstructionExample
from bench.measure.meter import timed_rate

if TYPE_CHECKING:
    from bench.core.context import RunContext
    from bench.results.report import Section
    from bench.results.schema import RunResult

PROMPT_FORMATS = ("auto", "chat", "alpaca")
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
_TRAILING_PUNCTUATION = ".,;:!?"


# -------------------------------------------------------------------------------------------------
# Prompts and response-only labels.
# -------------------------------------------------------------------------------------------------


def prompt_style(tokenizer: Any, choice: str = "auto") -> str:
    """``chat`` (the tokenizer's chat template) or ``alpaca``; ``auto`` picks chat when there is a template."""
    if choice not in PROMPT_FORMATS:
        raise UsageError(f"--prompt-format {choice!r}: use one of {', '.join(PROMPT_FORMATS)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if choice == "chat" and not has_template:
        raise UsageError("--prompt-format chat: the model's tokenizer has no chat template; use auto or alpaca")
    if choice == "auto":
        return "chat" if has_template else "alpaca"
    return choice


def render_prompt(tokenizer: Any, example: InstructionExample, style: str) -> str:
    """The text the model sees before its answer (the generation prompt)."""
    if style == "chat":
        return str(tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}], tokenize=False,
                                                 add_generation_prompt=True))
    if example.input:
        return ALPACA_WITH_INPUT.format(instruction=example.instruction, input=example.input)
    return ALPACA_NO_INPUT.format(instruction=example.instruction)


def render_full(tokenizer: Any, example: InstructionExample, style: str) -> str:
    """Prompt plus answer; for chat, the template's own end-of-turn marker ends it (trailing space cut)."""
    if style == "chat":
        messages = [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": example.output}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False)).rstrip()
    return render_prompt(tokenizer, example, style) + example.output


@dataclass(frozen=True)
class SftItem:
    """One encoded example: ``encoded`` holds prompt+response ids and labels (-100 on the prompt);
    ``prompt_ids`` is what generation starts from."""

    example: InstructionExample
    prompt_ids: tuple[int, ...]
    encoded: Encoded

    @property
    def response_tokens(self) -> int:
        assert self.encoded.token_labels is not None
        return sum(1 for t in self.encoded.token_labels if t != -100)


@dataclass(frozen=True)
class EncodedSplit:
    items: list[SftItem]
    dropped: int  # prompts that leave no room for a response token within max_length
    longest_prompt: int
    shortest_prompt: int


def _with_eos(response: list[int], tokenizer: Any) -> list[int]:
    """The answer must teach the model to stop: append EOS unless the template already wrote it."""
    eos = tokenizer.eos_token_id
    if eos is None or int(eos) in response:
        return response
    return [*response, int(eos)]


def encode(tokenizer: Any, examples: Sequence[InstructionExample], style: str, max_length: int) -> EncodedSplit:
    """Tokenise once, no padding. The prompt is tokenised alone; when the tokenisation of prompt+answer
    starts with those ids it is used as is (the answer tokenised in context), else the answer's text is
    tokenised alone and joined. EOS ends every answer (chat templates usually write their own end-of-turn).
    Answers that overflow ``max_length`` are cut; prompts that fill it are dropped (counted)."""
    if max_length < 2:
        raise UsageError(f"--max-length {max_length}: must be at least 2")
    special = style != "chat"  # chat templates write their own BOS and markers
    prompts = [render_prompt(tokenizer, e, style) for e in examples]
    fulls = [render_full(tokenizer, e, style) for e in examples]
    items: list[SftItem] = []
    dropped = 0
    lengths: list[int] = []
    chunk = 512
    for start in range(0, len(examples), chunk):
        p_ids = tokenizer(prompts[start:start + chunk], add_special_tokens=special)["input_ids"]
        f_ids = tokenizer(fulls[start:start + chunk], add_special_tokens=special)["input_ids"]
        for offset, (prompt, full) in enumerate(zip(p_ids, f_ids, strict=True)):
            i = start + offset
            prompt, full = list(prompt), list(full)
            lengths.append(len(prompt))
            if full[:len(prompt)] == prompt and len(full) > len(prompt):
                response = full[len(prompt):]
            else:
                text = fulls[i][len(prompts[i]):] if fulls[i].startswith(prompts[i]) else examples[i].output
                response = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            response = _with_eos(response, tokenizer)
            if len(prompt) >= max_length:
                dropped += 1
                continue
            response = response[: max_length - len(prompt)]
            ids = tuple(prompt + response)
            labels = (-100,) * len(prompt) + tuple(response)
            items.append(SftItem(examples[i], tuple(prompt), Encoded(ids, token_labels=labels)))
    return EncodedSplit(items, dropped, max(lengths, default=0), min(lengths, default=0))


def require_items(split: EncodedSplit, what: str, max_length: int) -> None:
    """DataError when every example of a split was dropped for a too-long prompt."""
    if not split.items:
        raise DataError(f"every {what} prompt is at least --max-length {max_length} tokens long (shortest "
                        f"{split.shortest_prompt} tokens), so no response token fits; raise --max-length")


def pad_id_of(tokenizer: Any) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


# -------------------------------------------------------------------------------------------------
# Evaluation.
# -------------------------------------------------------------------------------------------------


def normalise_answer(text: str) -> str:
    """Lower case, whitespace collapsed, trailing punctuation (``.,;:!?``) removed."""
    return " ".join(text.lower().split()).rstrip(_TRAILING_PUNCTUATION + " ")


def exact_match(prediction: str, reference: str) -> bool:
    return normalise_answer(prediction) == normalise_answer(reference)


# -------------------------------------------------------------------------------------------------
# Response-window batches: left padding puts every response at the right edge, so the LM head and the
# loss run over the last few positions only (the LM head is ~20% of SmolLM2's FLOPs per token).
# -------------------------------------------------------------------------------------------------


def collate_window(examples: Sequence[Encoded], pad_id: int) -> Batch:
    """Left-padded ``input_ids``/``attention_mask``, ``position_ids`` counting real tokens only, and
    ``labels`` for the last R positions only (R: the longest response; -100 on prompt and padding).
    ``tokens`` counts the positions with a loss, as :func:`bench.batching.collate` does; ``input_tokens``
    the non-padding positions the model reads (prompt included), which MFU is computed from."""
    import torch

    width = max(len(e) for e in examples)
    window = max(sum(1 for t in (e.token_labels or ()) if t != -100) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), window), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, width - len(e):] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[row, width - len(e):] = 1
        tail = (e.token_labels or ())[-window:]
        labels[row, window - len(tail):] = torch.tensor(tail, dtype=torch.long)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    tokens = int((labels != -100).sum())
    return Batch({"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels},
                 len(examples), tokens, int(mask.sum()))


def window_batches(examples: Sequence[Encoded], order: list[list[int]], pad_id: int) -> Iterator[Batch]:
    for idx in order:
        yield collate_window([examples[i] for i in idx], pad_id)


def response_window_lm(model: Any) -> Any:
    """Wrap a causal LM so that ``wrapper(**collate_window(...).tensors).loss`` is the mean cross-entropy
    over response tokens, with logits computed for the response window only (``logits_to_keep`` where the
    model supports it, else all positions, sliced). ``.logits`` are the window's, aligned with ``labels``.
    The wrapper holds the model as ``.lm``: its parameters are the model's."""
    import inspect
    import types

    import torch

    accepted = set(inspect.signature(model.forward).parameters)

    class ResponseWindowLM(torch.nn.Module):
        def __init__(self, lm: Any) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, labels: Any) -> Any:
            window = labels.shape[1]
            kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
            if "position_ids" in accepted:
                kwargs["position_ids"] = position_ids
            if "use_cache" in accepted:
                kwargs["use_cache"] = False
            if "logits_to_keep" in accepted:
                kwargs["logits_to_keep"] = window + 1
            logits = self.lm(**kwargs).logits[:, -(window + 1):-1]
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                     labels.reshape(-1), ignore_index=-100)
            return types.SimpleNamespace(loss=loss, logits=logits)

    return ResponseWindowLM(model)


def evaluate_loss(run: RunContext, model: Any, items: Sequence[SftItem], batch_size: int,
                  pad_id: int) -> tuple[float, int]:
    """Mean cross-entropy over response tokens of ``items`` (token-weighted) and the token count;
    ``model`` is a :func:`response_window_lm` wrapper. Under torch.distributed each rank takes its shard of
    the batches and the loss sum and token count are added over the ranks (exact)."""
    import torch

    from bench.training import parallel

    model.eval()
    examples = [it.encoded for it in items]
    order = sorted_order([len(e) for e in examples], batch_size)
    runs = [parallel.stand_in(b, order) for b in parallel.shard(order, run.dist)]
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    with parallel.no_grad(model):
        for (_, real), batch in zip(runs, progress.bar(window_batches(examples, [i for i, _ in runs], pad_id),
                                                       desc="eval loss", total=len(runs), unit="batch")):
            inputs = batch.to(run.device)
            with run.autocast():
                logits = model(**inputs).logits
            if not real:  # a stand-in batch: the other ranks still have batches
                continue
            labels = inputs["labels"]
            keep = labels != -100
            total += torch.nn.functional.cross_entropy(logits[keep].float(), labels[keep],
                                                       reduction="sum").double().cpu()
            count += batch.tokens
    summed, tokens = parallel.all_sum(run, [float(total), count])
    return summed / max(1, tokens), int(tokens)


def stop_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """EOS of the tokenizer and of the model's generation config (end-of-turn tokens included)."""
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and int(v) not in ids:
                ids.append(int(v))
    return ids


def generate(run: RunContext, model: Any, tokenizer: Any, items: Sequence[SftItem], batch_size: int,
             max_new_tokens: int, pad_id: int, desc: str = "generate") -> list[str]:
    """Greedy answers to the prompts of ``items``, batched by length with left padding, in input order.
    Under torch.distributed each rank answers its shard of the batches and every rank gets every answer; an
    FSDP-sharded model generates in lockstep (``synced_gpus``: its forward gathers parameters, a collective)."""
    import torch
    from transformers import GenerationConfig

    from bench.training import parallel

    model.eval()
    stops = stop_token_ids(tokenizer, model)
    gen_config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=pad_id, eos_token_id=stops or None)
    lockstep = {"synced_gpus": True} if run.dist is not None and parallel.is_sharded(model) else {}
    answers: dict[int, str] = {}
    order = sorted_order([len(it.prompt_ids) for it in items], batch_size)
    runs = [parallel.stand_in(b, order) for b in parallel.shard(order, run.dist)]
    with parallel.no_grad(model):
        for idx, real in progress.bar(runs, desc=desc, total=len(runs), unit="batch"):
            prompts = [items[i].prompt_ids for i in idx]
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for row, p in enumerate(prompts):
                ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[row, width - len(p):] = 1
            with run.autocast():
                out = model.generate(input_ids=ids.to(run.device), attention_mask=mask.to(run.device),
                                     generation_config=gen_config, **lockstep)
            if not real:
                continue
            for row, i in enumerate(idx):
                new = out[row, width:].tolist()
                end = next((k for k, t in enumerate(new) if t in stops), len(new))
                answers[i] = tokenizer.decode(new[:end], skip_special_tokens=True)
    for shard in parallel.all_gather(run, answers) if run.dist is not None else ():
        answers.update(shard)
    return [answers.get(i, "") for i in range(len(items))]


@dataclass(frozen=True)
class MatchScores:
    overall: float
    by_source: dict[str, float]
    hits: tuple[bool, ...]


def score(items: Sequence[SftItem], answers: Sequence[str]) -> MatchScores:
    """Exact match overall and per source."""
    hits = tuple(exact_match(a, it.example.output) for it, a in zip(items, answers, strict=True))
    by: dict[str, list[bool]] = {}
    for it, hit in zip(items, hits):
        by.setdefault(it.example.source, []).append(hit)
    return MatchScores(sum(hits) / max(1, len(hits)), {s: sum(v) / len(v) for s, v in sorted(by.items())}, hits)


def metric_suffix(source: str) -> str:
    """``rotten-tomatoes`` -> ``rotten_tomatoes``: a source name as part of a metric name."""
    return "".join(c if c.isalnum() else "_" for c in source.lower()).strip("_") or "source"


def sample_generations(items: Sequence[SftItem], before: Sequence[str], after: Sequence[str],
                       count: int) -> list[dict[str, str]]:
    """``count`` examples, taken round-robin across sources, with both generations."""
    by: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by.setdefault(it.example.source, []).append(i)
    picked: list[int] = []
    queues = [list(v) for _, v in sorted(by.items())]
    while len(picked) < count and any(queues):
        for q in queues:
            if q and len(picked) < count:
                picked.append(q.pop(0))
    return [{"source": items[i].example.source, "prompt": items[i].example.prompt,
             "reference": items[i].example.output, "before": before[i], "after": after[i]} for i in picked]


def write_generations(path: Path, items: Sequence[SftItem], before: Sequence[str], after: Sequence[str]) -> None:
    """Every held-out prompt with its reference and both generations, one JSON object a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for it, b, a in zip(items, before, after, strict=True):
            e = it.example
            fh.write(json.dumps({"source": e.source, "template": e.template, "prompt": e.prompt, "reference": e.output,
                                 "before": b, "after": a, "match_before": exact_match(b, e.output),
                                 "match_after": exact_match(a, e.output)}) + "\n")


# -------------------------------------------------------------------------------------------------
# Throughput over all input tokens (the meter's ``tokens`` are the response tokens, with a loss).
# -------------------------------------------------------------------------------------------------


def input_tokens_per_s(steps: Iterable[Any], phase: str = "train") -> float | None:
    """Non-padding input tokens per second over the timed steps of ``phase``."""
    return timed_rate([s for s in steps if s.phase == phase], "input_tokens")


# -------------------------------------------------------------------------------------------------
# Report.
# -------------------------------------------------------------------------------------------------


def generation_sections(results: Sequence[RunResult], width: int = 60) -> list[Section]:
    """One section per result with ``extra["generations"]``: prompt, reference, before and after."""
    from bench.results.report import Section

    sections = []
    for r in results:
        gens = r.extra.get("generations") if isinstance(r.extra, Mapping) else None
        if not gens:
            continue
        rows = tuple((g.get("source", ""), _short(g.get("prompt", ""), width), g.get("reference", ""),
                      _short(g.get("before", ""), 30), _short(g.get("after", ""), 30)) for g in gens)
        label = f"{r.label} " if r.label else ""
        sections.append(Section(f"Sample generations: {label}{r.strategy}",
                                ("source", "prompt", "reference", "before", "after"), rows,
                                "greedy answers to held-out prompts before and after fine-tuning; all of them "
                                "are in the run folder's generations.jsonl"))
    return sections


def _short(text: str, width: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"
