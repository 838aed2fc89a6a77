"""Run bad inputs and faults against `bench` and write what the user sees: docs/faults.md.

Every case runs `bench` as a user would (a new process, in a folder of its own), then checks the
promise of issue 18: the exit code is the documented one, an error is one line naming the culprit
(`bench: error: ...`), no traceback, a results file left behind is valid with every earlier result
kept, and no run process outlives `bench`. The table (case, command, what the user sees, exit code)
goes into docs/faults.md between its markers; the script exits 1 when any case breaks its promise.

    python scripts/faults.py                 # every case, 2 at a time; rewrites the table in docs/faults.md
    python scripts/faults.py --only 12 40    # some cases, table not written
    python scripts/faults.py --list          # the cases and their numbers

It needs the test plugin tests/plugins_faults/faulty.py (strategies that raise, hang, exit, allocate on
request) and builds a tiny random BERT and a small CSV offline; about 4 minutes on a busy 2-core CPU.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ROOT / "tests" / "plugins_faults"
DOC = ROOT / "docs" / "faults.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
P = ["--plugins-dir", "{faults}", "-p", "no:profiler"]  # the misbehaving test strategies, no profiler


@dataclass
class Case:
    title: str
    args: list[str]
    expect: int
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the case's folder first
    check: Callable[[Path, Outcome], str | None] | None = None  # a problem, or None
    stop: tuple[str, int] | None = None  # (run folder that must reach phase 'train', signal to send bench)
    concurrent: list[str] | None = None  # a second bench run started while this one is in phase 'train'
    prepare: list[list[str]] = field(default_factory=list)  # bench commands run first (their output unseen)


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    child: int | None = None  # the run process's pid, for the stop cases
    second: Outcome | None = None


# -------------------------------------------------------------------------------------------------
# Checks.
# -------------------------------------------------------------------------------------------------


def results(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())["results"]


def rows(*expected: tuple[str, str], out: str = "out") -> Callable[[Path, Outcome], str | None]:
    """The results file holds exactly these (strategy, status or error type) rows."""
    def check(work: Path, outcome: Outcome) -> str | None:
        found = [(r["strategy"], r["error"]["type"] if r["error"] else r["status"]) for r in results(work / out)]
        return None if found == list(expected) else f"rows {found}, expected {list(expected)}"
    return check


def unchanged(name: str) -> Callable[[Path, Outcome], str | None]:
    def check(work: Path, outcome: Outcome) -> str | None:
        return None if not (work / "ran").exists() else f"{name}: a config file's plugin ran"
    return check


def gone(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


# -------------------------------------------------------------------------------------------------
# The cases.
# -------------------------------------------------------------------------------------------------

FLOAT_LABELS = "text,label\n" + "".join(f"review {i},{i % 7 / 7:.3f}\n" for i in range(40))
EVIL = {"planted/evil.py": "from pathlib import Path\nPath('ran').write_text('ran')\n",
        "bench.toml": 'plugins_dir = "planted"\n'}
GOOD_ROW = ["run", *P, "-s", "fault-a", "--no-isolate", "--out", "res"]


def cases() -> list[Case]:
    hang = ["-o", "fault-b.mode=hang"]
    three = ["-s", "fault-a", "-s", "fault-b", "-s", "fault-c"]
    return [
        # -- options ------------------------------------------------------------------------------------
        Case("a misspelt option (no abbreviations)", ["run", "-s", "all-layers", "--epoch", "7"], 2),
        Case("batch size 0", ["run", "-s", "all-layers", "--batch-size", "0"], 2),
        Case("negative learning rate", ["run", "-s", "all-layers", "--lr", "-1"], 2),
        Case("warm-up ratio above 1", ["run", "-s", "all-layers", "--warmup-ratio", "1.5"], 2),
        Case("held-out fraction of 1", ["run", "-s", "sft", "--test-fraction", "1"], 2),
        Case("a C grid with 0", ["run", "-s", "feature-extraction", "--c-grid", "1,0"], 2),
        Case("a NaN learning rate", ["run", "-s", "all-layers", "--lr", "nan"], 2),
        Case("negative seed", ["run", "-s", "all-layers", "--seed", "-1"], 2),
        Case("negative warm-up steps", ["run", "-s", "all-layers", "--warmup-steps", "-2"], 2),
        Case("an unknown device", ["run", "--device", "gpu"], 2),
        Case("an unknown precision", ["run", "--precision", "fp8"], 2),
        Case("a misspelt strategy", ["run", "-s", "ful-layers"], 2),
        Case("a misspelt strategy option", ["run", "-s", "all-layers", "-o", "all-layers.epohcs=3"], 2),
        Case("-o without a strategy", ["run", "-o", "epochs=3"], 2),
        Case("a word where a number goes", ["run", "-s", "all-layers", "--epochs", "three"], 2),
        Case("a misspelt preset", ["run", "--preset", "smok"], 2),
        Case("a memory cap that is no size", ["run", *P, "-s", "fault-a", "--max-memory", "lots"], 2),
        Case("a negative timeout", ["run", *P, "-s", "fault-a", "--timeout", "-5"], 2),
        Case("a timeout without isolation", ["run", *P, "-s", "fault-a", "--timeout", "5", "--no-isolate"], 2),
        Case("an unknown command", ["frobnicate"], 2),
        Case("compare with one side", ["compare", "only-one.json"], 2),
        # -- config files ---------------------------------------------------------------------------------
        Case("a config file that is not TOML", ["run"], 2, {"bench.toml": "epochs = = 3\n"}),
        Case("a config file that is not UTF-8", ["run"], 2, {"bench.toml": b"seed = 1 # caf\xe9\n"}),
        Case("a misspelt config key", ["run"], 2, {"bench.toml": "stepps = 3\n"}),
        Case("a config value of the wrong type", ["run", "-s", "all-layers"], 2, {"bench.toml": 'epochs = "many"\n'}),
        Case("a config file naming plugins, bench run", ["run"], 2, EVIL, unchanged("run")),
        Case("a config file naming plugins, bench report", ["report", "res"], 0, {**EVIL, "empty.toml": ""},
             unchanged("report"), prepare=[["--config", "empty.toml", *GOOD_ROW]]),
        Case("a config file naming plugins, bench list", ["list"], 0, EVIL, unchanged("list")),
        Case("a config file naming plugins, bench --version", ["--version"], 0, EVIL, unchanged("--version")),
        Case("a config file naming plugins, bench compare", ["compare", "res", "res"], 0, {**EVIL, "empty.toml": ""},
             unchanged("compare"), prepare=[["--config", "empty.toml", *GOOD_ROW]]),
        Case("a missing --config file", ["--config", "nothere.toml", "run"], 2),
        # -- data files ------------------------------------------------------------------------------------
        Case("CSV labels that are scores", ["run", "--model", "{model}", "--dataset", "scores.csv", "-s", "all-layers"],
             2, {"scores.csv": FLOAT_LABELS}),
        Case("JSONL labels that are scores", ["run", "--model", "{model}", "--dataset", "scores.jsonl", "-s",
                                              "all-layers"], 2,
             {"scores.jsonl": "".join(json.dumps({"text": f"t {i}", "label": i / 3}) + "\n" for i in range(30))}),
        Case("a CSV that is not UTF-8", ["run", "--model", "{model}", "--dataset", "latin1.csv", "-s", "all-layers"], 2,
             {"latin1.csv": ("text,label\n" + "".join(f"t {i},{i % 2}\n" for i in range(20))).encode()
              + "caf\xe9,1\n".encode("latin-1")}),
        Case("a CSV with a 1 MB cell", ["run", "--model", "{model}", "--dataset", "big.csv", "-s", "all-layers"], 2,
             {"big.csv": "text,label\nok,1\n\"" + "x" * 1_000_000 + "\",0\n"}),
        Case("a CSV without the label column", ["run", "--model", "{model}", "--dataset", "nolabel.csv", "-s",
                                                 "all-layers"], 2, {"nolabel.csv": "text,stars\ngood,5\nbad,1\n"}),
        Case("a CSV with one label", ["run", "--model", "{model}", "--dataset", "one.csv", "-s", "all-layers"], 2,
             {"one.csv": "text,label\n" + "".join(f"t {i},pos\n" for i in range(10))}),
        Case("a dataset file that does not exist", ["run", "--dataset", "./missing.csv", "-s", "all-layers"], 2),
        Case("a JSONL file with a broken line", ["run", "--model", "{model}", "--dataset", "broken.jsonl", "-s",
                                                  "all-layers"], 2, {"broken.jsonl": '{"text": "a", "label": 1}\n{"te\n'}),
        Case("an empty CSV", ["run", "--model", "{model}", "--dataset", "empty.csv", "-s", "all-layers"], 2,
             {"empty.csv": "text,label\n"}),
        # -- models ----------------------------------------------------------------------------------------
        Case("a truncated safetensors file", ["run", "--model", "cut", "-s", "all-layers"], 2, {"cut": "TRUNCATED"}),
        Case("a model folder without config.json", ["run", "--model", "empty-model", "-s", "all-layers"], 2,
             {"empty-model/README.md": "nothing here\n"}),
        Case("a file given as --model", ["run", "--model", "weights.bin", "-s", "all-layers"], 2,
             {"weights.bin": b"\0" * 64}),
        Case("a model shape without --weights random", ["run", "--model", "shape:llama-1b", "-s", "all-layers"], 2),
        # -- the output folder ------------------------------------------------------------------------------
        Case("--out that is a file", ["run", *P, "-s", "fault-a", "--out", "taken"], 2, {"taken": "a file\n"}),
        Case("--out that cannot be created", ["run", *P, "-s", "fault-a", "--out", "/sys/bench-out"], 2),
        Case("--out that is read-only", ["run", *P, "-s", "fault-a", "--out", "ro"], 2, {"ro/": "READ-ONLY"}),
        Case("--out that holds an earlier run", ["run", *P, "-s", "fault-a", "--no-isolate", "--out", "res"], 2,
             prepare=[GOOD_ROW], check=rows(("fault-a", "passed"), out="res")),
        Case("a second run on a folder in use", ["run", *P, *three, *hang, "--out", "out"], 143,
             stop=("out/runs/fault-b-1", signal.SIGTERM),
             concurrent=["run", *P, "-s", "fault-c", "--no-isolate", "--out", "out"],
             check=rows(("fault-a", "passed"), ("fault-b", "interrupted"))),
        Case("--resume of a folder with no results", ["run", "--resume", "nothere"], 2),
        Case("--resume with other options than the kept result", ["run", *P, "--resume", "res", "-s", "fault-a",
                                                                    "-o", "fault-a.steps=2", "--no-isolate"], 2,
             prepare=[GOOD_ROW]),
        Case("--resume after a failure", ["run", *P, "--resume", "res", "-s", "fault-a", "-s", "fault-b",
                                          "--no-isolate"], 0,
             prepare=[["run", *P, "-s", "fault-a", "-s", "fault-b", "-o", "fault-b.mode=raise", "--no-isolate",
                       "--out", "res"]], check=rows(("fault-a", "passed"), ("fault-b", "passed"), out="res")),
        Case("--resume of a run with --repeats after failures", ["run", *P, "--resume", "res", "-s", "fault-a", "-s",
                                                                 "fault-b", "--repeats", "2", "--no-isolate"], 0,
             prepare=[["run", *P, "-s", "fault-a", "-s", "fault-b", "-o", "fault-b.mode=raise", "--repeats", "2",
                       "--no-isolate", "--out", "res"]],
             check=rows(("fault-a", "passed"), ("fault-a", "passed"), ("fault-b", "passed"), ("fault-b", "passed"),
                        out="res")),
        # -- results files -------------------------------------------------------------------------------------
        Case("report: schema_version \"2.0\"", ["report", "r.json"], 2,
             {"r.json": json.dumps({"schema_version": "2.0", "results": []})}),
        Case("report: results is a number", ["report", "r.json"], 2,
             {"r.json": json.dumps({"schema_version": 1, "created_utc": "", "machine": {}, "results": 5})}),
        Case("report: a newer schema version", ["report", "r.json"], 2,
             {"r.json": json.dumps({"schema_version": 2, "results": []})}),
        Case("report: a row with an unknown status", ["report", "r.json"], 2,
             {"r.json": json.dumps({"schema_version": 1, "created_utc": "", "machine": {}, "results": [
                 {"strategy": "x", "status": "done", "provenance": {}}]})}),
        Case("report: not JSON", ["report", "r.json"], 2, {"r.json": "{results: }"}),
        Case("report: NaN in the JSON", ["report", "r.json"], 2, {"r.json": '{"schema_version": NaN}'}),
        Case("report: a binary file", ["report", "r.json"], 2, {"r.json": bytes(range(256))}),
        Case("report: a missing file", ["report", "nothere.json"], 2),
        # -- compare ------------------------------------------------------------------------------------------
        Case("compare: a binary file", ["compare", "model.bin", "res"], 2, {"model.bin": bytes(range(256))},
             prepare=[GOOD_ROW]),
        Case("compare: runs of different strategies", ["compare", "res", "other"], 2,
             prepare=[GOOD_ROW, ["run", *P, "-s", "fault-b", "--no-isolate", "--out", "other"]]),
        Case("compare: the baseline's strategy failed", ["compare", "failed", "res"], 1,
             prepare=[GOOD_ROW, ["run", *P, "-s", "fault-a", "-o", "fault-a.mode=raise", "--no-isolate", "--out",
                                 "failed"]]),
        Case("compare: a strategy missing from the current run", ["compare", "both", "res", "--fail-on",
                                                                   "throughput=off", "--fail-on", "peak_memory=off"], 1,
             prepare=[GOOD_ROW, ["run", *P, "-s", "fault-a", "-s", "fault-b", "--no-isolate", "--out", "both"]]),
        Case("compare: a strategy only in the current run", ["compare", "res", "both", "--fail-on",
                                                             "throughput=off", "--fail-on", "peak_memory=off"], 1,
             prepare=[GOOD_ROW, ["run", *P, "-s", "fault-a", "-s", "fault-b", "--no-isolate", "--out", "both"]]),
        Case("compare: a misspelt metric", ["compare", "res", "res", "--fail-on", "througput=-5%"], 2,
             prepare=[GOOD_ROW]),
        Case("compare: a pytest-benchmark file with text stats", ["compare", "pb.json", "pb.json"], 2,
             {"pb.json": json.dumps({"benchmarks": [{"name": "t", "stats": {"median": "fast"}}]})}),
        # -- faults while running ------------------------------------------------------------------------------
        Case("a strategy that raises", ["run", *P, *three, "-o", "fault-b.mode=raise", "--no-isolate", "--out",
                                        "out"], 1,
             check=rows(("fault-a", "passed"), ("fault-b", "ValueError"), ("fault-c", "passed"))),
        Case("a strategy whose process exits", ["run", *P, "-s", "fault-a", "-s", "fault-b", "-o", "fault-b.mode=exit",
                                                "--out", "out"], 1,
             check=rows(("fault-a", "passed"), ("fault-b", "ProcessDied"))),
        Case("a strategy killed by SIGKILL", ["run", *P, "-s", "fault-a", "-o", "fault-a.mode=kill", "--out", "out"], 1,
             check=rows(("fault-a", "ProcessDied"))),
        Case("a hang past --timeout", ["run", *P, "-s", "fault-a", "-o", "fault-a.mode=hang", "--timeout", "20",
                                       "--out", "out"], 1, check=rows(("fault-a", "timeout"))),
        Case("a timeout from the config file", ["run", *P, "-s", "fault-a", "-o", "fault-a.mode=hang", "--out", "out"],
             1, {"bench.toml": "timeout = 20\n"}, check=rows(("fault-a", "timeout"))),
        Case("memory past --max-memory", ["run", *P, "-s", "fault-a", "-o", "fault-a.mode=alloc", "--max-memory",
                                          "1536MiB", "--device", "cpu", "--out", "out"], 1,
             check=rows(("fault-a", "out of memory"))),
        Case("CUDA out of memory", ["run", *P, "-s", "fault-a", "-o", "fault-a.mode=cuda-oom", "--no-isolate",
                                    "--out", "out"], 1, check=rows(("fault-a", "out of memory"))),
        Case("a NaN primary metric", ["run", *P, "-s", "fault-a", "-o", "fault-a.accuracy=nan", "--no-isolate",
                                      "--out", "out"], 1, check=rows(("fault-a", "InvalidMetric"))),
        Case("no primary metric", ["run", *P, "-s", "fault-a", "-o", "fault-a.mode=no-primary", "--no-isolate",
                                   "--out", "out"], 1, check=rows(("fault-a", "InvalidMetric"))),
        Case("an extra that JSON cannot hold", ["run", *P, "-s", "fault-a", "-o", "fault-a.mode=bad-extra", "--out",
                                                "out"], 1, check=rows(("fault-a", "UnserialisableOutput"))),
        Case("SIGTERM to bench run", ["run", *P, *three, *hang, "--out", "out"], 143,
             stop=("out/runs/fault-b-1", signal.SIGTERM),
             check=rows(("fault-a", "passed"), ("fault-b", "interrupted"))),
        Case("SIGINT (Ctrl-C) to bench run", ["run", *P, "-s", "fault-b", *hang, "--out", "out"], 130,
             stop=("out/runs/fault-b-1", signal.SIGINT), check=rows(("fault-b", "interrupted"))),
        Case("SIGHUP (terminal closed)", ["run", *P, "-s", "fault-b", *hang, "--out", "out"], 129,
             stop=("out/runs/fault-b-1", signal.SIGHUP), check=rows(("fault-b", "interrupted"))),
        Case("SIGKILL to bench run", ["run", *P, "-s", "fault-b", *hang, "--out", "out"], -9,
             stop=("out/runs/fault-b-1", signal.SIGKILL), check=rows()),
        Case("a corrupt feature cache", ["run", "--model", "{model}", "--dataset", "{data}", "-s", "feature-extraction",
                                         "--train-samples", "0", "--no-isolate", "-p", "no:profiler", "--out", "out"],
             0, prepare=[["run", "--model", "{model}", "--dataset", "{data}", "-s", "feature-extraction",
                          "--train-samples", "0", "--no-isolate", "-p", "no:profiler", "--out", "first", "-q"],
                         ["CORRUPT-FEATURES"]], check=rows(("feature-extraction", "passed"))),
        Case("a plugin module that is not installed", ["-p", "bench_no_such_plugin", "list"], 2),
    ]


# -------------------------------------------------------------------------------------------------
# Running them.
# -------------------------------------------------------------------------------------------------


def substitute(args: list[str], shared: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in shared.items()}) if "{" in a else a for a in args]


def bench(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> Outcome:
    done = subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return Outcome(done.returncode, done.stdout, done.stderr)


def prepare_files(case: Case, work: Path, shared: dict[str, Path]) -> None:
    for name, content in case.files.items():
        path = work / name
        if content == "READ-ONLY":
            path.mkdir(parents=True, exist_ok=True)
            if os.geteuid() != 0:
                path.chmod(0o555)
            else:
                subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True)
            continue
        if content == "TRUNCATED":
            import shutil

            shutil.copytree(shared["model"], path)
            weights = next(path.glob("*.safetensors"))
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def corrupt_features(cache: Path) -> None:
    for npy in sorted((cache / "features").glob("test-*.npy")):
        data = bytearray(npy.read_bytes())
        for i in range(200, len(data), 7):
            data[i] ^= 0x5A
        npy.write_bytes(bytes(data))


def run_case(number: int, case: Case, scratch: Path, shared: dict[str, Path]) -> tuple[Outcome, list[str]]:
    work = scratch / f"case-{number:02d}"
    work.mkdir(parents=True)
    cache = work / "cache"
    env = {**os.environ, "BENCH_PROGRESS": "0", "BENCH_CACHE_DIR": str(cache if "feature cache" in case.title
                                                                       else shared["cache"])}
    env.pop("BENCH_TRUST_CONFIG_PLUGINS", None)
    env.pop("BENCH_PLUGINS", None)
    prepare_files(case, work, shared)
    try:
        for step in case.prepare:
            if step == ["CORRUPT-FEATURES"]:
                corrupt_features(cache)
                continue
            bench(substitute(step, shared), work, env)
        args = substitute(case.args, shared)
        outcome = run_stopped(case, args, work, env, shared) if case.stop else bench(args, work, env)
        return outcome, promises(case, outcome, work)
    finally:
        for name, content in case.files.items():
            if content == "READ-ONLY" and os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(work / name)], check=False, capture_output=True)


def run_stopped(case: Case, args: list[str], work: Path, env: dict[str, str], shared: dict[str, Path]) -> Outcome:
    assert case.stop is not None
    run_dir, sig = case.stop
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    child, second = None, None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = json.loads((work / run_dir / "status.json").read_text())
            except (OSError, ValueError):
                status = {}
            if status.get("phase") == "train":
                child = int(status["pid"])
                break
            time.sleep(0.2)
        if case.concurrent:
            second = bench(substitute(case.concurrent, shared), work, env)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    return Outcome(proc.returncode, stdout, stderr, child, second)


def promises(case: Case, outcome: Outcome, work: Path) -> list[str]:
    """What the case broke of issue 18's promise (empty: nothing)."""
    broken = []
    if outcome.code != case.expect:
        broken.append(f"exit {outcome.code}, expected {case.expect}")
    for what, o in (("", outcome), ("the second run: ", outcome.second)):
        if o is None:
            continue
        if "Traceback" in o.stderr:
            broken.append(f"{what}a traceback")
        errors = [line for line in o.stderr.splitlines() if line.startswith("bench: error:")]
        if len(errors) > 1:
            broken.append(f"{what}{len(errors)} error lines")
        if o.code == 2 and not errors:
            broken.append(f"{what}exit 2 without a `bench: error:` line")
    if outcome.second is not None and (outcome.second.code != 2 or "is in use by another bench run" not in
                                       outcome.second.stderr):
        broken.append("the second run on the folder was not refused")
    if case.stop is not None and not gone(outcome.child):
        broken.append(f"run process {outcome.child} outlived bench")
    for found in work.rglob("results.json"):
        try:
            sys.path.insert(0, str(ROOT))
            from bench.results.store import load_results

            load_results(found)
        except Exception as exc:  # noqa: BLE001 - any failure to read it back is the finding
            broken.append(f"{found.relative_to(work)} does not read back: {exc}")
    if case.check is not None:
        problem = case.check(work, outcome)
        if problem:
            broken.append(problem)
    return broken


