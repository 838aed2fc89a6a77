"""The strategy protocol: what a plugin provides and what it returns.

A strategy is any object with these attributes and a ``run`` method; no base class to inherit
(the shape of torchtune's recipe interfaces). Its options are the fields of a frozen dataclass,
``config_class``; the host fills them from presets, the config file and the command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bench.core.context import RunContext

TASKS = ("classification", "causal-lm")


@runtime_checkable
class Strategy(Protocol):
    """A fine-tuning strategy.

    Attributes:
        name: unique, kebab-case (``all-layers``); what ``-s`` selects.
        description: one line for ``bench list``.
        task: ``"classification"`` or ``"causal-lm"``; decides which default model and data apply.
        config_class: a frozen dataclass; every field is an option with a default.
        presets: optional mapping of preset name (``smoke``, ``full``, ...) to field overrides.
        devices: optional tuple of devices it supports (default: ``("cpu", "cuda")``).
        run_to_run_noise_pct: optional; how far apart, in percent (a standard deviation), two runs of
            identical code land after ``bench compare``'s pairing and load normalisation, one run per side
            (``tests/benchmarks/calibrate.py --strategy NAME`` measures it). Recorded with every result, it is
            ``bench compare``'s noise floor for this strategy unless ``--noise-floor`` sets one; without it,
            the default (``bench.compare.paired.NOISE_FLOOR``) applies.
    """

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def config_class(self) -> type: ...  # read-only: a strategy's class attribute is a subtype

    def run(self, run: RunContext) -> StrategyOutput:
        """Prepare model and data, train inside ``run.meter``'s phases and steps, evaluate."""
        ...


REQUIRED_ATTRIBUTES = ("name", "description", "task", "config_class", "run")


def protocol_problems(obj: object) -> list[str]:
    """What keeps ``obj`` from being a strategy, as readable sentences (empty when it is one)."""
    problems = [f"missing attribute {a!r}" for a in REQUIRED_ATTRIBUTES if not hasattr(obj, a)]
    if problems:
        return problems
    if not callable(obj.run):  # type: ignore[attr-defined]
        problems.append("'run' is not callable")
    cfg = obj.config_class  # type: ignore[attr-defined]
    if not (isinstance(cfg, type) and dataclasses.is_dataclass(cfg)):
        problems.append("'config_class' must be a dataclass type")
    elif not cfg.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        problems.append("'config_class' must be a frozen dataclass (@dataclass(frozen=True))")
    else:
        missing = [f.name for f in dataclasses.fields(cfg) if _has_no_default(f)]
        if missing:
            problems.append(f"config fields without a default: {', '.join(missing)}")
    if obj.task not in TASKS:  # type: ignore[attr-defined]
        problems.append(f"task {obj.task!r} is not one of {', '.join(TASKS)}")  # type: ignore[attr-defined]
    noise, declared = getattr(obj, "run_to_run_noise_pct", None), declared_noise_pct(obj)
    if noise is not None and (declared is None or not 0 <= declared < 100):
        problems.append(f"'run_to_run_noise_pct' must be a percentage from 0 to under 100, not {noise!r}")
    return problems


def declared_noise_pct(obj: object) -> float | None:
    """A strategy's ``run_to_run_noise_pct`` when it declares a number (:func:`protocol_problems` checks its
    range), else None."""
    noise = getattr(obj, "run_to_run_noise_pct", None)
    return float(noise) if isinstance(noise, (int, float)) and not isinstance(noise, bool) else None


def _has_no_default(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts and exact bytes held by parameters, gradients and optimizer state."""

    total: int
    trainable: int
    param_bytes: int
    grad_bytes: int
    optimizer_state_bytes: int


@dataclass(frozen=True)
class StrategyOutput:
    """What a strategy returns. Measurements (time, memory, steps) are taken by the host's meter.

    ``metrics`` holds task metrics with their unit in the name (``test_accuracy``, ``eval_loss``,
    ``exact_match_after``); ``primary_metric`` names the one tables and plots lead with.
    ``trained_parameters`` lists the parameter names that trained. ``extra`` is JSON-serialisable
    detail (label map, sample generations, chosen layers).

    For honest intervals and paired tests: ``metric_samples`` says over how many examples a fraction
    metric was computed (``{"test_accuracy": 1308}``: the report's Wilson interval); ``correct`` gives,
    per metric, each example's 0/1 outcome in the evaluation set's fixed order (kept in the result as
    ``outcomes``; McNemar's test compares two strategies, or two runs, on them). ``data_sha256`` and
    ``model_sha256`` identify the data and the weights, so rows that differ in them are flagged.
    """

    metrics: Mapping[str, float]
    params: ParamCounts
    primary_metric: str = "test_accuracy"
    trained_parameters: tuple[str, ...] = ()
    trained_modules: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    metric_samples: Mapping[str, int] = field(default_factory=dict)
    correct: Mapping[str, Sequence[int]] = field(default_factory=dict)
    data_sha256: str = ""
    model_sha256: str = ""
