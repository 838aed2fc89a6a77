"""Progress bars: on stderr when enabled (a TTY, or BENCH_PROGRESS=1), never with -q."""

from __future__ import annotations

import json
import time

from bench.core import progress
from bench.host.cli import main


def test_bar_draws_on_stderr_when_enabled(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_PROGRESS", "1")
    assert list(progress.bar(range(5), desc="embedding", total=5)) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert "embedding" in captured.err and captured.out == ""


def test_bar_is_silent_when_disabled(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    assert list(progress.bar(range(3), desc="train", total=3)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_not_a_tty_means_no_bars(monkeypatch):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    assert progress.enabled() is False  # pytest's captured stderr is not a TTY


def test_quiet_flag_turns_bars_and_status_off(toy_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_PROGRESS", "1")
    assert main(["-q", "run", "--plugins-dir", str(toy_dir), "-s", "toy-a", "--no-isolate",
                 "--out", str(tmp_path / "o"), "-p", "no:profiler"]) == 0
    assert "running toy-a" not in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["results"][0]["provenance"]["settings"]["quiet"]


def test_quiet_mode_holds_while_configured_and_is_restored_after(monkeypatch):
    from bench.core.config import BenchConfig
    from bench.host.harness import Harness

    monkeypatch.setenv("BENCH_PROGRESS", "1")
    harness = Harness()
    assert progress.enabled() is True
    with harness.configured(BenchConfig(quiet=True)):
        assert progress.enabled() is False
    assert progress.enabled() is True


# -- plain progress lines (no TTY): driven by a fake clock, never by real time ------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _activity(clock: FakeClock) -> tuple[progress.Activity, list[str]]:
    lines: list[str] = []
    act = progress.Activity(clock=clock, write=lines.append, heartbeat_s=30.0, force=True)
    act.label = "all-layers"
    return act, lines


def test_the_default_heartbeat_comes_within_30_seconds_of_silence():
    clock = FakeClock()
    lines: list[str] = []
    act = progress.Activity(clock=clock, write=lines.append, force=True)  # the default interval
    act.label = "sft"
    for _ in range(29):  # the heartbeat thread ticks every second
        clock.advance(1.0)
        act.tick()
    assert lines == ["bench: sft: starting"]  # before any phase: the run process is starting
    assert progress.HEARTBEAT_S + progress.Heartbeat(act).every_s <= 30


def test_phase_start_and_end_lines_carry_elapsed_rate_and_time_left():
    clock = FakeClock()
    act, lines = _activity(clock)
    act.expect("train", 10)
    act.phase_started("train")
    assert lines == ["bench: all-layers: train started (10 steps)"]
    for _ in range(4):
        clock.advance(2.0)
        act.step_done(samples=32)
    act.phase_ended()  # an epoch of 4 steps: 8 s, 16 samples/s; 6 steps left at 2 s each
    assert lines[-1] == "bench: all-layers: train done in 8s, 4 steps, 16.0 samples/s, ~12s of train left"
    act.phase_started("train")  # the next epoch says where it resumes
    assert lines[-1] == "bench: all-layers: train started (step 5 of 10)"


def test_heartbeat_at_most_every_30_seconds_in_a_long_phase():
    clock = FakeClock()
    act, lines = _activity(clock)
    act.expect("train", 100)
    act.phase_started("train")
    for _ in range(40):  # 40 steps of 3 s: 120 s
        clock.advance(3.0)
        act.step_done(samples=8)
    beats = [line for line in lines if "step " in line and "started" not in line]
    assert len(beats) == 4  # at 30, 60, 90, 120 s: never two within 30 s
    assert beats[0] == "bench: all-layers: train 30s, step 10/100, 2.7 samples/s, ~4m30s left"
    assert beats[-1].startswith("bench: all-layers: train 2m00s, step 40/100")


def test_heartbeat_between_steps_comes_from_tick_and_reports_the_loop():
    clock = FakeClock()
    act, lines = _activity(clock)
    act.phase_started("eval")
    act.loop_item("generate (before)", 0, 20)
    clock.advance(20.0)
    act.loop_item("generate (before)", 5, 20)
    act.tick()
    assert len(lines) == 1  # 20 s of silence: no heartbeat yet
    clock.advance(15.0)
    act.tick()  # what the heartbeat thread does while a long step or a model load runs
    assert lines[-1] == "bench: all-layers: eval 35s, generate (before) 5/20, ~1m45s left"
    clock.advance(31.0)
    act.tick()
    assert len(lines) == 3


def test_a_phase_without_steps_or_loop_says_the_time_left_is_unknown():
    clock = FakeClock()
    act, lines = _activity(clock)
    act.phase_started("setup")
    clock.advance(45.0)
    act.tick()
    assert lines[-1] == "bench: all-layers: setup 45s, time left unknown"
    clock.advance(1.0)
    act.phase_ended()
    assert lines[-1] == "bench: all-layers: setup done in 46s"


def test_bars_feed_the_activity_when_no_bar_is_drawn(monkeypatch):
    clock = FakeClock()
    act, lines = _activity(clock)
    monkeypatch.setattr(progress, "_activity", act)
    act.phase_started("eval")
    for _ in progress.bar(range(4), desc="eval", total=4):
        clock.advance(10.0)
    assert lines[-1] == "bench: all-layers: eval 30s, eval 3/4, ~10s left"


def test_lines_are_off_when_quiet_or_when_bars_are_drawn(monkeypatch):
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    assert progress.lines_enabled() is True
    monkeypatch.setenv("BENCH_PROGRESS", "1")
    assert progress.lines_enabled() is False  # the bars show progress there
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    progress.configure(quiet=True)
    try:
        assert progress.lines_enabled() is False
        lines: list[str] = []
        act = progress.Activity(clock=FakeClock(), write=lines.append)
        act.phase_started("train")
        act.phase_ended()
        assert lines == []
    finally:
        progress.configure(quiet=False)


def test_meter_phases_and_steps_report_to_the_tracked_activity():
    from bench.measure.meter import Meter

    clock = FakeClock()
    act, lines = _activity(clock)
    meter = Meter("cpu", warmup_steps=0)
    with progress.tracking("toy", activity_=act, heartbeat=False):
        meter.expect_steps("train", 2)
        with meter.phase("train"):
            for _ in range(2):
                with meter.step(samples=4):
                    clock.advance(1.0)
    assert lines[0] == "bench: toy: train started (2 steps)"
    assert lines[-1].startswith("bench: toy: train done in 2s, 2 steps, 4.0 samples/s")
    assert progress.activity() is not act  # restored after the block


def test_run_prints_phase_lines_and_an_estimate_without_a_tty(toy_dir, tmp_path, capsys):
    assert main(["run", "--plugins-dir", str(toy_dir), "-s", "toy-a", "--no-isolate",
                 "--out", str(tmp_path / "o"), "-p", "no:profiler"]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "estimate: none yet for toy-a" in out  # never run here, and no reference for a toy
    assert "bench: toy-a: train started" in out and "bench: toy-a: train done in" in out


def test_quiet_run_prints_no_progress_lines(toy_dir, tmp_path, capsys):
    assert main(["-q", "run", "--plugins-dir", str(toy_dir), "-s", "toy-a", "--no-isolate",
                 "--out", str(tmp_path / "o"), "-p", "no:profiler"]) == 0
    captured = capsys.readouterr()
    assert "bench: toy-a:" not in captured.err + captured.out and "estimate:" not in captured.err + captured.out


def test_the_second_run_is_estimated_from_this_machines_record(toy_dir, tmp_path, capsys):
    args = ["run", "--plugins-dir", str(toy_dir), "-s", "toy-a", "--no-isolate", "-p", "no:profiler"]
    assert main([*args, "--out", str(tmp_path / "o1")]) == 0
    assert "estimate: none yet" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "o2")]) == 0
    assert "(median of 1 earlier run here)" in capsys.readouterr().err


def test_nested_tracking_of_one_strategy_shares_one_activity_and_one_heartbeat(monkeypatch):
    # The run process tracks the strategy from its start (setup included) and the worker tracks it again
    # around bench_run_strategy: a second activity would leave the first one's heartbeat saying
    # "starting" every 25 s in the middle of training (seen in a CI-style log).
    started = []

    class CountingHeartbeat:
        def __init__(self, target):
            self.target = target

        def start(self):
            started.append(self.target)

        def stop(self):
            pass

    monkeypatch.setattr(progress, "Heartbeat", CountingHeartbeat)
    monkeypatch.setattr(progress, "lines_enabled", lambda: True)
    with progress.tracking("sft") as outer:
        with progress.tracking("sft") as inner:
            assert inner is outer and progress.activity() is outer
        with progress.tracking("other") as different:  # another label is another activity
            assert different is not outer
        assert progress.activity() is outer
    assert started == [outer, different]
    assert progress.activity() is not outer and not outer.tracked


def test_the_host_fills_a_silence_of_its_run_process_and_names_the_phase(tmp_path, monkeypatch, capsys):
    # A run process whose interpreter is held by a long C call (the profiler's trace export held one for
    # 40 s in an sft smoke run) cannot write its own heartbeat; the host, waiting for it, does.
    import types

    from bench.host import harness, runfolders

    class Proc:
        def __init__(self, polls):
            self.polls = polls

        def is_alive(self):
            return self.polls > 0

        def join(self, timeout=None):
            time.sleep(0.06)
            self.polls -= 1

    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(harness, "_HOST_GRACE_S", 0.0)
    monkeypatch.setattr(progress, "lines_enabled", lambda: True)
    runfolders.write_status(tmp_path, "train")
    heard = types.SimpleNamespace(value=0.0)  # the run process never spoke
    harness._watch(Proc(3), heard, "sft", tmp_path, None)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("bench: sft: in phase 'train', ") for line in lines)
    heard.value = time.monotonic() + 3600  # it speaks for itself: the host stays quiet
    harness._watch(Proc(3), heard, "sft", tmp_path, None)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "lines_enabled", lambda: False)  # -q, or bars on a TTY
    heard.value = 0.0
    harness._watch(Proc(3), heard, "sft", tmp_path, None)
    assert capsys.readouterr().err == ""