# -------------------------------------------------------------------------------------------------
# What the user sees, and the table.
# -------------------------------------------------------------------------------------------------


def seen(case: Case, outcome: Outcome, work: Path, shared: dict[str, Path]) -> str:
    """One line: the error line, or for a run with failed rows the row a failure left, or the result line."""
    if outcome.code < 0:
        return (f"nothing: bench is killed by {signal.Signals(-outcome.code).name} (no handler can run); its run "
                f"process dies with it ({'gone' if gone(outcome.child) else 'STILL RUNNING'})")
    lines = [ln for ln in outcome.stderr.splitlines() if ln.startswith("bench:")]
    if outcome.second is not None:
        second = [ln for ln in outcome.second.stderr.splitlines() if ln.startswith("bench:")]
        lines = [f"second run: {second[-1] if second else '?'}", *(f"first run: {ln}" for ln in lines[-1:])]
        return " / ".join(lines)
    out_dirs = [work / "out", work / "res"]
    failed = []
    for folder in out_dirs:
        if (folder / "results.json").is_file() and outcome.code != 2:
            failed += [f"row {r['strategy']}: {r['error']['type']}: {r['error']['message']}"
                       for r in results(folder) if r["error"]]
    if outcome.code == 2 and lines:
        return lines[-1]
    notes = [ln for ln in outcome.stderr.splitlines() if "feature cache" in ln]
    if notes:
        return notes[0]
    if failed:
        return failed[0] + (f" ({lines[-1]})" if lines else "")
    if lines:
        return lines[-1]
    result = [ln for ln in outcome.stdout.splitlines() if ln.startswith(("result:", "results written", "finetune"))]
    if result:
        return result[-1]
    return (outcome.stdout.strip().splitlines() or [""])[0]


