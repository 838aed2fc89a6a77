"""Calibrate ``bench compare`` as CI uses it: one run per side of the CI preset, one after the other,
under whatever load the machine has; count false alarms, detections and inconclusives.

Not part of the test suite (it takes about an hour on a 2-core CPU). Each round runs, one ``bench run``
process after another and in a rotating order, a baseline and four current runs of the CI preset
(``-s all-layers -s last-layers --preset ci`` on the default assets): the same code, and the same code
with every step 5%, 10% and 25% slower (tests/plugins_slow/slowdown.py: matrix products inside the timed
region). Each current run is compared with the round's baseline (``bench compare``'s defaults, or the
``--fail-on`` given); the slowdown is spread evenly over each step, as a real regression would be.

    python tests/benchmarks/calibrate.py --pairs 20 --out /tmp/calibrate           # run and evaluate
    python tests/benchmarks/calibrate.py --out /tmp/calibrate --reuse --sweep      # evaluate again

It also prints the runner's run-to-run noise: the standard deviation of the identical pairs' load-normalised
change, the figure for ``bench compare --noise-floor`` (the default, 2%, is this measurement on a shared
2-core VM). ``--sweep`` recounts from the same runs for other noise floors, throughput thresholds and time
measures (wall time with and without the speed index, CPU time, no floor) and with the whole speed-index
change divided out (step sensitivity 1, the model before 2026-11-30), which is how the defaults were
chosen (docs/ci.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
SLOWDOWN_PLUGINS = TESTS / "plugins_slow"
CELLS = {"same": 0.0, "slow-5": 0.05, "slow-10": 0.10, "slow-25": 0.25}
STRATEGIES = ("all-layers", "last-layers")
RUN_ARGS = ("--preset", "ci")


def run_one(folder: Path, slowdown: float, extra: list[str]) -> None:
    """One ``bench run`` of the CI preset into ``folder``; ``extra`` holds the strategies and more arguments."""
    env = dict(os.environ, BENCH_PROGRESS="0", BENCH_SLOWDOWN=str(slowdown))
    plugins = ["--plugins-dir", str(SLOWDOWN_PLUGINS)] if slowdown > 0 else []
    cmd = [sys.executable, "-m", "bench", "-q", *plugins, "run", *RUN_ARGS, "--out", str(folder), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def run_round(folder: Path, index: int, extra: list[str]) -> None:
    """The baseline first, then the four current runs in an order that rotates with the round."""
    run_one(folder / "base", 0.0, extra)
    names = list(CELLS)
    names = names[index % len(names):] + names[:index % len(names)]
    for name in names:
        run_one(folder / name, CELLS[name], extra)


def evaluate(out: Path, thresholds: list[str], measure: str = "wall", normalise: bool = True,
             noise_floor: float | None = None, entry_floors: dict[str, float] | None = None) -> dict:
    """Count verdicts as ``bench compare`` gives them; ``noise_floor``/``entry_floors`` as its ``--noise-floor``
    (None: each strategy's declared floor, recorded with its results, else the default)."""
    from bench.compare.comparison import compare
    from bench.compare.metrics import thresholds_from
    from bench.compare.sources import load_source

    th = thresholds_from(thresholds)
    rounds = sorted((p for p in out.glob("round-*") if all((p / n / "results.json").is_file()
                                                           for n in ("base", *CELLS))),
                    key=lambda p: int(p.name.split("-")[1]))
    counts: dict[str, dict[str, dict[str, int]]] = {}
    rows = []
    for r in rounds:
        base = load_source(r / "base")
        row: dict = {"round": r.name}
        for cell in CELLS:
            cur = load_source(r / cell)
            cmp = compare(base, cur, th, measure=measure, normalise=normalise, noise_floor=noise_floor,
                          entry_floors=entry_floors)
            for be, ce in zip(base.entries, cur.entries):
                refs = [[x for x in e.steps.reference if x] for e in (be, ce)]
                if all(refs):
                    row[f"{ce.key} {cell} speed shift"] = statistics.median(refs[1]) / statistics.median(refs[0])
            for c in cmp.changes:
                if c.metric != "throughput":
                    continue
                tally = counts.setdefault(c.entry, {}).setdefault(cell, {"regression": 0, "inconclusive": 0,
                                                                          "ok": 0, "improvement": 0})
                tally[c.verdict or "ok"] = tally.get(c.verdict or "ok", 0) + 1
                row[f"{c.entry} {cell}"] = (round(c.change or 0.0, 1), c.low, c.high, c.verdict)
        rows.append(row)
    return {"measure": measure, "normalise": normalise, "noise_floor": noise_floor,
            "entry_floors": dict(entry_floors or {}), "thresholds": thresholds,
            "pairs": len(rounds), "counts": counts, "rounds": rows}


@contextmanager
def sensitivity(step_sensitivity: float, shift_noise: float) -> Iterator[None]:
    """Evaluate with another share of the speed index's change divided out (paired.STEP_SENSITIVITY) and
    its uncertainty (paired.SHIFT_NOISE)."""
    from bench.compare import paired

    saved = paired.STEP_SENSITIVITY, paired.SHIFT_NOISE
    paired.STEP_SENSITIVITY, paired.SHIFT_NOISE = step_sensitivity, shift_noise
    try:
        yield
    finally:
        paired.STEP_SENSITIVITY, paired.SHIFT_NOISE = saved


def run_to_run_noise(report: dict, max_shift: float = 1.2) -> dict[str, tuple[float, float, int]]:
    """Per strategy, from a report evaluated with ``noise_floor=0``: the standard deviation (percent) of the
    identical pairs' throughput change, over all pairs and over the pairs whose speed indexes were within
    ``max_shift`` of each other (and how many those were). The second is the figure for ``bench compare
    --noise-floor``: what larger shifts leave behind, ``bench compare`` adds itself (paired.SHIFT_NOISE)."""
    out = {}
    for entry in report["counts"]:
        rows = [row for row in report["rounds"] if f"{entry} same" in row]
        changes = [row[f"{entry} same"][0] for row in rows]
        steady = [row[f"{entry} same"][0] for row in rows
                  if max(row.get(f"{entry} same speed shift", 1.0), 1 / row.get(f"{entry} same speed shift", 1.0))
                  <= max_shift]
        if len(changes) >= 3 and len(steady) >= 3:
            # the throughput change is the inverse of the time change; at a few percent they are alike
            out[entry] = (statistics.stdev(changes), statistics.stdev(steady), len(steady))
    return out


def print_table(report: dict) -> None:
    floors = [f"{name}={100 * floor:g}%" for name, floor in report.get("entry_floors", {}).items()]
    if report["noise_floor"] is not None:
        floors.insert(0, f"{100 * report['noise_floor']:g}%")
    print(f"{report['pairs']} pairs per cell; time: {report['measure']}"
          f"{', load-normalised' if report['normalise'] and report['measure'] == 'wall' else ''}; noise floor "
          f"{', '.join(floors) or 'each strategy declared (bench compare default)'}; thresholds: "
          f"{', '.join(report['thresholds'])}")
    print("| strategy | current run | regression | inconclusive | ok | improvement |")
    print("|---|---|---|---|---|---|")
    for entry, cells in report["counts"].items():
        for cell in CELLS:
            c = cells.get(cell, {})
            what = "same code" if cell == "same" else f"{int(CELLS[cell] * 100)}% slower steps"
            print(f"| {entry} | {what} | {c.get('regression', 0)} | {c.get('inconclusive', 0)} | {c.get('ok', 0)} | "
                  f"{c.get('improvement', 0)} |")


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20, help="rounds: each one baseline and four current runs")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-calibrate"))
    ap.add_argument("--reuse", action="store_true", help="only evaluate the runs already in --out")
    ap.add_argument("--sweep", action="store_true", help="also count other thresholds and time measures")
    ap.add_argument("--fail-on", action="append", default=[], help="thresholds to evaluate (as bench compare)")
    ap.add_argument("--noise-floor", action="append", default=[], metavar="[NAME=]PCT",
                    help="count the default table with this floor, as bench compare --noise-floor (repeatable)")
    ap.add_argument("--run-arg", action="append", default=[], help="more bench run arguments for every run")
    ap.add_argument("--strategy", action="append", default=[],
                    help=f"strategy to run, repeatable (default: {' and '.join(STRATEGIES)})")
    args = ap.parse_args()
    strategies = [a for s in (args.strategy or STRATEGIES) for a in ("-s", s)]

    from bench.compare.command import noise_floors
    from bench.compare.metrics import DEFAULT_THRESHOLDS

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        start = len(list(args.out.glob("round-*")))
        for i in range(start, start + args.pairs):
            t0 = time.perf_counter()
            run_round(args.out / f"round-{i}", i, [*strategies, *args.run_arg])
            print(f"round {i}: {time.perf_counter() - t0:.0f} s (load average {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
    thresholds = [*DEFAULT_THRESHOLDS, *args.fail_on]
    floors = noise_floors(args.noise_floor)
    report = evaluate(args.out, thresholds, **floors)
    print(f"CPU: {os.cpu_count()} cores; runs: bench run {' '.join([*RUN_ARGS, *strategies, *args.run_arg])}")
    print_table(report)
    reports = {"default": report}
    raw = evaluate(args.out, thresholds, noise_floor=0.0)
    noise = run_to_run_noise(raw)
    reports["no noise floor"] = raw
    print()
    print_table(raw)
    for entry, (sd, steady, n) in noise.items():
        print(f"{entry}: identical pairs moved by a standard deviation of {sd:.1f}% (load-normalised), {steady:.1f}% "
              f"in the {n} whose speed indexes were within 1.2x: bench compare --noise-floor {entry}={steady:.1f} "
              f"on this runner (or the strategy's run_to_run_noise_pct)")
    if args.sweep:
        with sensitivity(1.0, 0.12):  # before 2026-11-30: the whole index change divided out
            rep = evaluate(args.out, thresholds, **floors)
        reports["step sensitivity 1"] = rep
        print()
        print("step sensitivity 1 (the index's whole change divided out), shift noise 12%:")
        print_table(rep)
        for floor in (0.01, 0.03):
            rep = evaluate(args.out, thresholds, noise_floor=floor)
            reports[f"noise floor {100 * floor:g}%"] = rep
            print()
            print_table(rep)
        for measure, normalise in (("wall", False), ("wall", True), ("cpu", False)):
            for pct in (3, 5, 7):
                rep = evaluate(args.out, [*DEFAULT_THRESHOLDS, f"throughput=-{pct}%"], measure, normalise, **floors)
                reports[f"{measure}{'-normalised' if normalise else ''} -{pct}%"] = rep
                print()
                print_table(rep)
    (args.out / "calibration.json").write_text(json.dumps({"run_to_run_noise_percent": noise, **reports}, indent=2,
                                                          default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
