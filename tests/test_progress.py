"""Progress bars: on stderr when enabled (a TTY, or BENCH_PROGRESS=1), never with -q."""

from __future__ import annotations

import json

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