def shown(text: str, work: Path, shared: dict[str, Path]) -> str:
    for name, path in (("tiny-bert", shared["model"]), ("tiny.csv", shared["data"]),
                       ("tests/plugins_faults", shared["faults"]), ("~/.cache/finetune-bench", shared["cache"])):
        text = text.replace(str(path), name)
    text = text.replace(str(work) + "/", "").replace(str(work), ".")
    text = re.sub(r"pid \d+ on \S+, started \S+: ", "pid N on HOST, started TIME: ", text)
    text = re.sub(r"(sha256|says) [0-9a-f]{64}", r"\1 ...", text)
    text = re.sub(r"peak RSS was \d+\.\d\d GiB", "peak RSS was X.XX GiB", text)
    return text.replace("|", "\\|")


def command(case: Case) -> str:
    args = [a.replace("{model}", "tiny-bert").replace("{data}", "tiny.csv").replace("{faults}", "tests/plugins_faults")
            for a in case.args]
    text = "bench " + shlex.join(args)
    if case.files:
        described = {"TRUNCATED": "{name}/: tiny-bert with its safetensors file cut in half",
                     "READ-ONLY": "{name}/ read-only"}
        text += " (with " + ", ".join(described.get(c, "{name}").format(name=n.rstrip("/")) if isinstance(c, str)
                                      else n for n, c in case.files.items()) + ")"
    if case.stop:
        text += f", then {signal.Signals(case.stop[1]).name} in phase train"
    return text.replace("|", "\\|")


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", type=int, default=None, metavar="N", help="run these cases only")
    ap.add_argument("--list", action="store_true", help="list the cases")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at a time (default 2)")
    args = ap.parse_args()
    all_cases = cases()
    if args.list:
        for i, case in enumerate(all_cases, 1):
            print(f"{i:3d}  {case.title}: {command(case)}")
        return 0
    chosen = [(i, c) for i, c in enumerate(all_cases, 1) if args.only is None or i in args.only]
    sys.path.insert(0, str(ROOT))
    from bench.testing import tiny_bert, tiny_sentiment_csv

    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        scratch = Path(tmp)
        shared = {"model": tiny_bert(scratch / "tiny-bert"), "data": tiny_sentiment_csv(scratch / "tiny.csv"),
                  "faults": FAULTS, "cache": Path(os.environ.get("BENCH_CACHE_DIR") or scratch / "cache")}
        started = time.monotonic()
        results_by_number: dict[int, tuple[str, int, list[str]]] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {pool.submit(run_case, i, c, scratch, shared): (i, c) for i, c in chosen}
            for future in concurrent.futures.as_completed(futures):
                i, case = futures[future]
                work = scratch / f"case-{i:02d}"
                try:
                    outcome, broken = future.result()
                    line = shown(seen(case, outcome, work, shared), work, shared)
                    code = outcome.code
                except Exception as exc:  # noqa: BLE001 - the script reports, it does not stop
                    line, code, broken = f"(the case itself failed: {exc})", -1, [str(exc)]
                results_by_number[i] = (line, code, broken)
                mark = "ok  " if not broken else "FAIL"
                print(f"{mark} {i:3d} {case.title}: exit {code}: {line[:150]}" +
                      (f"\n       broken: {'; '.join(broken)}" if broken else ""), flush=True)
        elapsed = time.monotonic() - started
    failures = [i for i, (_, _, broken) in results_by_number.items() if broken]
    print(f"{len(chosen) - len(failures)} of {len(chosen)} cases kept the promise in {elapsed:.0f} s"
          + (f"; broken: {', '.join(map(str, sorted(failures)))}" if failures else ""))
    if args.only is None:
        write_table(all_cases, results_by_number)
    return 1 if failures else 0


def write_table(all_cases: list[Case], found: dict[int, tuple[str, int, list[str]]]) -> None:
    lines = [BEGIN, "", "| # | case | command | what the user sees | exit |", "|---|---|---|---|---|"]
    for i, case in enumerate(all_cases, 1):
        line, code, broken = found[i]
        flag = "" if not broken else " **(broken: " + "; ".join(broken).replace("|", "\\|") + ")**"
        lines.append(f"| {i} | {case.title} | `{command(case)}` | {line}{flag} | {code} |")
    lines += ["", END]
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + "\n".join(lines) + text[end:], encoding="utf-8")
    print(f"table written to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
