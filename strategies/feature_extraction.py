"""``feature-extraction``: a frozen encoder embeds each split once, a logistic regression learns on top.

Embeddings (mean pooling by default, CLS as an option) are cached on disk keyed by model, data,
pooling and max length, so a second run reuses them; the extract phase is then not re-measured
(its throughput is reported only when it was measured). Each cache file carries its sha256 and is
verified on every use; one that does not match is embedded again.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api import (
    Encoded,
    ParamCounts,
    RunContext,
    StrategyOutput,
    UsageError,
    attention_implementation,
    batches,
    cache_dir,
    cast_frozen_linears,
    checksum_problem,
    data_summary,
    hookimpl,
    load_encoder,
    model_fingerprint,
    note,
    option,
    param_counts,
    prepare,
    progress_bar,
    save_with_checksum,
    sorted_order,
)

# smoke: 640 training embeddings (128 left the classifier at the majority class; 640 reached 0.70 on a
# majority class of 0.53), the same 128 held-out examples as the fine-tuning strategies.
SMOKE = {"train_samples": 640, "eval_samples": 128, "max_length": 64}
# ci: 60 measured embedding batches, and no feature cache (the current run must embed as the baseline did)
CI = {"train_samples": 960, "eval_samples": 256, "max_length": 64, "eval_batch_size": 16, "feature_cache": False}
FULL = {"train_samples": 0}
POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class FeatureExtractionConfig:
    pooling: str = option("mean", "mean | cls: how token states become one embedding")
    max_length: int = option(128, "truncate inputs to this many tokens", ge=2)
    train_samples: int = option(3000, "training examples used (0: the whole training split)", ge=0)
    eval_samples: int = option(0, "validation and test examples used, each (0: whole splits)", ge=0)
    eval_batch_size: int = option(128, "batch size for embedding", ge=1)
    c_grid: tuple[float, ...] = option((0.01, 0.1, 1.0, 10.0), "inverse regularisation strengths tried on validation",
                                          gt=0)
    feature_cache: bool = option(True, "reuse embeddings cached on disk from an earlier run")
    attn_implementation: str = option("auto", "auto | eager | sdpa")
    cast_frozen: bool = option(True, "under bf16 autocast, store the encoder's Linear weights in bf16 once (exact)")

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")


class FeatureExtraction:
    name = "feature-extraction"
    description = "frozen encoder in inference mode, pooled embeddings, logistic regression on top"
    task = "classification"
    config_class = FeatureExtractionConfig
    presets = {"smoke": SMOKE, "ci": CI, "full": FULL}

    def run(self, run: RunContext) -> StrategyOutput:
        import numpy as np

        cfg: FeatureExtractionConfig = run.config
        with run.meter.phase("setup"):
            prep = prepare(run, cfg.train_samples, cfg.eval_samples, cfg.max_length)
            encoder = load_encoder(prep.source, attention_implementation(run.device, cfg.attn_implementation))
            encoder.requires_grad_(False)
            if cfg.cast_frozen and run.precision == "bf16":
                import torch

                count = cast_frozen_linears(encoder, torch.bfloat16)
                run.record_technique("cast_frozen", True, f"{count:,} encoder Linear parameters in bf16")
            else:
                run.record_technique("cast_frozen", False, "cast_frozen=false" if not cfg.cast_frozen else
                                     f"bf16 only (precision {run.precision})")
            encoder.eval().to(run.device)
        fingerprint = model_fingerprint(prep.source)
        cached: dict[str, bool] = {}
        feats: dict[str, Any] = {}
        with run.meter.phase("extract"):
            for split, examples in (("train", prep.train), ("validation", prep.validation), ("test", prep.test)):
                path = _cache_path(fingerprint, examples, cfg, split)
                if cfg.feature_cache:
                    problem = checksum_problem(path)  # every use: a flipped byte once cost 9 points, silently
                    if not problem:
                        feats[split], cached[split] = np.load(path, allow_pickle=False), True
                        continue
                    if problem != "not cached":
                        note(f"feature cache {path}: {problem}; embedding the {split} split again")
                feats[split], cached[split] = embed(run, encoder, examples, cfg, prep.pad_id), False
                if cfg.feature_cache:
                    save_with_checksum(path, functools.partial(_save_array, array=feats[split]))
        labels = {s: np.array([e.label for e in ex]) for s, ex in
                  (("train", prep.train), ("validation", prep.validation), ("test", prep.test))}
        with run.meter.phase("train"):
            clf, c_best, val_acc = fit_classifier(feats["train"], labels["train"], feats["validation"],
                                                  labels["validation"], cfg.c_grid, run.seed)
        with run.meter.phase("eval"):
            from sklearn.metrics import f1_score

            pred = clf.predict(feats["test"])
            test_acc = float((pred == labels["test"]).mean())
            test_f1 = float(f1_score(labels["test"], pred, average="macro"))
        counts = param_counts(encoder)
        head_params = int(clf[-1].coef_.size + clf[-1].intercept_.size)
        params = ParamCounts(total=counts.total + head_params, trainable=head_params, param_bytes=counts.param_bytes,
                             grad_bytes=0, optimizer_state_bytes=0)
        return StrategyOutput(
            metrics={"test_accuracy": test_acc, "test_macro_f1": test_f1, "best_val_accuracy": val_acc},
            params=params,
            trained_parameters=("logistic_regression.coef", "logistic_regression.intercept"),
            trained_modules=("logistic_regression",),
            metric_samples={"test_accuracy": len(prep.test), "test_macro_f1": len(prep.test),
                            "best_val_accuracy": len(prep.validation)},
            correct={"test_accuracy": [int(p == y) for p, y in zip(pred, labels["test"])]},
            data_sha256=str(prep.data.sha256 or ""),
            model_sha256=fingerprint,
            extra={"pooling": cfg.pooling, "C": c_best, "features_cached": cached, "model": prep.source,
                   "model_sha256": fingerprint,
                   "data": data_summary(prep.data), "embedding_dim": int(feats["train"].shape[1])},
        )


def embed(run: RunContext, encoder: Any, examples: list[Encoded], cfg: FeatureExtractionConfig, pad_id: int) -> Any:
    """Pooled embeddings in the examples' order; each batch is one measured step of the extract phase."""
    import numpy as np
    import torch

    out = np.zeros((len(examples), encoder.config.hidden_size), dtype=np.float32)
    order = sorted_order([len(e) for e in examples], cfg.eval_batch_size)
    with torch.inference_mode():
        for idx, batch in progress_bar(zip(order, batches(examples, order, pad_id)), desc="embedding",
                                       total=len(order), unit="batch"):
            with run.meter.step(samples=batch.samples, tokens=batch.tokens):
                inputs = batch.to(run.device)
                inputs.pop("labels")

                def forward(inputs: dict[str, Any] = inputs) -> Any:
                    with run.autocast():
                        return encoder(**inputs).last_hidden_state

                hidden = run.meter.count_flops(forward, batch.padded_tokens)
                pooled = pool(hidden.float(), inputs["attention_mask"], cfg.pooling)
                out[idx] = pooled.cpu().numpy()
    return out


