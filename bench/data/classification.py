"""Text classification data: the default Rotten Tomatoes snippets, CSV/TSV/JSONL files and hub datasets.

Everything is deterministic given its seed, prints nothing, and keeps track of where it came from
(``source``, ``sha256``, the original label values in ``label_map``) so results can record it.

Splits never share a group: Rotten Tomatoes snippets are grouped by movie, so no movie's reviews are
in two splits. The seed of a split is the *split* seed; keep it fixed across training seeds when
comparing runs, or the data changes along with the initialisation.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.core.errors import AssetError, DataError, UsageError
from bench.data.files import csv_records, read_text

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
_TABULAR_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
_INT_RE = re.compile(r"[+-]?\d+")
_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # a label cell that is a number


# ----------------------------------------------------------------------------------------------------
# Classification data
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextExample:
    """One labeled text; ``group`` keeps related examples (the same movie) in one split."""

    text: str
    label: int
    group: str


@dataclass(frozen=True)
class ClassificationData:
    """Three splits of labeled text. ``label_map``: original label value -> id; ``label_names[id]``."""

    name: str
    train: tuple[TextExample, ...]
    validation: tuple[TextExample, ...]
    test: tuple[TextExample, ...]
    label_names: tuple[str, ...]
    label_map: dict[str, int]
    source: str
    sha256: str | None

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split_sizes(self) -> dict[str, int]:
        return {split: len(getattr(self, split)) for split in SPLITS}

    def subset(
        self, train: int | None = None, validation: int | None = None, test: int | None = None, seed: int = 0
    ) -> ClassificationData:
        """Seeded random subsets of each split, stratified by label (None, or more than there is: keep all).

        The examples keep their original order; the same sizes and seed give the same subset.
        """
        sizes = {"train": train, "validation": validation, "test": test}
        picked = {
            split: _stratified_sample(getattr(self, split), size, seed=seed, salt=split)
            for split, size in sizes.items()
        }
        return replace(self, train=picked["train"], validation=picked["validation"], test=picked["test"])


def _stratified_sample(
    examples: tuple[TextExample, ...], size: int | None, *, seed: int, salt: str
) -> tuple[TextExample, ...]:
    if size is None or size >= len(examples):
        return examples
    if size < 0:
        raise UsageError(f"a subset of the {salt} split cannot have {size} examples; give a number >= 0")
    rng = random.Random(f"{seed}:{salt}")
    by_label: dict[int, list[int]] = {}
    for index, example in enumerate(examples):
        by_label.setdefault(example.label, []).append(index)
    # Largest-remainder apportionment: each label gets its share of ``size``.
    labels = sorted(by_label)
    exact = {label: size * len(by_label[label]) / len(examples) for label in labels}
    counts = {label: int(exact[label]) for label in labels}
    for label in sorted(labels, key=lambda lab: (counts[lab] - exact[lab], lab))[
        : size - sum(counts.values())
    ]:
        counts[label] += 1
    chosen: list[int] = []
    for label in labels:
        indices = by_label[label][:]
        rng.shuffle(indices)
        chosen.extend(indices[: counts[label]])
    return tuple(examples[i] for i in sorted(chosen))


def split_by_group(
    groups: Sequence[str], *, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Indices of (train, validation, test): whole groups, shuffled with ``seed``, fill test then validation.

    Each held-out split takes groups until it holds its fraction of the examples (at least one example
    when its fraction is above zero), so the sizes land close to the fractions even with uneven groups.
    """
    if not (
        0 <= validation_fraction < 1 and 0 <= test_fraction < 1 and validation_fraction + test_fraction < 1
    ):
        raise UsageError(
            f"validation_fraction={validation_fraction} and test_fraction={test_fraction} must each be in [0, 1) "
            "and leave some data for training"
        )
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    order = list(members)
    random.Random(seed).shuffle(order)
    n = len(groups)
    targets = [
        max(1, round(n * test_fraction)) if test_fraction > 0 else 0,
        max(1, round(n * validation_fraction)) if validation_fraction > 0 else 0,
    ]
    test: list[int] = []
    validation: list[int] = []
    train: list[int] = []
    for group in order:
        if len(test) < targets[0]:
            test.extend(members[group])
        elif len(validation) < targets[1]:
            validation.extend(members[group])
        else:
            train.extend(members[group])
    return sorted(train), sorted(validation), sorted(test)


def _normalise_space(text: str) -> str:
    return " ".join(text.split())


