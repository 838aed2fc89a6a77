"""Calibrate ``bench compare``'s defaults: false alarms on same-code pairs, detections of a 25% slowdown.

Not part of the test suite. Run it on the machine whose noise you want to measure::

    python tests/benchmarks/calibrate.py --pairs 12 --mode interleaved --out /tmp/calibrate-i --sweep
    python tests/benchmarks/calibrate.py --pairs 12 --mode sequential --out /tmp/calibrate-s --sweep

Every run is the tiny timing workload of tests/test_compare.py (tests/tiny.py: TIMING_ARGS, one
thread); the slow runs load tests/plugins_slow/slowdown.py (every step 25% longer, inside the timed
region).

``--mode interleaved`` (what tests/test_compare.py does, tiny.run_timing_protocol): each round runs
base-a, slow, base-b three times, interleaved, more (up to ten) while the runs spread too much for
a precise comparison, and pools each name's results in one file; pairs base-a/base-b and base-a/slow, all in this process. ``--mode sequential`` (what a CI job faces with a baseline measured at
another time): one ``bench run`` process each, one after the other, compared a/b and a/slow.

Same-code pairs that flag anything are false alarms; slow pairs with a ``throughput`` regression are
detections; both counted with the defaults of bench.compare.core (``--fail-on``/``--alpha`` to try
others, ``--sweep`` for a grid of throughput thresholds and alphas recomputed from the same runs,
``--reuse`` to re-evaluate the runs already in ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from tiny import (  # noqa: E402
    SLOWDOWN_PLUGINS,
    TIMING_ARGS,
    TIMING_ROWS,
    TIMING_RUNS,
    TIMING_THREADS,
    make_sentiment_csv,
    make_tiny_bert,
    run_timing_protocol,
)

PAIRS = {"interleaved": (("base-a", "base-b"), ("base-a", "slow")),
         "sequential": (("base-a", "base-b"), ("base-a", "slow"))}


def run_round(folder: Path, mode: str, model: Path, data: Path, threads: int, slowdown: float) -> None:
    """interleaved: the tests' protocol (tiny.run_timing_protocol), in this process; sequential: one
    ``bench run`` process per run, one after the other, as a CI job and its saved baseline are."""
    if mode == "interleaved":
        run_timing_protocol(model, data, folder, slowdown=slowdown, threads=threads)
        return
    env = dict(os.environ, BENCH_PROGRESS="0", BENCH_SLOWDOWN=str(slowdown), OMP_NUM_THREADS=str(threads))
    for name, slow in TIMING_RUNS.items():
        plugins = ["--plugins-dir", str(SLOWDOWN_PLUGINS)] if slow else []
        cmd = [sys.executable, "-m", "bench", "-q", *plugins, "run", "--model", str(model), "--dataset",
               str(data), "--out", str(folder / name), *TIMING_ARGS]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def evaluate(out: Path, mode: str, thresholds: list[str], alpha: float) -> dict:
    from bench.compare.comparison import compare
    from bench.compare.metrics import thresholds_from
    from bench.compare.sources import load_source

    th = thresholds_from(thresholds)
    (sa, sb), (da, ds) = PAIRS[mode]
    rounds = sorted((p for p in out.glob("round-*") if all((p / n / "results.json").is_file() for n in (sb, ds))),
                    key=lambda p: int(p.name.split("-")[1]))
    rows = []
    for r in rounds:
        same = compare(load_source(r / sa), load_source(r / sb), th, alpha)
        slow = compare(load_source(r / da), load_source(r / ds), th, alpha)

        def tp(c):
            ch = next(x for x in c.changes if x.metric == "throughput")
            return ch.change, ch.p_value, ch.verdict

        rows.append({"round": r.name, "same": tp(same), "same_flagged": not same.ok,
                     "same_flags": [f"{x.metric} {x.change:+.1f}" for x in same.regressions],
                     "slow": tp(slow), "slow_detected": any(x.metric == "throughput" for x in slow.regressions),
                     "repeats": load_source(r / sa).entries[0].runs})
    return {"mode": mode, "alpha": alpha, "thresholds": thresholds, "rounds": rows, "pairs": len(rows),
            "false_alarms": sum(r["same_flagged"] for r in rows), "detections": sum(r["slow_detected"] for r in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=12, help="rounds (each: one same-code pair, one slowdown pair)")
    ap.add_argument("--mode", choices=tuple(PAIRS), default="interleaved")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-calibrate"))
    ap.add_argument("--threads", type=int, default=TIMING_THREADS, help="OMP_NUM_THREADS of each run")
    ap.add_argument("--slowdown", type=float, default=0.25, help="share added to every step of the slow runs")
    ap.add_argument("--reuse", action="store_true", help="only evaluate the runs already in --out")
    ap.add_argument("--sweep", action="store_true", help="also count for other thresholds and alphas")
    ap.add_argument("--fail-on", action="append", default=[], help="thresholds to evaluate (as bench compare)")
    ap.add_argument("--alpha", type=float, default=None)
    args = ap.parse_args()

    from bench.compare.metrics import DEFAULT_THRESHOLDS
    from bench.compare.statistics import DEFAULT_ALPHA

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        model = make_tiny_bert(args.out / "model")
        data = make_sentiment_csv(args.out / "data.csv", rows=TIMING_ROWS)
        start = len(list(args.out.glob("round-*")))
        for i in range(start, start + args.pairs):
            t0 = time.perf_counter()
            run_round(args.out / f"round-{i}", args.mode, model, data, args.threads, args.slowdown)
            load = os.getloadavg()[0]
            print(f"round {i}: {time.perf_counter() - t0:.1f}s (load average {load:.1f})", file=sys.stderr, flush=True)
    alpha = args.alpha or DEFAULT_ALPHA
    thresholds = [*DEFAULT_THRESHOLDS, *args.fail_on]
    report = evaluate(args.out, args.mode, thresholds, alpha)
    print(f"mode {args.mode}; workload: tiny BERT, {TIMING_ROWS} rows, {' '.join(TIMING_ARGS)}; "
          f"OMP_NUM_THREADS={args.threads}; {os.cpu_count()} CPUs; slowdown {args.slowdown:.0%}")
    print(f"thresholds: {', '.join(thresholds)}; alpha {alpha:g}")
    print(f"{'round':10} {'same code: throughput, p, verdict':46} {'slowed: throughput, p, verdict'}")
    for r in report["rounds"]:
        (c1, p1, v1), (c2, p2, v2) = r["same"], r["slow"]
        alarm = " ALARM: " + ", ".join(r["same_flags"]) if r["same_flagged"] else ""
        print(f"{r['round']:10} {c1:+7.1f}% p={_p(p1):8} {v1 or '-':16}{alarm:12} {c2:+7.1f}% p={_p(p2):8} "
              f"{v2 or '-':16} repeats {r['repeats']}")
    print(f"false alarms: {report['false_alarms']}/{report['pairs']} same-code pairs; detections: "
          f"{report['detections']}/{report['pairs']} pairs with a {args.slowdown:.0%} slowdown")
    if args.sweep:
        print("\nsweep: false alarms / detections by throughput threshold (rows) and alpha (columns)")
        report["sweep"] = {}
        for pct in (5, 10, 15, 20):
            cells = []
            for a in (0.05, 0.01, 0.002, 0.0005):
                rep = evaluate(args.out, args.mode, [*DEFAULT_THRESHOLDS, f"throughput=-{pct}%"], a)
                report["sweep"][f"-{pct}% alpha {a}"] = [rep["false_alarms"], rep["detections"]]
                cells.append(f"{a:<6g} {rep['false_alarms']:2d}/{rep['detections']:2d}")
            print(f"  -{pct:2d}%   " + "   ".join(cells))
    (args.out / "calibration.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.1e}"


if __name__ == "__main__":
    sys.exit(main())
