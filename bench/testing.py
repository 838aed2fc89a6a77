"""Testing helpers for strategy authors: tiny offline models and data, and a contract check.

Everything in ``__all__`` is public API (see docs/writing-plugins.md, "Testing with bench.testing")::

    from bench.testing import check_strategy

    def test_my_strategy_meets_the_contract(tmp_path):
        report = check_strategy("my-strategy", tmp_path=tmp_path, options={"epochs": 1})
        assert report.result.metrics["test_accuracy"] >= 0.0

:func:`check_strategy` runs a strategy through bench's own runner, in an isolated run process by
default, on a tiny random model built on the spot (no download, a few seconds on a CPU), then checks
the result against the contract (:data:`CHECKS`). It raises :class:`ContractError` listing every
problem, each with what to fix, or returns a :class:`ContractReport`.

The frozen-parameter check needs no help from the strategy: this module is also a bench plugin
(``-p bench.testing``, which :func:`check_strategy` adds, and which ``bench run`` accepts too) whose
``bench_run_strategy`` wrapper installs a global forward pre-hook
(``torch.nn.modules.module.register_module_forward_pre_hook``) for the duration of the run. The first
call of a module that holds parameters and is not part of a model already seen makes it a watched
model, and a CPU copy of its parameters is kept. After the strategy returns, every parameter of each
watched model that ``StrategyOutput.trained_parameters`` does not name must be bit-identical to its
copy. Names are those of ``model.named_parameters()`` of the called model, or of a model inside it:
a wrapper's prefix is allowed (``lm.model.x.weight`` matches a declared ``model.x.weight``, as with
bench.sft's loss wrapper); for a peft model they read ``base_model.model...lora_A.default.weight``.
The copy is taken at the model's first call (before the first loss, so after the strategy froze what
it freezes). The plugin writes its findings to ``<run folder>/bench-testing.json``; the copy doubles
the parameters' memory on the CPU, which is nothing on the tiny models this kit is for.

It is also a pytest plugin: ``pytest_plugins = ["bench.testing"]`` in a ``conftest.py`` gives the
``bench_check`` fixture (:func:`check_strategy` bound to the test's ``tmp_path``).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.hookimpl import hookimpl

if TYPE_CHECKING:
    from bench.results import RunResult
    from bench.run import RunContext
    from bench.strategy import Strategy

__all__ = [
    "CHECKS",
    "ENV_ISOLATE",
    "REPORT_FILENAME",
    "ContractError",
    "ContractReport",
    "FrozenCheck",
    "WatchedModel",
    "bench_check",
    "check_result",
    "check_strategy",
    "default_assets",
    "tiny_alpaca_jsonl",
    "tiny_bert",
    "tiny_llama",
    "tiny_sentiment_csv",
]

REPORT_FILENAME = "bench-testing.json"
ENV_ISOLATE = "BENCH_CHECK_ISOLATE"
PLUGIN_MODULE = "bench.testing"

CHECKS = (
    "the strategy is registered and its config resolves from the given options",
    "isolated (default): the run process finds the strategy by name and its result survives JSON",
    "status is 'passed'",
    "metrics is not empty; every value is a finite float; primary_metric is one of them",
    "params: 0 <= trainable <= total, total > 0, every byte count >= 0",
    "phases: at least one; wall_s finite and >= 0; memory figures None or >= 0",
    "steps: at least one (wrap each step in run.meter.step); every step took seconds > 0, "
    "with samples and tokens >= 0",
    "extra is JSON-serialisable",
    "every parameter of a model the strategy called that is not in trained_parameters is bit-identical "
    "after the run",
)

# -------------------------------------------------------------------------------------------------
# Tiny models and data, built offline in well under a second each.
# -------------------------------------------------------------------------------------------------


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Writing model shards" bars from save_pretrained in the tests of plugin authors."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()

POSITIVE = ("good", "great", "fine", "superb", "lovely", "fun", "brilliant", "moving")
NEGATIVE = ("bad", "awful", "dull", "boring", "poor", "weak", "messy", "tedious")
FILLER = ("the", "movie", "film", "was", "a", "plot", "story", "very", "quite", "and")
_BERT_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_LLAMA_SPECIAL = ("<unk>", "<s>", "</s>", "<pad>")


def tiny_bert(folder: str | Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random BERT (2 blocks, hidden size 32, ~19k parameters) and its WordPiece tokenizer
    over the words of :func:`tiny_sentiment_csv` into ``folder``; return the folder (``--model``)."""
    import inspect

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = [*_BERT_SPECIAL, *POSITIVE, *NEGATIVE, *FILLER]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    else:  # pragma: no cover - transformers 4
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(folder)
    config = BertConfig(vocab_size=len(words), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    with torch.random.fork_rng(), _quiet_transformers():
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(folder)
    return folder


def tiny_sentiment_csv(path: str | Path, *, rows: int = 96, seed: int = 0) -> Path:
    """Write a learnable two-class CSV (``text``, ``label`` = pos/neg): filler words plus two
    sentiment words; return the path (``--dataset``)."""
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(rows):
            label = i % 2
            words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label else NEGATIVE, 2)
            rng.shuffle(words)
            writer.writerow([" ".join(words), "pos" if label else "neg"])
    return path


