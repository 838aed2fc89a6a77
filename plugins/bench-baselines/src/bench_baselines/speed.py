"""One command for the speed comparison: ``python -m bench_baselines.speed``.

Runs each built-in strategy and the baseline it stands for, one ``bench run`` each, on the same
data, epochs and layer selection, then prints the ratio table (ours / baseline, over the whole
training phase) and writes it as ``speed.md`` and ``speed.json`` into ``--out``. With
``--repeats N`` the whole plan runs N times, interleaved (A B A B ...), and the table shows the
median of the repeats' own ratios (repeat r: ours / baseline, both run with ``--seed r``) with their
range: the machine is shared and noisy, so ratios of neighbours are what count, not absolute times;
quality is averaged over seeds. The profiler and TensorBoard are off (they add their own cost).

Everything after ``--`` goes to every ``bench run`` (e.g. ``-- --device cuda``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUPS = ("classification", "sft", "feature-extraction", "all-layers", "last-layers", "seed-loop")


@dataclass(frozen=True)
class Job:
    group: str  # the pair it belongs to: feature-extraction, all-layers, last-layers, seed-loop, sft
    strategy: str
    options: tuple[str, ...] = ()

    def selected(self, only: list[str] | None) -> bool:
        """``--only`` names pairs, or ``classification`` for every pair but sft."""
        if not only:
            return True
        return self.group in only or ("classification" in only and self.group != "sft")

    def slug(self, index: int, repeat: int) -> str:
        tail = "-".join(o.split(".", 1)[1].replace("=", "_").replace(":", "").replace("+", "_")
                        for o in self.options if "train_layers" in o or "n_last" in o)
        return f"r{repeat}-{index:02d}-{self.strategy}" + (f"-{tail}" if tail else "")


def plan(sft_train_samples: int, head_lr: str) -> list[Job]:
    """The pairs of issue #8, built-in first, then its baseline."""
    def o(name: str, *items: str) -> tuple[str, ...]:
        return tuple(x for item in items for x in ("-o", f"{name}.{item}"))

    sft = (f"train_samples={sft_train_samples}",) if sft_train_samples else ()
    return [
        Job("feature-extraction", "feature-extraction", o("feature-extraction", "feature_cache=false")),
        Job("all-layers", "all-layers"),
        Job("all-layers", "hf-trainer"),
        Job("last-layers", "last-layers"),
        Job("last-layers", "hf-trainer", o("hf-trainer", "train_layers=head", f"lr={head_lr}")),
        Job("last-layers", "last-layers", o("last-layers", "n_last=1")),
        Job("last-layers", "hf-trainer", o("hf-trainer", "train_layers=head+last:1", f"lr={head_lr}")),
        Job("seed-loop", "seed-loop"),
        Job("sft", "sft", o("sft", *sft)),
        Job("sft", "hf-trainer-sft", o("hf-trainer-sft", *sft)),
    ]


