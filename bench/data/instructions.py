"""Instruction data for supervised fine-tuning: the default instruction set (written from templates over
the labeled sentiment data, plus exactly computed additions), Alpaca-format JSONL files and hub
datasets, split and cut deterministically.

Everything is deterministic given its seed and keeps track of where it came from (``source``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import AssetError, DataError, UsageError
from bench.data.classification import (
    ROTTEN_TOMATOES_LABELS,
    SPLITS,
    _dedup_key,
    _normalise_space,
    load_rotten_tomatoes,
    split_by_group,
)
from bench.data.files import read_text


@dataclass(frozen=True)
class InstructionExample:
    """An instruction, an optional input and the expected output; ``source`` and ``template`` say where
    it came from and which prompt template wrote it."""

    instruction: str
    input: str
    output: str
    source: str
    template: str

    @property
    def prompt(self) -> str:
        """The user turn: the instruction, then the input after a blank line when there is one."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


@dataclass(frozen=True)
class InstructionData:
    name: str
    train: tuple[InstructionExample, ...]
    test: tuple[InstructionExample, ...]
    source: str


def load_alpaca_jsonl(path: str | os.PathLike[str]) -> list[InstructionExample]:
    """Alpaca-format JSONL: one ``{"instruction", "input" (optional), "output"}`` object per line."""
    file = Path(path)
    if not file.is_file():
        raise DataError(
            f"{file}: file not found; give a JSONL file of {{instruction, input, output}} objects"
        )
    examples: list[InstructionExample] = []
    for line_number, line in enumerate(read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{file}: line {line_number} is not JSON ({exc.msg}); one JSON object per line"
            ) from exc
        if not isinstance(item, dict):
            raise DataError(f"{file}: line {line_number} is a {type(item).__name__}, not a JSON object")
        for field in ("instruction", "output"):
            if not isinstance(item.get(field), str) or not item[field].strip():
                raise DataError(
                    f"{file}: line {line_number} has no {field!r} text; Alpaca format needs instruction and "
                    "output (input is optional)"
                )
        extra = item.get("input") or ""
        if not isinstance(extra, str):
            raise DataError(
                f"{file}: line {line_number} has a non-text 'input'; make it a string or leave it out"
            )
        examples.append(
            InstructionExample(
                item["instruction"], extra, item["output"], source=file.name, template="alpaca"
            )
        )
    if not examples:
        raise DataError(f"{file}: no examples; the file is empty")
    return examples


def load_instruction_file(
    path: str | os.PathLike[str], *, seed: int = 0, test_fraction: float = 0.1
) -> InstructionData:
    """An Alpaca JSONL file split at random with ``seed`` into train and test."""
    examples = load_alpaca_jsonl(path)
    train, _, test = split_by_group(
        [str(i) for i in range(len(examples))],
        validation_fraction=0.0,
        test_fraction=test_fraction,
        seed=seed,
    )
    file = Path(path)
    return InstructionData(
        name=file.name,
        train=tuple(examples[i] for i in train),
        test=tuple(examples[i] for i in test),
        source=f"file:{file.resolve()} (seed {seed})",
    )


_RT_TEMPLATES = {
    "rt-fresh-rotten-v1": "Is this movie review snippet fresh or rotten?",
    "rt-fresh-rotten-v2": "A critic wrote the snippet below. Did the critic rate the movie fresh or rotten? "
    "Answer with one word.",
}
_VADER_TEMPLATES = {
    "vader-sentiment-v1": "Is the sentiment of this movie review sentence positive or negative?",
    "vader-sentiment-v2": "Classify the sentiment of the sentence below as positive or negative.",
}
VADER_MIN_ABS_MEAN = 1.0


@dataclass(frozen=True)
class RatedSentence:
    """A VADER ground-truth sentence: mean human rating on -4..+4."""

    sentence_id: int
    mean_rating: float
    text: str


def vader_movie_sentences() -> list[RatedSentence]:
    """The 10,605 Pang & Lee movie-review sentences rated by >= 20 people (Hutto & Gilbert, ICWSM 2014)."""
    from bench.data.assets import asset_path

    path = asset_path("vader")
    sentences: list[RatedSentence] = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) != 3:
            raise AssetError(
                f"{path} line {line_number}: expected id, mean rating and text separated by tabs; the cached "
                "asset is not the pinned one: delete its folder and run `bench assets pull vader`"
            )
        sentences.append(RatedSentence(int(parts[0]), float(parts[1]), _normalise_space(parts[2])))
    return sentences