def _alpaca_rows(rows: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        if i % 2 == 0:
            label = (i // 2) % 2
            words = rng.sample(FILLER, 3) + rng.sample(POSITIVE if label else NEGATIVE, 1)
            rng.shuffle(words)
            out.append({"instruction": "Is the sentiment of this sentence positive or negative?",
                        "input": " ".join(words), "output": "positive" if label else "negative"})
        else:
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            out.append({"instruction": f"What is {a} plus {b}?", "input": "", "output": str(a + b)})
    return out


def tiny_alpaca_jsonl(path: str | Path, *, rows: int = 64, seed: int = 0) -> Path:
    """Write an Alpaca-format JSONL file (``instruction``, ``input``, ``output``): sentiment of a
    short sentence and one-digit additions; return the path (``--dataset`` of causal-lm strategies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in _alpaca_rows(rows, seed)), encoding="utf-8")
    return path


def tiny_llama(folder: str | Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random Llama (2 blocks, hidden size 32) with a byte-level BPE tokenizer trained on the
    Alpaca prompts of :func:`tiny_alpaca_jsonl` (no chat template: prompts use the Alpaca format)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from bench.sft import ALPACA_NO_INPUT, ALPACA_WITH_INPUT

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = [ALPACA_WITH_INPUT.format(**r) + r["output"] if r["input"] else
              ALPACA_NO_INPUT.format(instruction=r["instruction"]) + r["output"] for r in _alpaca_rows(256, seed)]
    corpus += [" ".join(POSITIVE + NEGATIVE + FILLER)] * 4
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(_LLAMA_SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer=trainer)
    bos = bpe.token_to_id("<s>")
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    tok.save_pretrained(folder)
    config = LlamaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=2 * hidden,
                         max_position_embeddings=512, bos_token_id=bos, eos_token_id=bpe.token_to_id("</s>"),
                         pad_token_id=bpe.token_to_id("<pad>"), tie_word_embeddings=False)
    with torch.random.fork_rng(), _quiet_transformers():
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder


_ASSETS: dict[str, tuple[Path, Path]] = {}


def default_assets(task: str) -> tuple[Path, Path]:
    """The tiny model and data :func:`check_strategy` uses for ``task``: built once per process in a
    temporary folder (removed at exit) and shared by every check, since strategies only read them."""
    if task not in _ASSETS:
        import atexit
        import shutil

        folder = Path(tempfile.mkdtemp(prefix=f"bench-tiny-{task}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        if task == "causal-lm":
            _ASSETS[task] = tiny_llama(folder / "tiny-llama"), tiny_alpaca_jsonl(folder / "tiny-alpaca.jsonl")
        else:
            _ASSETS[task] = tiny_bert(folder / "tiny-bert"), tiny_sentiment_csv(folder / "tiny-sentiment.csv")
    return _ASSETS[task]


# -------------------------------------------------------------------------------------------------
# The frozen-parameter watch: a bench plugin (``-p bench.testing``) run inside the run process.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchedModel:
    """One model the strategy called: how many parameter tensors it has, how many were declared
    trained, which undeclared ones changed (each must be empty to pass) and how many declared ones did."""

    type: str
    parameters: int
    declared_trained: int
    changed_undeclared: tuple[str, ...] = ()
    changed_trained: int = 0

    @property
    def frozen(self) -> int:
        return self.parameters - self.declared_trained


@dataclass(frozen=True)
class FrozenCheck:
    """What the watch saw: the models called, and declared names that match none of their parameters."""

    models: tuple[WatchedModel, ...] = ()
    unmatched_trained: tuple[str, ...] = ()
    unserialisable: tuple[str, ...] = ()

    @property
    def checked(self) -> int:
        """Parameter tensors that had to stay bit-identical."""
        return sum(m.frozen for m in self.models)

    @property
    def changed(self) -> tuple[str, ...]:
        return tuple(n for m in self.models for n in m.changed_undeclared)


class ParameterWatch:
    """Context manager: copies the parameters of every model called inside it, at its first call."""

    def __init__(self) -> None:
        self._roots: list[tuple[Any, dict[str, Any]]] = []
        self._known: set[int] = set()
        self._handle: Any = None

    def __enter__(self) -> ParameterWatch:
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._handle = register_module_forward_pre_hook(self._on_call)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_call(self, module: Any, args: Any) -> None:
        if id(module) in self._known or next(module.parameters(), None) is None:
            return  # part of a model already seen, or holds no parameter (a loss module, an activation)
        for root, _ in self._roots:  # a module added to a known model after its first call
            grown = {id(m) for m in root.modules()}
            if id(module) in grown:
                self._known |= grown
                return
        # A new model (it may wrap or share parameters with one seen before: each is checked on its own).
        snapshot = {name: p.detach().to("cpu", copy=True) for name, p in module.named_parameters()}
        self._roots.append((module, snapshot))
        self._known |= {id(m) for m in module.modules()}

    def compare(self, trained: Sequence[str]) -> FrozenCheck:
        import torch

        match = _NameMatcher(trained)
        models = []
        for module, snapshot in self._roots:
            now = dict(module.named_parameters())
            changed, changed_trained, declared = [], 0, 0
            for name, before in snapshot.items():
                current = now.get(name)
                same = current is not None and torch.equal(before, current.detach().cpu())
                if match(name):
                    declared += 1
                    changed_trained += not same
                elif not same:
                    changed.append(name)
            models.append(WatchedModel(type(module).__name__, len(snapshot), declared, tuple(changed),
                                       changed_trained))
        names = [n for _, snapshot in self._roots for n in snapshot]
        unmatched = tuple(d for d in trained if not any(_same_parameter(n, d) for n in names)) if models else ()
        return FrozenCheck(tuple(models), unmatched)


def _suffixes(name: str) -> list[str]:
    """``a.b.c.weight`` -> ``a.b.c.weight``, ``b.c.weight``, ``c.weight`` (two components at least)."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(max(1, len(parts) - 1))]


def _same_parameter(name: str, declared: str) -> bool:
    return name == declared or name.endswith("." + declared) or declared.endswith("." + name) and "." in name


class _NameMatcher:
    """Is a parameter name declared trained? Equal names match, and so do names that differ only by the
    path of a wrapper around the model (``lm.model.x.weight`` and ``model.x.weight``), either way round."""

    def __init__(self, declared: Sequence[str]) -> None:
        self.exact = set(declared)
        self.inner = {s for d in declared for s in _suffixes(d)}

    def __call__(self, name: str) -> bool:
        return name in self.inner or any(s in self.exact for s in _suffixes(name))


@hookimpl(wrapper=True)
def bench_run_strategy(run: RunContext) -> Iterator[None]:
    """Watch the models the strategy calls; after it returns, check undeclared parameters did not
    change and ``extra`` is JSON-serialisable; write the findings to ``<run folder>/bench-testing.json``."""
    from bench.results import to_data, write_json_atomic

    watch = ParameterWatch()
    with watch:
        output = yield
    if output is None:
        return output
    check = watch.compare(tuple(output.trained_parameters))
    bad = tuple(_unserialisable(dict(output.extra), "extra") + _unserialisable(dict(output.metrics), "metrics"))
    check = dataclasses.replace(check, unserialisable=bad)
    write_json_atomic(Path(run.out_dir) / REPORT_FILENAME, to_data(check))
    return output


def _unserialisable(mapping: Mapping[str, Any], where: str) -> list[str]:
    from bench.results import to_data

    out = []
    for key, value in mapping.items():
        try:
            json.dumps(to_data(value), allow_nan=False)
        except (TypeError, ValueError) as exc:
            out.append(f"{where}[{key!r}] ({type(value).__name__}: {exc})")
    return out


# -------------------------------------------------------------------------------------------------
# The contract check.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractReport:
    """What :func:`check_strategy` ran and found. ``problems`` is empty when the contract holds."""

    strategy: str
    result: RunResult
    frozen: FrozenCheck | None
    out_dir: Path
    model: str
    dataset: str
    isolated: bool
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


class ContractError(AssertionError):
    """A strategy broke the contract; the message lists each problem and what to fix."""

    def __init__(self, strategy: str, problems: Sequence[str], report: ContractReport | None = None) -> None:
        self.strategy = strategy
        self.problems = tuple(problems)
        self.report = report
        where = f" (run folder: {report.out_dir})" if report is not None else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"strategy {strategy!r} breaks the bench strategy contract{where}:\n{lines}")


def check_strategy(
    strategy_or_name: str | Strategy,
    *,
    model: str | Path | None = None,
    dataset: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    tmp_path: str | Path | None = None,
    isolate: bool | None = None,
    preset: str | None = None,
    plugins: Sequence[str] = (),
    plugin_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    profile: bool = False,
) -> ContractReport:
    """Run one strategy through bench's runner on a tiny model and check the result against :data:`CHECKS`.

    :param strategy_or_name: a registered strategy name, or a strategy object (its module is loaded
        with ``-p`` when no installed plugin provides that name; it must then be importable by name).
    :param model: ``--model``; default: :func:`tiny_bert` (classification) or :func:`tiny_llama`
        (causal-lm), built once per process (:func:`default_assets`).
    :param dataset: ``--dataset``; default: :func:`tiny_sentiment_csv` or :func:`tiny_alpaca_jsonl`.
    :param options: the strategy's config fields (``{"epochs": 1}``), as ``-o NAME.field=value`` would.
    :param tmp_path: where the run folder goes (default: a new temporary folder).
    :param isolate: run in a child process as ``bench run`` does, or in this process (faster, but it
        does not prove the strategy survives isolation). Default: isolated, unless the environment
        variable ``BENCH_CHECK_ISOLATE`` is ``0``.
    :param preset: default: ``smoke`` when the strategy has that preset, else the plain defaults.
    :param plugins: more plugin modules to load (``-p``), e.g. one that is not installed.
    :param plugin_options: values of options declared with ``bench_addoption`` (by dest name).
    :param profile: keep the ``profiler`` plugin on (default: off, as ``-p no:profiler``).
    :return: the report; raises :class:`ContractError` listing the problems when any check fails.
    """
    from bench.config import BenchConfig, PluginSpec, strategy_config
    from bench.execute import execute
    from bench.runner import run_isolated

    if isolate is None:
        isolate = os.environ.get(ENV_ISOLATE, "1") != "0"
    root = Path(tmp_path) if tmp_path is not None else Path(tempfile.mkdtemp(prefix="bench-check-"))
    root.mkdir(parents=True, exist_ok=True)
    disable = () if profile else ("profiler",)
    spec = PluginSpec(enable=(*plugins, PLUGIN_MODULE), disable=disable)
    host, strategy, spec = _find_strategy(strategy_or_name, spec, isolate)
    name = strategy.name
    declared = dict(_declared_options(host))
    declared.update(plugin_options or {})
    if preset is None:
        preset = "smoke" if "smoke" in (getattr(strategy, "presets", None) or {}) else "default"
    config = BenchConfig(strategies=(name,), device=device, precision="fp32", seed=seed, preset=preset,
                         isolate=isolate, warmup_steps=1, options=declared,
                         strategy_overrides={name: dict(options or {})}, plugins=spec)
    strategy_config(strategy, config)  # option errors surface here, before any work, as the CLI reports them
    devices = tuple(getattr(strategy, "devices", None) or ("cpu", "cuda"))
    if device not in devices:
        raise ContractError(name, [f"the strategy declares devices {devices!r}, so it cannot be checked on "
                                   f"{device!r}; pass device=... (one it supports), or add {device!r} to its devices"])
    if model is None or dataset is None:
        default_model, default_data = default_assets(strategy.task)
        model = default_model if model is None else model
        dataset = default_data if dataset is None else dataset
    out_dir = root / f"run-{name}"
    n = 1
    while out_dir.exists():
        n += 1
        out_dir = root / f"run-{name}-{n}"
    config = dataclasses.replace(config, out_dir=out_dir, model=str(model), dataset=str(dataset))
    if isolate:
        result = run_isolated(config, name)
    else:
        host.hook.bench_configure.call_historic(kwargs={"config": config})
        result = execute(config, name, host)
    frozen = _read_frozen(out_dir / "runs" / name / REPORT_FILENAME)
    report = ContractReport(name, result, frozen, out_dir, str(model), str(dataset), isolate)
    problems = check_result(result, frozen=frozen, isolated=isolate)
    if problems:
        report = dataclasses.replace(report, problems=tuple(problems))
        raise ContractError(name, problems, report)
    return report


def _find_strategy(obj: Any, spec: Any, isolate: bool) -> tuple[Any, Any, Any]:
    """The loaded plugin host, the registered strategy and the plugin spec that finds it (by name)."""
    from bench.plugins import PluginHost
    from bench.registry import StrategyRegistry

    host = PluginHost().load(spec)
    registry = StrategyRegistry.from_host(host)
    if isinstance(obj, str):
        return host, registry.get(obj).strategy, spec
    name = getattr(obj, "name", None)
    if not isinstance(name, str):
        from bench.strategy import protocol_problems

        raise ContractError(repr(obj), protocol_problems(obj) or ["it has no string attribute 'name'"])
    if name in registry.names():
        found = registry.get(name).strategy
        if type(found) is not type(obj):
            raise ContractError(name, [f"another strategy named {name!r} is already registered (by plugin "
                                       f"{registry.get(name).plugin!r}, class {type(found).__qualname__}); "
                                       "rename yours or block that plugin"])
        return host, found, spec
    module = type(obj).__module__
    if module == "__main__" or not _module_importable(module):
        if not isolate:  # in this process the object itself can be registered
            host.register(_Provides(obj), f"{PLUGIN_MODULE}:{name}", "-p")
            return host, obj, spec
        raise ContractError(name, [
            f"no loaded plugin registers strategy {name!r}, and its class {type(obj).__qualname__} lives in "
            f"{module!r}, which a run process cannot import by name; register it through the "
            "'finetune_bench' entry point of an installed distribution, or define it in an importable "
            "module that has a bench_register_strategies hook (and pass plugins=['that.module']); "
            "isolate=False skips the isolation check"])
    spec = dataclasses.replace(spec, enable=(module, *spec.enable))
    host = PluginHost().load(spec)
    registry = StrategyRegistry.from_host(host)
    if name not in registry.names():
        raise ContractError(name, [f"module {module!r} was loaded as a plugin (-p {module}) but registers no "
                                   f"strategy named {name!r}; return it from its bench_register_strategies hook"])
    return host, registry.get(name).strategy, spec


class _Provides:
    """A plugin object registering one strategy object (in-process checks of unimportable strategies)."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy

    @hookimpl
    def bench_register_strategies(self) -> list[Any]:
        return [self.strategy]


def _module_importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _declared_options(host: Any) -> dict[str, Any]:
    from bench.options import OptionParser

    parser = OptionParser()
    host.hook.bench_addoption.call_historic(kwargs={"parser": parser, "pluginmanager": host})
    return {o.dest: o.default for o in parser.options}


def _read_frozen(path: Path) -> FrozenCheck | None:
    if not path.is_file():
        return None
    from bench.results import from_data

    return from_data(FrozenCheck, json.loads(path.read_text(encoding="utf-8")))


def check_result(result: RunResult, *, frozen: FrozenCheck | None = None, isolated: bool = False) -> list[str]:
    """The contract problems of one result (and of the frozen watch's findings), each saying what to fix."""
    problems: list[str] = []
    if not result.passed:
        error = result.error
        summary = error.summary if error is not None else "no error recorded"
        hint = ""
        if isolated and error is not None and "unknown strategy" in error.message:
            hint = (" -- the run process (a fresh interpreter) could not find the strategy by name: register it "
                    "through an entry point or a module importable by name, not a class defined in a test")
        elif isolated and error is not None and error.type == "ProcessDied":
            hint = (" -- the run process died without writing its result; if its stderr shows a TypeError from "
                    "json, a value in metrics or extra is not JSON-serialisable")
        tail = "\n".join(error.traceback.strip().splitlines()[-6:]) if error is not None and error.traceback else ""
        problems.append(f"the run failed: {summary}{hint}" + (f"\n{tail}" if tail else ""))
        if frozen is not None:
            problems += _frozen_problems(frozen)
        return problems
    if not result.metrics:
        problems.append("metrics is empty; return at least the primary metric in StrategyOutput.metrics")
    for key, value in result.metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(float(value)):
            problems.append(f"metric {key!r} is {value!r}; every metric must be a finite float (NaN and inf "
                            "become null in the results file): leave out a metric that was not measured")
    if result.primary_metric not in result.metrics:
        problems.append(f"primary_metric {result.primary_metric!r} is not among the metrics "
                        f"({', '.join(result.metrics) or 'none'}); set StrategyOutput.primary_metric to one of them")
    problems += _param_problems(result)
    if not result.phases:
        problems.append("no phase was measured; wrap setup, training and evaluation in run.meter.phase(name)")
    for p in result.phases:
        if not math.isfinite(p.wall_s) or p.wall_s < 0:
            problems.append(f"phase {p.name!r} has wall_s {p.wall_s!r}; it must be finite and >= 0")
        for attr in ("cpu_peak_rss_bytes", "gpu_peak_allocated_bytes", "gpu_peak_reserved_bytes"):
            value = getattr(p, attr)
            if value is not None and value < 0:
                problems.append(f"phase {p.name!r} has {attr} {value}; memory is None or >= 0")
    if not result.steps:
        problems.append("no step was measured; wrap each optimizer step (or inference batch) in "
                        "run.meter.step(samples=..., tokens=...) inside a run.meter.phase(...)")
    for i, s in enumerate(result.steps):
        if not s.seconds > 0:
            problems.append(f"step {i} of phase {s.phase!r} took {s.seconds!r} s; a measured step must do its "
                            "work inside the run.meter.step(...) block")
            break
        if s.samples < 0 or s.tokens < 0:
            problems.append(f"step {i} of phase {s.phase!r} counts samples={s.samples}, tokens={s.tokens}; "
                            "both must be >= 0")
            break
    if not isolated:
        problems += _unserialisable(dict(result.extra), "extra")
    if frozen is not None:
        problems += _frozen_problems(frozen)
    return problems


def _param_problems(result: RunResult) -> list[str]:
    p = result.params
    if p is None:
        return ["params is missing; return bench.ParamCounts (bench.measure.param_counts(model, optimizer) "
                "counts them)"]
    problems = []
    if p.total <= 0:
        problems.append(f"params.total is {p.total}; count every parameter of the model")
    if not 0 <= p.trainable <= p.total:
        problems.append(f"params.trainable is {p.trainable} with total {p.total}; need 0 <= trainable <= total")
    for attr in ("param_bytes", "grad_bytes", "optimizer_state_bytes"):
        if getattr(p, attr) < 0:
            problems.append(f"params.{attr} is {getattr(p, attr)}; byte counts are >= 0")
    return problems


def _frozen_problems(frozen: FrozenCheck) -> list[str]:
    problems = list(f"{u} is not JSON-serialisable; give plain numbers, strings, lists and dicts"
                    for u in frozen.unserialisable)
    changed = frozen.changed
    if changed:
        shown = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
        hint = ""
        if frozen.unmatched_trained:
            hint = (f"; note that trained_parameters names {', '.join(frozen.unmatched_trained[:3])}, which is not "
                    "a parameter of any model the strategy called: use the names of model.named_parameters() "
                    "of the model you call")
        problems.append(f"{len(changed)} parameter(s) not listed in StrategyOutput.trained_parameters changed "
                        f"during the run: {shown}; list every parameter that trains, or freeze the others "
                        f"(param.requires_grad_(False)){hint}")
    return problems


# -------------------------------------------------------------------------------------------------
# The pytest fixture (``pytest_plugins = ["bench.testing"]``).
# -------------------------------------------------------------------------------------------------


def _bench_check(tmp_path: Path) -> Callable[..., ContractReport]:
    """``bench_check("my-strategy", options={...})``: :func:`check_strategy` under the test's ``tmp_path``."""

    def run_check(strategy_or_name: Any, **kwargs: Any) -> ContractReport:
        kwargs.setdefault("tmp_path", tmp_path)
        return check_strategy(strategy_or_name, **kwargs)

    return run_check


try:
    import pytest as _pytest
except ImportError:  # pragma: no cover - pytest is a dependency of pytest-benchmark
    bench_check: Any = None
else:
    bench_check = _pytest.fixture(name="bench_check")(_bench_check)
