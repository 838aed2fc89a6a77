"""Which reference workload tracks a step's speed best between processes: the experiment behind
``bench.measure.meter.SpeedIndex`` (docs/ci.md, "Paired steps").

Each round runs three processes one after another: a baseline, the same code, and the same code with
every step 10% slower. A process times ``--steps`` forwards of a MiniLM-sized BERT (random weights,
batches of 16 with varying lengths, like the ``ci`` preset's last-layers steps) and, after each, every
candidate reference. For each candidate, each pair's change is the median step ratio divided by the
median reference ratio; the table gives their mean and standard deviation over the rounds. A good
reference gives identical pairs a small spread and the 10% pairs +10%.

    python tests/benchmarks/speed_index_choice.py --rounds 8          # about 1 minute a round on 2 cores

Measured on a 2-core EPYC VM (fp32) with the first version of this experiment, which timed transformers'
BertLayer where the block now stands (7 + 8 rounds): the 192x192 product 3.8% for identical pairs, the
BERT layer of the default's size 1.6-1.9%, layers with a quarter of the tokens or a 256-wide block
5.8-8.1%. Then the 20-pair calibration of the shipped block (tests/benchmarks/calibrate.py): 2.5%, 2.2%
where the machine's speed moved by less than 1.2x.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time


def candidates(device: str) -> dict:
    import torch

    from bench.measure.meter import SpeedIndex

    a, b = torch.randn(192, 192), torch.randn(192, 192)

    def product() -> float:
        start = time.perf_counter()
        a @ b
        return time.perf_counter() - start

    return {"matmul-192": product,
            SpeedIndex.name: SpeedIndex(device).probe,
            "block-d384-4x32": SpeedIndex(device, batch=4).probe,
            "block-d256-8x32": SpeedIndex(device, dim=256, heads=4, batch=8).probe}


def one_process(steps: int, slowdown: float) -> None:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    rng = random.Random(0)
    model = BertModel(BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                 intermediate_size=1536)).eval()
    refs = candidates("cpu")
    busy = torch.randn(128, 128)
    out = []
    with torch.no_grad():
        for i in range(steps + 5):
            ids = torch.randint(0, 30000, (16, rng.choice([12, 16, 20, 24, 32, 40, 48, 64])))
            start = time.perf_counter()
            model(ids)
            if slowdown:
                until = time.perf_counter() + slowdown * (time.perf_counter() - start)
                while time.perf_counter() < until:
                    busy @ busy
            row = {"step": time.perf_counter() - start, **{k: f() for k, f in refs.items()}}
            if i >= 5:  # warm-up
                out.append(row)
    json.dump(out, sys.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        one_process(args.steps, args.child)
        return 0

    def run(slowdown: float) -> list[dict]:
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--child", str(slowdown)]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    changes: dict[str, dict[str, list[float]]] = {}
    for r in range(args.rounds):
        base, same, slow = run(0.0), run(0.0), run(0.10)
        for cell, cur in (("same", same), ("10% slower", slow)):
            step = statistics.median(math.log(c["step"] / b["step"]) for b, c in zip(base, cur))
            for name in base[0]:
                if name == "step":
                    continue
                ref = statistics.median(math.log(c[name] / b[name]) for b, c in zip(base, cur))
                changes.setdefault(name, {}).setdefault(cell, []).append(100 * math.expm1(step - ref))
            changes.setdefault("(none)", {}).setdefault(cell, []).append(100 * math.expm1(step))
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    def sd(values: list[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else float("nan")

    print("| reference | identical pairs: mean, sd (%) | 10% slower: mean, sd (%) |")
    print("|---|---|---|")
    for name, cells in changes.items():
        same_c, slow_c = cells["same"], cells["10% slower"]
        print(f"| {name} | {statistics.fmean(same_c):+.1f}, {sd(same_c):.1f} | {statistics.fmean(slow_c):+.1f}, "
              f"{sd(slow_c):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