def _dedup_key(text: str) -> str:
    """Case, punctuation and spacing removed: the same sentence tokenised differently is the same."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


# ----------------------------------------------------------------------------------------------------
# Rotten Tomatoes (the default)
# ----------------------------------------------------------------------------------------------------

ROTTEN_TOMATOES_LABELS = ("rotten", "fresh")


def rotten_tomatoes_reviews() -> list[TextExample]:
    """Every critic snippet of the Rotten Tomatoes corpus, plot summaries dropped, in file order.

    Whitespace inside a snippet is collapsed; duplicates are kept (``load_rotten_tomatoes`` drops them).
    """
    from bench.data.assets import asset_path

    path = asset_path("rotten-tomatoes")
    text = bz2.decompress(path.read_bytes()).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    needed = {"category", "text", "movie_name"}
    if not needed <= set(reader.fieldnames or ()):
        raise AssetError(
            f"{path} has columns {reader.fieldnames}, expected {sorted(needed)}; the cached asset is not the "
            "pinned one: delete its folder and run `bench assets pull rotten-tomatoes`"
        )
    label_of = {name: label for label, name in enumerate(ROTTEN_TOMATOES_LABELS)}
    reviews: list[TextExample] = []
    for row_number, row in enumerate(reader, start=2):
        category = row["category"]
        if category == "plot":  # a plot summary, not a review
            continue
        if category not in label_of:
            raise AssetError(
                f"{path} row {row_number}: unknown category {category!r}; expected fresh, rotten, plot"
            )
        snippet = _normalise_space(row["text"])
        if snippet:
            reviews.append(TextExample(text=snippet, label=label_of[category], group=row["movie_name"]))
    return reviews


def load_rotten_tomatoes(seed: int = 0) -> ClassificationData:
    """Rotten Tomatoes critic snippets, fresh=1 / rotten=0, split ~80/10/10 by movie with ``seed``.

    Duplicate snippets (same words; 59 in the corpus) are kept once, at their first occurrence, so the
    same sentence cannot sit in two splits.
    """
    from bench.data.assets import asset_manifest, default_specs

    reviews = rotten_tomatoes_reviews()
    seen: set[str] = set()
    unique: list[TextExample] = []
    for example in reviews:
        key = _dedup_key(example.text)
        if key not in seen:
            seen.add(key)
            unique.append(example)
    train, validation, test = split_by_group(
        [ex.group for ex in unique], validation_fraction=0.1, test_fraction=0.1, seed=seed
    )
    spec = default_specs()["rotten-tomatoes"]
    manifest = asset_manifest("rotten-tomatoes")
    return ClassificationData(
        name="rotten-tomatoes",
        train=tuple(unique[i] for i in train),
        validation=tuple(unique[i] for i in validation),
        test=tuple(unique[i] for i in test),
        label_names=ROTTEN_TOMATOES_LABELS,
        label_map={name: label for label, name in enumerate(ROTTEN_TOMATOES_LABELS)},
        source=f"{spec.requirement}:{spec.main} (split by movie, seed {seed})",
        sha256=manifest.files[spec.main].sha256,
    )


# ----------------------------------------------------------------------------------------------------
# User files and hub datasets
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    text: str
    label: str  # the original value, as a string
    group: str
    split: str | None
    where: str  # "row 5" / "line 5", for error messages


def _label_key(value: Any, where: str, origin: str) -> str:
    """The label as a string key. The same rule in every format: a label is a string or an integer; a
    number that is not a whole one (``0.5`` in JSONL, or the CSV cell ``0.5``) is refused, as it is a
    score, not a class (a float label column once became 87 classes with accuracy 0)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if _INT_RE.fullmatch(text):
            return str(int(text))  # "+1", "01" and 1 are one class, as in JSON
        if _NUMBER_RE.fullmatch(text):
            number = float(text)
            if not number.is_integer():
                raise DataError(f"{origin}: {where} has label {text!r}, a number that is not a whole one; labels "
                                "must be strings or integers (classification only: is the label column a score?)")
            return str(int(number))
        return text
    if value is None or value == "":
        raise DataError(f"{origin}: {where} has no label; fill it in or drop the row")
    raise DataError(
        f"{origin}: {where} has label {value!r}; labels must be strings or integers (classification only)"
    )


def _label_map(keys: Iterable[str]) -> dict[str, int]:
    unique = set(keys)
    numeric = all(_INT_RE.fullmatch(key) for key in unique)
    ordered = sorted(unique, key=int) if numeric else sorted(unique)
    return {key: index for index, key in enumerate(ordered)}


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for each row of a CSV/TSV or each object of a JSONL (or JSON array) file."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from csv_records(path, delimiter="\t" if suffix == ".tsv" else ",")
        return
    if suffix not in (".jsonl", ".json"):
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'}; give a .csv, .tsv or .jsonl file"
        )
    text = read_text(path)
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); fix the file") from exc
        for number, item in enumerate(items, start=1):
            yield f"item {number}", _object(item, path, f"item {number}")
        return
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: line {line_number} is not JSON ({exc.msg}); each line must be one JSON object"
            ) from exc
        yield f"line {line_number}", _object(item, path, f"line {line_number}")