def pool(hidden: Any, mask: Any, how: str) -> Any:
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def fit_classifier(x: Any, y: Any, xv: Any, yv: Any, grid: tuple[float, ...], seed: int) -> tuple[Any, float, float]:
    """Standardised logistic regression; C chosen by validation accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not grid:
        raise UsageError("option c_grid of strategy 'feature-extraction' is empty; give e.g. 0.1,1,10")
    best: tuple[float, float, Any] | None = None
    for c in grid:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        clf.fit(x, y)
        acc = float((clf.predict(xv) == yv).mean())
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    assert best is not None
    return best[2], best[1], best[0]


def _save_array(path: Path, array: Any) -> None:
    import numpy as np

    np.save(path, array)


def _cache_path(fingerprint: str, examples: list[Encoded], cfg: FeatureExtractionConfig, split: str) -> Path:
    """Keyed by the model's weights, the tokenised examples and labels, pooling and max length."""
    h = hashlib.sha256()
    h.update(f"{fingerprint}|{cfg.pooling}|{cfg.max_length}".encode())
    for e in examples:
        h.update(b"%d|" % e.label)
        h.update(",".join(map(str, e.input_ids)).encode())
        h.update(b"\n")
    return cache_dir() / "features" / f"{split}-{h.hexdigest()[:24]}.npy"


@hookimpl
def bench_register_strategies() -> list[Any]:
    return [FeatureExtraction()]
