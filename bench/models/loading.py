"""Loading models and tokenizers: the task's embedded default, a local folder, or a hub id."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.errors import ModelError
from bench.models import random_init

if TYPE_CHECKING:
    from bench.core.context import RunContext

DEFAULT_NOTE = {"classification": "all-MiniLM-L6-v2 (embedded)", "causal-lm": "SmolLM2-135M-Instruct (embedded)"}
DEFAULT_SHAPE = {"classification": "shape:minilm-l6", "causal-lm": "shape:smollm2-135m"}


def resolve_model(spec: str | None, task: str, *, synthetic: bool = False) -> str:
    """The model source to load: the embedded default (None), a local folder, or a hub id; for a
    shape-only or planned run (``synthetic``) also a shipped shape, and the default is the default
    model's shape (no download)."""
    if synthetic and (spec is None or random_init.is_shape(spec)):
        source = spec or DEFAULT_SHAPE[task]
        random_init.shape_config_dict(source)  # an unknown name fails here, with the known ones
        return source
    if random_init.is_shape(spec):
        raise ModelError(f"--model {spec}: a shape has no weights; add --weights random (or plan it: bench plan)")
    if spec is None:
        from bench.data import assets

        return str(assets.minilm_model_dir() if task == "classification" else assets.smollm2_model_dir())
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"--model {spec}: not a folder; give a Hugging Face model folder or a hub id")
        if not (path / "config.json").is_file():
            raise ModelError(f"--model {spec}: the folder holds no model (no config.json); give a folder written "
                             f"by save_pretrained, or a hub id")
        check_weight_files(path)
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"--model {spec}: no such folder (and not a hub id of the form org/name)")
    return spec


def check_weight_files(folder: Path) -> None:
    """ModelError naming the file when a ``*.safetensors`` file in ``folder`` is truncated or has no valid
    header: its header (read alone, no weights) says how long the file must be. Cheap enough to run
    before anything loads, so a broken download stops in one line instead of deep inside transformers."""
    import json
    import struct

    for file in sorted(folder.glob("*.safetensors")):
        size = file.stat().st_size
        try:
            with file.open("rb") as fh:
                head = fh.read(8)
                (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
                if length is None or length > size - 8:
                    raise ValueError("its header is cut off")
                header = json.loads(fh.read(length))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ModelError(f"{file}: not a valid safetensors file ({_first_line(exc)}); download or save it "
                             "again") from None
        expected = 8 + length + max(ends, default=0)
        if size < expected:
            raise ModelError(f"{file}: truncated safetensors file: {size:,} bytes, its header says {expected:,}; "
                             "download or save it again")


def model_fingerprint(source: str, random_weights: bool = False) -> str:
    """sha256 over a local model folder's weight files (names and contents); the id for hub models;
    for random weights, what they are (a shape's weights are drawn with seed 0)."""
    import hashlib

    if random_weights or random_init.is_shape(source):
        return f"random weights (seed 0) of {source}"
    path = Path(source)
    if not path.is_dir():
        return f"hub:{source}"
    h = hashlib.sha256()
    for file in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
        h.update(file.name.encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def attention_implementation(device: str, choice: str) -> str:
    """``auto`` is eager attention on both devices, as measured for these short sequences (README,
    "Figures"): on this CPU eager trained 1.8x faster than SDPA in bf16; on an H100, all-layers on
    Rotten Tomatoes ran 1,364 samples/s eager against 893 with SDPA (cuDNN re-plans every new shape
    that dynamic padding produces). Pass ``sdpa`` for long sequences."""
    del device  # same choice on both today; kept so a device-specific default can return
    return "eager" if choice == "auto" else choice


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(f"--model {source}: cannot load a tokenizer: {_first_line(exc)}") from None
    return tok


def load_sequence_classifier(source: str, label_names: tuple[str, ...], attn: str) -> Any:
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            attn_implementation=attn,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"--model {source}: cannot load it for sequence classification: {_first_line(exc)}") from None
    return model


def load_encoder(source: str, attn: str) -> Any:
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(source, attn_implementation=attn)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"--model {source}: cannot load an encoder: {_first_line(exc)}") from None


def check_causal_lm(source: str) -> None:
    """ModelError unless ``source``'s config is a decoder-only causal LM. Encoders that transformers can
    also load with a causal head (BERT, RoBERTa, ...) count as not causal unless configured as decoders."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"--model {source}: cannot read its config: {_first_line(exc)}") from None
    encoder = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or encoder:
        raise ModelError(f"--model {source}: a {config.model_type!r} model is not a causal language model; "
                         f"sft needs one (e.g. Llama, GPT-2, SmolLM2)")


def load_causal_lm(source: str, attn: str) -> Any:
    from transformers import AutoModelForCausalLM

    check_causal_lm(source)
    try:
        return AutoModelForCausalLM.from_pretrained(source, attn_implementation=attn)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"--model {source}: cannot load it as a causal LM: {_first_line(exc)}") from None


def load_classifier(run: RunContext, source: str, label_names: tuple[str, ...], attn: str) -> Any:
    """The run's sequence classifier: pretrained weights from ``source``, or (``--weights random``, and in
    plan mode) a model of ``source``'s shape with random weights, built on the run's device."""
    if not run.synthetic:
        return load_sequence_classifier(source, label_names, attn)
    config = random_init.load_config(source, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                                     label2id={n: i for i, n in enumerate(label_names)})
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0  # decoder classifiers find the last real token by it
    return random_init.build(config, "classification", run.device, attn)


def load_lm(run: RunContext, source: str, attn: str) -> Any:
    """The run's causal LM: pretrained from ``source``, or its shape with random weights (as above)."""
    if not run.synthetic:
        return load_causal_lm(source, attn)
    if not random_init.is_shape(source):
        check_causal_lm(source)
    return random_init.build(random_init.load_config(source), "causal-lm", run.device, attn)


def pad_id_of_config(source: str) -> int:
    """The padding id of a shape or config (its pad, else its eos, else 0)."""
    config = random_init.load_config(source)
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            return value
    return 0


def vocab_size_of(source: str) -> int:
    return int(random_init.load_config(source).vocab_size)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
