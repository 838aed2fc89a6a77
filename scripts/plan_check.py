"""bench plan against measured runs: for each case, `bench plan` and a shape-only `bench run` of the same
strategy, shape, batch and length; prints a markdown table of planned against measured bytes.

    python scripts/plan_check.py [--out DIR] [--device cpu|cuda] [--precision fp32|bf16] [--json FILE]

``--json docs/results/cpu-plan-check.json`` also writes the table as the results file the README's
figure block comes from (``python scripts/figures.py`` renders it).

Parameters, gradients and AdamW state must agree to the byte; activations (what one micro-batch saves
for backward) within the error shown. On a GPU the table also compares the planned total with the
train phase's peak allocated memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = (  # strategy, model, batch, tokens
    ("all-layers", "tiny", 4, 16),
    ("last-layers", "tiny", 4, 16),
    ("lora", "tiny", 4, 16),
    ("all-layers", "shape:minilm-l6", 32, 128),
    ("last-layers", "shape:minilm-l6", 32, 128),
    ("lora", "shape:minilm-l6", 32, 128),
    ("sft", "shape:smollm2-135m", 4, 128),
    ("lora-sft", "shape:smollm2-135m", 4, 128),
)


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", "-p", "no:baselines", *args], capture_output=True,
                          text=True, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as a docs/results file")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="plan-check-"))
    out.mkdir(parents=True, exist_ok=True)
    from bench.testing import tiny_bert

    tiny = str(tiny_bert(out / "tiny-bert"))
    rows = []
    for i, (strategy, model, batch, tokens) in enumerate(CASES):
        model = tiny if model == "tiny" else model
        common = ["-s", strategy, "--model", model, "--batch-size", str(batch), "--seq-len", str(tokens),
                  "--max-steps", "3", "--device", args.device, "--precision", args.precision]
        plan = bench("plan", *common, "--plan-format", "json")
        run_dir = out / f"case-{i}"
        run = bench("run", *common, "--weights", "random", "--warmup-steps", "1", "-p", "no:profiler", "-q",
                    "--out", str(run_dir))
        if plan.returncode not in (0, 1) or run.returncode != 0:
            print(f"{strategy} {model}: plan exit {plan.returncode}, run exit {run.returncode}\n{plan.stderr}{run.stderr}",
                  file=sys.stderr)
            continue
        (p,) = json.loads(plan.stdout)
        (r,) = json.loads((run_dir / "results.json").read_text())["results"]
        f, params = p["figures"], r["params"]
        exact = (f["param_bytes"], f["grad_bytes"], f["optimizer_bytes"]) == (
            params["param_bytes"], params["grad_bytes"], params["optimizer_state_bytes"])
        measured = r["activations"]["bytes"]
        error = (f["activation_bytes"] - measured) / measured if measured else float("nan")
        train = next(ph for ph in r["phases"] if ph["name"] == "train")
        peak = train["gpu_peak_allocated_bytes"]
        name = "tiny BERT (2 blocks, hidden 32)" if model == tiny else model
        rows.append(f"| {strategy} | {name} | {batch} x {tokens} | {'yes' if exact else 'NO'} | "
                    f"{f['activation_bytes'] / 2**20:,.2f} | {measured / 2**20:,.2f} | {error:+.1%} | "
                    f"{p['total_bytes'] / 2**20:,.1f} | {'-' if peak is None else f'{peak / 2**20:,.1f}'} |")
    columns = ["strategy", "model", "batch x tokens", "params, grads, AdamW bytes equal", "activations planned MiB",
               "activations measured MiB", "error", "planned total MiB", "measured train peak allocated MiB"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    print("\n".join(rows))
    if args.json is not None:
        write_results(args, columns, rows)
    return 0


def write_results(args: argparse.Namespace, columns: list[str], rows: list[str]) -> None:
    """The table as a results file for scripts/figures.py: the machine, precision and command with it."""
    import os
    import time

    import torch

    from bench.measure.machine import cpu_model_and_flags

    model, flags = cpu_model_and_flags()
    isa = ", ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    machine = (f"{os.cpu_count()}-core {model} ({isa}), torch {torch.__version__}" if args.device == "cpu" else
               f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    command = "python scripts/plan_check.py" + ("" if args.device == "cpu" else f" --device {args.device}") + (
        "" if args.precision == "fp32" else f" --precision {args.precision}") + f" --json {args.json}"
    data = {"kind": "table", "machine": machine, "precision": args.precision, "command": command,
            "date": time.strftime("%Y-%m-%d"), "reproduced": True,
            "columns": columns, "rows": [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]}
    args.json.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"written: {args.json}")


if __name__ == "__main__":
    sys.exit(main())