def run_job(job: Job, out: Path, preset: str, passthrough: list[str], seed: int | None = None) -> Path:
    cmd = [sys.executable, "-m", "bench", "run", "-s",
           job.strategy, *job.options, "--preset", preset, "--out", str(out), "-q", "-p", "no:profiler",
           "-p", "no:tensorboard", *(("--seed", str(seed)) if seed is not None else ()), *passthrough]
    started = time.perf_counter()
    print(f"  {out.name} ...", end="", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(f" {time.perf_counter() - started:.0f} s" + ("" if proc.returncode == 0 else
                                                        f" (exit {proc.returncode}: {proc.stderr.strip()[-300:]})"))
    return out


def table(out_dirs: list[list[Path]]) -> tuple[str, str, list[dict]]:
    """Terminal and markdown tables, and JSON rows, from each repeat's result folders."""
    from bench.api import RESULTS_FILENAME, load_results
    from tabulate import tabulate

    from bench_baselines.ratios import HEADERS, Ratio, ratios, rows

    per_repeat: list[list[Ratio]] = []
    for dirs in out_dirs:
        results = [r for d in dirs if (d / RESULTS_FILENAME).is_file() for r in load_results(d / RESULTS_FILENAME).results]
        per_repeat.append(ratios(results))
    if not per_repeat or not per_repeat[0]:
        return "no comparable rows (did the runs fail? see the run folders)", "", []
    keyed: dict[tuple[str, str, str], list[Ratio]] = {}
    for items in per_repeat:
        for r in items:
            keyed.setdefault((r.ours, r.baseline, r.layers), []).append(r)
    chosen = [aggregate(group) for group in keyed.values()]
    spread = [_range(group) for group in keyed.values()]
    body = [(*row, s) for row, s in zip(rows(chosen), spread)]
    headers = (*HEADERS, "range over repeats")
    data = [dict(zip(headers, row)) for row in body]
    return tabulate(body, headers=headers), tabulate(body, headers=headers, tablefmt="github"), data


def aggregate(group: list[Any]) -> Any:
    """One row from the repeats of a pair: the median of the repeats' own ratios (repeat r of ours and of
    the baseline ran next to each other with seed r: a pair), median throughputs shown beside it, mean
    quality (the repeats use different seeds, so quality is averaged over seeds)."""
    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.fmean(known) if known else None

    paired = tuple(r.ratio for r in group if r.baseline and r.ratio is not None)
    return dataclasses.replace(group[0], repeat_ratios=paired, ours_value=median([r.ours_value for r in group]),
                               baseline_value=median([r.baseline_value for r in group]),
                               ours_quality=mean([r.ours_quality for r in group]),
                               baseline_quality=mean([r.baseline_quality for r in group]))


def _range(group: list[Any]) -> str:
    values = [(r.ratio if r.baseline else r.ours_value) for r in group]
    known = [v for v in values if v is not None]
    return f"{min(known):.2f}-{max(known):.2f}" if len(known) > 1 else "-"


def split_passthrough(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """This command's arguments, and those after ``--`` that go to every ``bench run``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        return args, []
    cut = args.index("--")
    return args[:cut], args[cut + 1:]


def main(argv: list[str] | None = None) -> int:
    argv, passthrough = split_passthrough(argv)
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m bench_baselines.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".bench") / f"speed-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--preset", default="default", help="bench preset for every run (default: default)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the whole plan N times, interleaved, repeat r with --seed r: each row is the median "
                             "throughput and the mean quality over the repeats")
    parser.add_argument("--only", choices=GROUPS, action="append",
                        help="run only this pair (repeatable); classification: every pair but sft")
    parser.add_argument("--sft-train-samples", type=int, default=0,
                        help="training prompts for the sft pair, both sides (default: sft's own default, 1,200)")
    parser.add_argument("--head-lr", default="1e-3", help="lr of the hf-trainer head runs (last-layers' default)")
    parser.add_argument("--table-only", action="store_true", help="print the table of an earlier --out, run nothing")
    args = parser.parse_args(argv)
    jobs = [j for j in plan(args.sft_train_samples, args.head_lr) if j.selected(args.only)]
    out_dirs: list[list[Path]] = []
    if args.table_only:
        for r in range(args.repeats):
            out_dirs.append([args.out / j.slug(i, r) for i, j in enumerate(jobs)])
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"speed comparison: {len(jobs)} runs x {args.repeats} repeat(s), preset {args.preset}, into {args.out}")
        for r in range(args.repeats):
            out_dirs.append([run_job(j, args.out / j.slug(i, r), args.preset, passthrough, seed=r if args.repeats > 1
                                     else None) for i, j in enumerate(jobs)])
    text, markdown, data = table(out_dirs)
    print(text)
    if markdown:
        (args.out / "speed.md").write_text(markdown + "\n")
        (args.out / "speed.json").write_text(json.dumps(data, indent=2) + "\n")
        print(f"written: {args.out / 'speed.md'}, {args.out / 'speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
