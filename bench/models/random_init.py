"""Models built from their shape alone: ``--weights random``.

The config comes from a named shape that finetune-bench ships (``--model shape:llama-1b``; the files in
``bench/models/shapes``), a local folder's ``config.json`` or a hub id's. The model is created on the
``meta`` device (no memory), then materialised where it runs (``to_empty``) and initialised there with
the architecture's own initialisation (``init_weights``, which also recomputes buffers such as the
rotary frequencies): an 8B shape never allocates fp32 weights on the host it does not need.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from bench.core.errors import ModelError, UsageError
from bench.core.text import did_you_mean

SHAPE_PREFIX = "shape:"


def shape_names() -> list[str]:
    """The named shapes finetune-bench ships."""
    folder = resources.files("bench.models").joinpath("shapes")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def is_shape(spec: str | None) -> bool:
    return bool(spec) and str(spec).startswith(SHAPE_PREFIX)


def shape_config_dict(spec: str) -> dict[str, Any]:
    """The config of ``shape:NAME`` as a dict (its ``_comment`` says what it is)."""
    name = spec[len(SHAPE_PREFIX):]
    names = shape_names()
    if name not in names:
        raise UsageError(f"--model {spec}: no such shape{did_you_mean(name, names)} (shapes: {', '.join(names)})")
    text = resources.files("bench.models").joinpath("shapes").joinpath(f"{name}.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def load_config(source: str, **overrides: Any) -> Any:
    """A transformers config from a shape name, a local folder or a hub id."""
    from transformers import CONFIG_MAPPING, AutoConfig

    try:
        if is_shape(source):
            data = {k: v for k, v in shape_config_dict(source).items() if not k.startswith("_")}
            model_type = data.pop("model_type")
            config = CONFIG_MAPPING[model_type](**data)
        else:
            config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"--model {source}: cannot read its config: {text}") from None
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def describe(source: str) -> str:
    """What a shape is, for reports (its ``_comment``), else the source."""
    if is_shape(source):
        return str(shape_config_dict(source).get("_comment", source))
    return source


def build(config: Any, head: str, device: str, attn: str) -> Any:
    """A model of ``config`` with randomly initialised weights on ``device`` (``meta``: shapes and dtypes
    only, for planning). ``head``: ``classification`` or ``causal-lm``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    factory = AutoModelForSequenceClassification if head == "classification" else AutoModelForCausalLM
    try:
        with torch.device("meta"):
            model = factory.from_config(config, attn_implementation=attn)
    except (ValueError, KeyError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"a {config.model_type!r} shape cannot be built for {head}: {text}") from None
    if device == "meta":
        return model
    model.to_empty(device=device)
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
        torch.manual_seed(0)  # the same random weights on every run of a shape
        model.init_weights()
    return model


def num_parameters(config: Any, head: str) -> int:
    """Parameter count of a shape, from a meta-device model (no memory)."""
    return sum(p.numel() for p in build(config, head, "meta", "eager").parameters())


def config_path(source: str) -> Path | None:
    """The config file a source reads, when it is a local one."""
    path = Path(source)
    return path / "config.json" if path.is_dir() else None