def _object(item: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise DataError(f"{path}: {where} is a {type(item).__name__}, not a JSON object with named fields")
    return item


def _read_rows(path: Path, text_column: str, label_column: str, group_column: str | None) -> list[_Row]:
    rows: list[_Row] = []
    origin = str(path)
    for where, record in _records(path):
        for column, role in ((text_column, "text"), (label_column, "label"), (group_column, "group")):
            if column is not None and column not in record:
                present = ", ".join(map(repr, record)) or "none"
                raise DataError(
                    f"{path}: {where} has no {role} column {column!r} (columns: {present}); "
                    f"rename it or choose another {role} column"
                )
        text = record[text_column]
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                f"{origin}: {where} has an empty or non-text {text_column!r}; fill it in or drop the row"
            )
        split = record.get("split")
        rows.append(
            _Row(
                text=text,
                label=_label_key(record[label_column], where, origin),
                group=str(record[group_column]) if group_column else f"{path.name}:{where}",
                split=None if split is None else str(split),
                where=where,
            )
        )
    if not rows:
        raise DataError(f"{path}: no rows; the file must hold labeled examples")
    return rows


def _assemble(
    name: str,
    rows: list[_Row],
    *,
    origin: str,
    source: str,
    sha256: str | None,
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    label_map: Mapping[str, int] | None = None,
    label_names: tuple[str, ...] | None = None,
) -> ClassificationData:
    if label_map is None:
        label_map = _label_map(row.label for row in rows)
    if len(label_map) < 2:
        only = next(iter(label_map), "?")
        raise DataError(
            f"{origin}: every example has the label {only!r}; classification needs at least two labels "
            "(is the label column the right one?)"
        )
    if label_names is None:
        label_names = tuple(sorted(label_map, key=label_map.__getitem__))
    unknown = next((row for row in rows if row.label not in label_map), None)
    if unknown is not None:
        raise DataError(
            f"{origin}: {unknown.where} has label {unknown.label!r}, not one of the dataset's labels"
        )
    examples = [TextExample(text=row.text, label=label_map[row.label], group=row.group) for row in rows]
    explicit = [row.split for row in rows]
    if all(split is None for split in explicit):
        parts = split_by_group(
            [ex.group for ex in examples],
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        split_examples = [[examples[i] for i in part] for part in parts]
    else:
        split_examples = _explicit_splits(rows, examples, origin, seed, validation_fraction, test_fraction)
    train, validation, test = (tuple(part) for part in split_examples)
    return ClassificationData(
        name=name,
        train=train,
        validation=validation,
        test=test,
        label_names=label_names,
        label_map=dict(label_map),
        source=source,
        sha256=sha256,
    )


def _explicit_splits(
    rows: list[_Row],
    examples: list[TextExample],
    origin: str,
    seed: int,
    validation_fraction: float,
    test_fraction: float,
) -> list[list[TextExample]]:
    """Use the ``split`` column; a held-out split it lacks is carved from train (by group) with ``seed``."""
    parts: dict[str, list[TextExample]] = {split: [] for split in SPLITS}
    for row, example in zip(rows, examples, strict=True):
        split = _SPLIT_ALIASES.get((row.split or "").strip().lower())
        if split is None:
            raise DataError(f"{origin}: {row.where} has split {row.split!r}; use train, validation or test")
        parts[split].append(example)
    if not parts["train"]:
        raise DataError(f"{origin}: no row has split 'train'; mark the training rows with split=train")
    carve_validation = validation_fraction if not parts["validation"] else 0.0
    carve_test = test_fraction if not parts["test"] else 0.0
    if carve_validation or carve_test:
        train = parts["train"]
        keep, validation, test = split_by_group(
            [ex.group for ex in train],
            validation_fraction=carve_validation,
            test_fraction=carve_test,
            seed=seed,
        )
        parts["train"] = [train[i] for i in keep]
        parts["validation"] = parts["validation"] or [train[i] for i in validation]
        parts["test"] = parts["test"] or [train[i] for i in test]
    return [parts[split] for split in SPLITS]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_classification_file(
    path: str | os.PathLike[str],
    text_column: str = "text",
    label_column: str = "label",
    seed: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    *,
    group_column: str | None = None,
) -> ClassificationData:
    """A CSV/TSV or JSONL file of labeled text. Labels (strings or ints) map to ids in sorted order.

    A ``split`` column (train/validation/test) is used when present; otherwise the rows are split at
    random with ``seed`` (by ``group_column`` when given, so no group is in two splits).
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(
            f"{file}: file not found; give a CSV or JSONL file with {text_column!r} and {label_column!r} "
            "columns, or a hub dataset id"
        )
    rows = _read_rows(file, text_column, label_column, group_column)
    return _assemble(
        file.name,
        rows,
        origin=str(file),
        source=f"file:{file.resolve()}",
        sha256=_sha256_file(file),
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
    )


def load_classification_hub(
    dataset_id: str,
    text_column: str = "text",
    label_column: str = "label",
    seed: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    *,
    config_name: str | None = None,
    revision: str | None = None,
) -> ClassificationData:
    """A Hugging Face hub dataset through ``datasets.load_dataset``; its train/validation/test splits
    when present (a test split without labels counts as absent), else carved from train with ``seed``.
    A ``ClassLabel`` label column keeps its own ids and names."""
    try:
        import datasets
    except ImportError as exc:
        raise UsageError(
            f"loading the hub dataset '{dataset_id}' needs the datasets package: pip install datasets"
        ) from exc
    try:
        loaded = datasets.load_dataset(dataset_id, config_name, revision=revision)
    except Exception as exc:  # the hub, the network and the loader scripts raise many kinds
        raise DataError(
            f"hub dataset '{dataset_id}' could not be loaded ({type(exc).__name__}: {exc}); check the id "
            "(no local file has this name either), the network, or the datasets cache"
        ) from exc
    if "train" not in loaded:
        raise DataError(f"hub dataset '{dataset_id}' has no 'train' split (splits: {', '.join(loaded)})")
    origin = f"hub dataset '{dataset_id}'"
    feature = loaded["train"].features.get(label_column)
    class_names = tuple(getattr(feature, "names", None) or ()) or None
    rows: list[_Row] = []
    for split_name in loaded:
        split = _SPLIT_ALIASES.get(split_name)
        if split is None:
            continue
        dataset = loaded[split_name]
        missing = [col for col in (text_column, label_column) if col not in dataset.column_names]
        if missing:
            raise DataError(
                f"{origin}, split {split_name}: no column {missing[0]!r} (columns: {', '.join(dataset.column_names)});"
                " choose the text and label columns"
            )
        labels = dataset[label_column]
        if split == "test" and all(label is None or label == -1 for label in labels):
            continue  # an unlabeled test split (GLUE style): carve one from train instead
        for index, (text, label) in enumerate(zip(dataset[text_column], labels, strict=True)):
            where = f"split {split_name} row {index}"
            rows.append(
                _Row(str(text), _label_key(label, where, origin), f"{split_name}:{index}", split, where)
            )
    label_map = None
    if class_names is not None:
        label_map = {str(index): index for index in range(len(class_names))}
    return _assemble(
        dataset_id,
        rows,
        origin=origin,
        source=f"hub:{dataset_id}"
        + (f"/{config_name}" if config_name else "")
        + (f"@{revision}" if revision else ""),
        sha256=None,
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        label_map=label_map,
        label_names=class_names,
    )


def looks_like_path(spec: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything with a file suffix, a leading ./ ~ /, or more
    than one separator is meant as a local path."""
    if spec.lower().endswith(_TABULAR_SUFFIXES):
        return True
    if spec.startswith(("/", ".", "~")) or "\\" in spec:
        return True
    return spec.count("/") + (spec.count(os.sep) if os.sep != "/" else 0) > 1


def load_classification(
    spec: str | None, *, text_column: str = "text", label_column: str = "label", seed: int = 0
) -> ClassificationData:
    """None: the default Rotten Tomatoes; an existing file: that file; otherwise a hub dataset id."""
    if spec is None:
        return load_rotten_tomatoes(seed=seed)
    if not spec.strip():
        raise DataError(
            "empty dataset name; give a CSV or JSONL file, a hub dataset id, or nothing for the default"
        )
    path = Path(spec).expanduser()
    if path.is_file():
        return load_classification_file(path, text_column=text_column, label_column=label_column, seed=seed)
    if looks_like_path(spec):
        raise DataError(
            f"{spec}: file not found; give an existing CSV or JSONL file, a hub dataset id (owner/name), "
            "or nothing for the default Rotten Tomatoes data"
        )
    return load_classification_hub(spec, text_column=text_column, label_column=label_column, seed=seed)