def _share(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _balanced(
    pool: Sequence[tuple[str, str]], count: int, rng: random.Random, what: str
) -> list[tuple[str, str]]:
    """``count`` (text, answer) pairs with the answers as even as possible, drawn at random."""
    by_answer: dict[str, list[tuple[str, str]]] = {}
    for item in pool:
        by_answer.setdefault(item[1], []).append(item)
    answers = sorted(by_answer)
    order = answers[:]
    rng.shuffle(order)  # which answer gets the odd one out
    wanted = dict(zip(order, _share(count, len(answers)), strict=True))
    picked: list[tuple[str, str]] = []
    for answer in answers:
        if wanted[answer] > len(by_answer[answer]):
            raise UsageError(
                f"{what}: {wanted[answer]} examples with answer {answer!r} requested, only "
                f"{len(by_answer[answer])} available; ask for fewer instruction examples"
            )
        picked.extend(rng.sample(by_answer[answer], wanted[answer]))
    return picked


def _templated(
    items: Iterable[tuple[str, str]], templates: Mapping[str, str], source: str, rng: random.Random
) -> list[InstructionExample]:
    names = sorted(templates)
    out = []
    for text, answer in items:
        template = rng.choice(names)
        out.append(InstructionExample(templates[template], text, answer, source=source, template=template))
    return out


def _arithmetic(n_train: int, n_test: int, rng: random.Random) -> tuple[list[InstructionExample], ...]:
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    if n_train + n_test > len(pairs):
        raise UsageError(
            f"arithmetic: {n_train + n_test} examples requested, only {len(pairs)} distinct sums"
        )
    chosen = rng.sample(pairs, n_train + n_test)  # distinct pairs: no test question is in train

    def make(a: int, b: int) -> InstructionExample:
        if rng.random() < 0.5:
            return InstructionExample(f"Add two numbers: {a} + {b} =", "", str(a + b), "arithmetic", "add-v1")
        return InstructionExample(
            "What is the sum of these two numbers? Answer with the number only.",
            f"{a} + {b}",
            str(a + b),
            "arithmetic",
            "add-v2",
        )

    return [make(a, b) for a, b in chosen[n_test:]], [make(a, b) for a, b in chosen[:n_test]]


def build_default_instructions(seed: int = 0, n_train: int = 600, n_test: int = 150) -> InstructionData:
    """An instruction set written from templates over real labels, a third from each source:

    - ``rotten-tomatoes``: "fresh or rotten?" over critic snippets (train from the default split's train,
      test from its test split);
    - ``vader-movie-reviews``: "positive or negative?" over the VADER movie sentences with
      |mean rating| >= 1.0. Almost all of them are also Rotten Tomatoes snippets, so each follows its
      snippet's split (those in the validation split are left out); the rest are split by a hash of
      their text, one in ten to test;
    - ``arithmetic``: two-digit additions with exactly computed sums, no question in both splits.

    Answers are balanced within each source; ``seed`` picks the examples, templates and order.
    """
    rng = random.Random(f"instructions:{seed}")
    rt = load_rotten_tomatoes()
    rt_split = {}
    for split in SPLITS:
        for example in getattr(rt, split):
            rt_split[_dedup_key(example.text)] = split
    rt_pool = {
        split: [(ex.text, ROTTEN_TOMATOES_LABELS[ex.label]) for ex in getattr(rt, split)]
        for split in ("train", "test")
    }
    vader_pool: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for sentence in vader_movie_sentences():
        if abs(sentence.mean_rating) < VADER_MIN_ABS_MEAN:
            continue
        key = _dedup_key(sentence.text)
        found = rt_split.get(key)
        if found is not None:
            split = found
        else:
            split = "test" if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10 == 0 else "train"
        if split in vader_pool:
            vader_pool[split].append((sentence.text, "positive" if sentence.mean_rating > 0 else "negative"))
    train_counts, test_counts = _share(n_train, 3), _share(n_test, 3)
    arithmetic_train, arithmetic_test = _arithmetic(train_counts[2], test_counts[2], rng)
    train = [
        *_templated(
            _balanced(rt_pool["train"], train_counts[0], rng, "rotten-tomatoes train"),
            _RT_TEMPLATES,
            "rotten-tomatoes",
            rng,
        ),
        *_templated(
            _balanced(vader_pool["train"], train_counts[1], rng, "vader-movie-reviews train"),
            _VADER_TEMPLATES,
            "vader-movie-reviews",
            rng,
        ),
        *arithmetic_train,
    ]
    test = [
        *_templated(
            _balanced(rt_pool["test"], test_counts[0], rng, "rotten-tomatoes test"),
            _RT_TEMPLATES,
            "rotten-tomatoes",
            rng,
        ),
        *_templated(
            _balanced(vader_pool["test"], test_counts[1], rng, "vader-movie-reviews test"),
            _VADER_TEMPLATES,
            "vader-movie-reviews",
            rng,
        ),
        *arithmetic_test,
    ]
    rng.shuffle(train)
    rng.shuffle(test)
    from bench.data.assets import default_specs

    specs = default_specs()
    return InstructionData(
        name="default-instructions",
        train=tuple(train),
        test=tuple(test),
        source=(
            f"rotten-tomatoes ({specs['rotten-tomatoes'].requirement}), vader-movie-reviews "
            f"({specs['vader'].requirement}, Hutto & Gilbert ICWSM 2014), arithmetic; seed {seed}"
        ),
    )


DEFAULT_POOL = (3000, 300)  # the default set is built at this size, then cut: see load_instruction_data


def load_instruction_data(spec: str | None, *, seed: int, train_samples: int, eval_samples: int,
                          test_fraction: float = 0.1) -> InstructionData:
    """None: the default set (:func:`bench.build_default_instructions`); an existing file: Alpaca
    JSONL split with ``seed``; else a hub dataset id. ``train_samples``/``eval_samples`` > 0 cut the splits.

    The default set is always built with ``DEFAULT_POOL`` (3000 train / 300 test; larger only when more
    is asked for) and cut to the first ``train_samples``/``eval_samples`` taken round-robin by source, so
    the held-out prompts do not change with ``train_samples`` and a larger cut holds every smaller one.
    Files and hub sets are cut to seeded random subsets.
    """
    if spec is None:
        sizes = (max(train_samples, DEFAULT_POOL[0]), max(eval_samples, DEFAULT_POOL[1]))
        pool = build_default_instructions(seed=seed, n_train=sizes[0], n_test=sizes[1])
        train, test = _round_robin(pool.train, train_samples), _round_robin(pool.test, eval_samples)
        return InstructionData(pool.name, train, test, f"{pool.source}; the first {len(train)} train / "
                               f"{len(test)} test prompts (round-robin by source) of a {sizes[0]}/{sizes[1]} pool")
    if not spec.strip():
        raise DataError("--dataset '': empty; give an Alpaca JSONL file, a hub dataset id, or nothing for the default")
    path = Path(spec).expanduser()
    if path.is_file():
        loaded = load_instruction_file(path, seed=seed, test_fraction=test_fraction)
    elif spec.lower().endswith((".jsonl", ".json")) or spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise DataError(f"--dataset {spec}: file not found; give an Alpaca JSONL file of "
                        "{instruction, input, output} objects, a hub dataset id, or nothing for the default")
    else:
        loaded = load_instruction_hub(spec, seed=seed, test_fraction=test_fraction)
    return InstructionData(loaded.name, _subset(loaded.train, train_samples, seed, "train"),
                           _subset(loaded.test, eval_samples, seed, "test"), loaded.source)


def load_instruction_hub(dataset_id: str, *, seed: int, test_fraction: float = 0.1) -> InstructionData:
    """A hub dataset with ``instruction``, ``output`` and optional ``input`` columns (Alpaca style);
    its ``test`` split when it has one, else ``test_fraction`` of ``train`` carved with ``seed``."""
    try:
        import datasets
    except ImportError:
        raise UsageError(f"--dataset {dataset_id}: loading a hub dataset needs the datasets package: "
                         "pip install datasets (or pass an Alpaca JSONL file)") from None
    try:
        loaded = datasets.load_dataset(dataset_id)
    except Exception as exc:  # the hub, the network and loader scripts raise many kinds
        raise DataError(f"hub dataset '{dataset_id}' could not be loaded ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); check the id, the "
                        "network or the datasets cache") from None
    if "train" not in loaded:
        raise DataError(f"hub dataset '{dataset_id}' has no 'train' split (splits: {', '.join(loaded)})")

    def convert(split: str) -> list[InstructionExample]:
        table = loaded[split]
        missing = [c for c in ("instruction", "output") if c not in table.column_names]
        if missing:
            raise DataError(f"hub dataset '{dataset_id}', split {split}: no column {missing[0]!r} (columns: "
                            f"{', '.join(table.column_names)}); sft needs instruction, output and optional input")
        inputs = table["input"] if "input" in table.column_names else [""] * len(table)
        return [InstructionExample(str(i), str(x or ""), str(o), source=dataset_id, template="alpaca")
                for i, x, o in zip(table["instruction"], inputs, table["output"], strict=True)]

    train = convert("train")
    if "test" in loaded:
        test = convert("test")
    else:
        rng = random.Random(f"{seed}:hub-test")
        order = list(range(len(train)))
        rng.shuffle(order)
        cut = max(1, round(len(train) * test_fraction))
        test = [train[i] for i in sorted(order[:cut])]
        train = [train[i] for i in sorted(order[cut:])]
    return InstructionData(dataset_id, tuple(train), tuple(test), f"hub:{dataset_id} (seed {seed})")


def _round_robin(examples: tuple[InstructionExample, ...], size: int) -> tuple[InstructionExample, ...]:
    """The first ``size`` examples taken in turn from each source (sources balanced), in their original order."""
    if size <= 0 or size >= len(examples):
        return examples
    by_source: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_source.setdefault(e.source, []).append(i)
    queues = [by_source[s] for s in sorted(by_source)]
    picked: list[int] = []
    depth = 0
    while len(picked) < size:
        for q in queues:
            if depth < len(q) and len(picked) < size:
                picked.append(q[depth])
        depth += 1
    return tuple(examples[i] for i in sorted(picked))


def _subset(examples: tuple[InstructionExample, ...], size: int, seed: int, salt: str) -> tuple[InstructionExample, ...]:
    if size <= 0 or size >= len(examples):
        return examples
    picked = sorted(random.Random(f"{seed}:sft-{salt}").sample(range(len(examples)), size))
    return tuple(examples[i] for i in picked)
