"""Fast dropout against ``torch.nn.functional.dropout`` on the CPU, one step-level claim of the README.

    python scripts/dropout_speed.py [--rounds 15] [--calls 50] [--threads 1] [--json docs/results/cpu-fast-dropout.json]

Forward and backward of dropout (p = 0.1, training) on the attention probabilities of a MiniLM training
step of the default preset (32 x 12 x 30 x 30, fp32: batches of about 30 tokens), ``--calls`` calls per
side per round, the two sides interleaved round by round (a neighbour's load hits both alike); the
ratio is the median of the rounds' own ratios (F.dropout time / fast dropout time). ``--json`` writes
the results file the README's figure block comes from (``python scripts/figures.py`` renders it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (32, 12, 30, 30)
P = 0.1


def seconds(fn: Callable[[Any], Any], x: Any, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn(x).sum().backward()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared machine, more "
                                                              "threads than free cores measure the scheduler)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)

    from bench.measure.machine import cpu_model_and_flags
    from bench.speed.fast_dropout import drop

    torch.manual_seed(0)
    x = torch.rand(SHAPE, requires_grad=True)

    def plain(t: Any) -> Any:
        return torch.nn.functional.dropout(t, P, training=True)

    def fast(t: Any) -> Any:
        return drop(t, P, training=True)

    seconds(plain, x, 5), seconds(fast, x, 5)  # warm-up
    ratios, plain_s, fast_s = [], [], []
    for _ in range(args.rounds):
        a, b = seconds(plain, x, args.calls), seconds(fast, x, args.calls)
        plain_s.append(a)
        fast_s.append(b)
        ratios.append(a / b)
    plain_rate = args.calls / statistics.median(plain_s)
    fast_rate = args.calls / statistics.median(fast_s)
    print(f"F.dropout {plain_rate:,.0f} calls/s, fast dropout {fast_rate:,.0f} calls/s; median of {args.rounds} "
          f"rounds' ratios {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    if args.json is not None:
        model, flags = cpu_model_and_flags()
        isa = ", ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16") if f in flags)
        data = {
            "kind": "ratios", "machine": f"{os.cpu_count()}-core {model} ({isa}), torch {torch.__version__}, "
                                         f"{torch.get_num_threads()} threads",
            "precision": "fp32",
            "command": f"python scripts/dropout_speed.py --threads {args.threads} --json {args.json}",
            "date": time.strftime("%Y-%m-%d"), "reproduced": True,
            "note": f"Dropout p = {P} forward and backward on a {' x '.join(map(str, SHAPE))} tensor, {args.calls} "
                    f"calls per side per round, {args.rounds} interleaved rounds; the machine was shared.",
            "unit": "calls/s", "quality": None, "label_columns": ["dropout", "against"],
            "rows": [{"labels": ["`bench.speed.fast_dropout.drop`", "`F.dropout`"], "strategy": "fast-dropout",
                      "baseline_strategy": "F.dropout", "ours": round(fast_rate, 1), "baseline": round(plain_rate, 1),
                      "repeat_ratios": [round(r, 4) for r in ratios], "target": 1.0}],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
