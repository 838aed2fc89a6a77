"""Which technique pays, measured: ``python -m bench_baselines.ablate``.

Runs a built-in strategy once as shipped (the reference) and once per technique switched off (or,
for ``torch.compile``, on), one ``bench run`` each on the same data, and prints the throughput of
each variant relative to its reference: per timed step (warm-up excluded) and over the whole
training phase (everything in it, compilation and the frozen-prefix pass included). A technique
stays on by default only where this table shows it pays. Everything after ``--`` goes to every
``bench run``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_baselines.speed import Job, run_job, split_passthrough


@dataclass(frozen=True)
class Variant:
    reference: str  # the slug of the reference job this one is compared with
    name: str
    job: Job


def variants(train_samples: int) -> list[Variant]:
    """all-layers variants train one epoch (every technique acts within a step); last-layers variants train
    three, since the frozen-prefix cache pays only from the second epoch on."""
    def job(strategy: str, *items: str, precision: str | None = None) -> Job:
        epochs = 3 if strategy == "last-layers" else 1
        opts = [f"train_samples={train_samples}", f"epochs={epochs}", *items]
        args = tuple(x for item in opts for x in ("-o", f"{strategy}.{item}"))
        return Job("ablation", strategy, args + (("--precision", precision) if precision else ()))

    full, head, block = "all-layers", "last-layers", "last-layers n_last=1"
    return [
        Variant(full, full, job("all-layers")),
        Variant(full, "SDPA attention instead of eager", job("all-layers", "attn_implementation=sdpa")),
        Variant(full, "fp32 instead of bf16 autocast", job("all-layers", precision="fp32")),
        Variant(full, "random batches instead of length-grouped", job("all-layers", "group_by_length=false")),
        Variant(full, "foreach AdamW instead of fused", job("all-layers", "fused_optimizer=false")),
        Variant(full, "F.dropout instead of the fast dropout", job("all-layers", "fast_dropout=false")),
        Variant(full, "last block on every position", job("all-layers", "first_token=false")),
        Variant(full, "torch.compile on", job("all-layers", "compile=true")),
        Variant(head, head, job("last-layers")),
        Variant(head, "no frozen-prefix cache", job("last-layers", "prefix_cache=false")),
        Variant(head, "no cache, frozen weights not stored in bf16", job("last-layers", "prefix_cache=false",
                                                                        "cast_frozen=false")),
        Variant(block, block, job("last-layers", "n_last=1")),
        Variant(block, "no frozen-prefix cache", job("last-layers", "n_last=1", "prefix_cache=false")),
    ]


def measure(folder: Path) -> dict[str, float | None]:
    from bench.api import RESULTS_FILENAME, load_results

    from bench_baselines.ratios import train_rate

    path = folder / RESULTS_FILENAME
    if not path.is_file():
        return {}
    (result,) = load_results(path).results
    if not result.passed:
        return {}
    train = result.throughput.get("train")
    return {"step": train.samples_per_s if train else None, "phase": train_rate(result, "samples"),
            "accuracy": result.metrics.get("test_accuracy")}


def main(argv: list[str] | None = None) -> int:
    argv, passthrough = split_passthrough(argv)
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m bench_baselines.ablate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".bench") / f"ablate-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--train-samples", type=int, default=1200, help="training examples (default 1200)")
    parser.add_argument("--only", choices=("all-layers", "last-layers"), help="run only this strategy's variants")
    parser.add_argument("--table-only", action="store_true", help="print the table of an earlier --out, run nothing")
    args = parser.parse_args(argv)
    plan = [v for v in variants(args.train_samples) if not args.only or v.job.strategy == args.only]
    folders = [args.out / f"{i:02d}-{v.job.strategy}" for i, v in enumerate(plan)]
    if not args.table_only:
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"ablation: {len(plan)} runs into {args.out}")
        for v, folder in zip(plan, folders):
            run_job(v.job, folder, args.preset, passthrough)
    from tabulate import tabulate

    measured = [measure(f) for f in folders]
    refs = {v.name: m for v, m in zip(plan, measured) if v.name == v.reference}
    rows = []
    for v, m in zip(plan, measured):
        ref = refs.get(v.reference, {})

        def ratio(key: str, m: dict = m, ref: dict = ref) -> str:
            return f"{m[key] / ref[key]:.2f}x" if m.get(key) and ref.get(key) else "-"

        def num(key: str, fmt: str, m: dict = m) -> str:
            return "-" if m.get(key) is None else format(m[key], fmt)

        rows.append((v.reference if v.name == v.reference else f"  {v.name}", num("step", ",.1f"), ratio("step"),
                     num("phase", ",.1f"), ratio("phase"), num("accuracy", ".4f")))
    headers = ("variant", "step samples/s", "vs reference", "phase samples/s", "vs reference", "test accuracy")
    print(tabulate(rows, headers=headers))
    (args.out / "ablation.md").write_text(tabulate(rows, headers=headers, tablefmt="github") + "\n")
    (args.out / "ablation.json").write_text(json.dumps([dict(zip(headers, r)) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
