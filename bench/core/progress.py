"""Progress output on stderr: bars for long loops, plain progress lines where no bar is drawn, and
one-line notes.

Bars are drawn on a TTY and hidden when stderr is piped; ``BENCH_PROGRESS=0|1`` forces them either
way (a user setting, read at each bar). Where no bar is drawn (CI logs, ``nohup``, ``| tee``), an
:class:`Activity` writes plain lines instead: one when a phase starts and one when it ends (elapsed,
samples/s, the time left estimated from the steps so far), and a heartbeat line when a phase has
been silent for 30 s. Quiet mode (``bench -q``) silences bars and notes; it is part
of the invocation's configuration (``BenchConfig.quiet``) and the object that owns setup applies it
with :func:`configure`, in the host and in every run process.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

T = TypeVar("T")

ENV_PROGRESS = "BENCH_PROGRESS"


class _State:
    quiet = False
    heard: Any = None  # a shared double (multiprocessing.Value) stamped with time.monotonic() at each line
    stderr_fd: int | None = None  # where lines go while file descriptor 2 is silenced (see lines_to_fd)


@contextmanager
def lines_to_fd(fd: int) -> Iterator[None]:
    """Write this process's progress lines and notes to ``fd`` for the block: for a caller that points
    file descriptor 2 at /dev/null to hide a library's native prints (the profiler's trace export, which
    can take most of a minute) and hands over a duplicate of the real stderr, so the heartbeat still shows."""
    previous, _State.stderr_fd = _State.stderr_fd, fd
    try:
        yield
    finally:
        _State.stderr_fd = previous


def _to_stderr(line: str) -> None:
    fd = _State.stderr_fd
    if fd is None:
        print(line, file=sys.stderr, flush=True)
        return
    with suppress(OSError):
        os.write(fd, (line + "\n").encode("utf-8", "replace"))


def report_lines_to(stamp: Any) -> None:
    """Stamp ``stamp.value`` (a shared double, :func:`time.monotonic`, which is system-wide on Linux and
    macOS) with each progress line this process writes, so the host that waits for this run process
    knows when it last spoke and fills a silence itself (:func:`bench.host.harness.run_isolated`)."""
    _State.heard = stamp


def _spoke() -> None:
    if _State.heard is not None:
        _State.heard.value = time.monotonic()


def configure(*, quiet: bool) -> None:
    """Apply the invocation's quiet mode to this process (called by the setup owner)."""
    _State.quiet = bool(quiet)


def quiet() -> bool:
    return _State.quiet


def enabled() -> bool:
    """True when bars should be drawn: never when quiet; else as BENCH_PROGRESS forces; else on a TTY."""
    if _State.quiet:
        return False
    forced = os.environ.get(ENV_PROGRESS)
    if forced is not None:
        return forced == "1"
    return sys.stderr.isatty()


def bar(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when bars are enabled, else yield it unchanged."""
    if not enabled():
        if _State.quiet:
            yield from iterable
            return
        reporter = _activity
        reporter.loop_item(desc, 0, total)
        for i, item in enumerate(iterable, 1):
            yield item
            reporter.loop_item(desc, i, total)
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


def note(message: str) -> None:
    """A one-line status message on stderr (what is being fetched, where it goes), unless quiet."""
    if _State.quiet:
        return
    _to_stderr(message)
    _spoke()


# -------------------------------------------------------------------------------------------------
# Plain progress lines: for logs without a TTY (CI, nohup, | tee), where no bar is drawn.
# -------------------------------------------------------------------------------------------------

HEARTBEAT_S = 25.0  # silence before a heartbeat line: checked every second, so a line at least every ~26 s


def lines_enabled() -> bool:
    """True when plain progress lines are written: not quiet, and no bar is drawn (no TTY, or BENCH_PROGRESS=0)."""
    return not _State.quiet and not enabled()


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short and sortable by eye."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Activity:
    """What this process is doing now (the strategy, its phase, steps and samples so far, the loop it is
    in), turned into one-line progress messages: one when a phase starts, one when it ends, and a
    heartbeat when nothing was written for :data:`HEARTBEAT_S` seconds (checked at each step and loop
    item, and by :class:`Heartbeat` in between). The clock and the writer are injectable, so tests
    drive it with a fake clock; the meter and :func:`bar` feed it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None,
                 heartbeat_s: float = HEARTBEAT_S, force: bool = False, silent: bool = False) -> None:
        self.clock = clock
        self.write = write or _to_stderr
        self.heartbeat_s = heartbeat_s
        self.force = force  # tests: write whether or not lines are enabled here
        self.silent = silent  # write nothing (the activity outside any tracking() block: plan, report)
        self.label = ""
        self.tracked = False  # a tracking() block owns it (a nested block of the same label reuses it)
        self._lock = threading.Lock()
        self._last_line = clock()
        self._phase: str | None = None
        self._phase_started = 0.0
        self._phase_steps = 0
        self._phase_samples = 0
        self._expected: dict[str, int] = {}
        self._done_steps: dict[str, int] = {}
        self._loop: tuple[str, int, int | None, float] | None = None  # desc, done, total, started
        self._phases_seen = 0

    # -- what the meter and bars report ----------------------------------------------------------

    def expect(self, phase: str, steps: int) -> None:
        self._expected[phase] = int(steps)

    def phase_started(self, phase: str) -> None:
        with self._lock:
            now = self.clock()
            self._phase, self._phase_started, self._phase_steps, self._phase_samples = phase, now, 0, 0
            self._phases_seen += 1
            self._loop = None
            expected = self._expected.get(phase)
            done = self._done_steps.get(phase, 0)
            plan = f" (step {done + 1} of {expected})" if expected and done else \
                f" ({expected} steps)" if expected else ""
            self._emit(now, f"{phase} started{plan}")

    def step_done(self, samples: int) -> None:
        with self._lock:
            if self._phase is None:
                return
            self._phase_steps += 1
            self._phase_samples += int(samples)
            self._done_steps[self._phase] = self._done_steps.get(self._phase, 0) + 1
            self._maybe_heartbeat(self.clock())

    def phase_ended(self) -> None:
        with self._lock:
            if self._phase is None:
                return
            now = self.clock()
            elapsed = now - self._phase_started
            parts = [f"{self._phase} done in {duration(elapsed)}"]
            if self._phase_steps:
                parts.append(f"{self._phase_steps} steps")
                parts.append(self._rate(elapsed))
            left = self._left(now)
            if left is not None and left >= 1:
                parts.append(f"~{duration(left)} of {self._phase} left")
            self._emit(now, ", ".join(parts))
            self._phase, self._loop = None, None

    def loop_item(self, desc: str, done: int, total: int | None) -> None:
        """A loop (a bar that is not drawn) reached item ``done`` of ``total``."""
        with self._lock:
            now = self.clock()
            if self._loop is None or self._loop[0] != desc or done < self._loop[1]:
                self._loop = (desc, done, total, now)
            else:
                self._loop = (desc, done, total, self._loop[3])
            self._maybe_heartbeat(now)

    def tick(self) -> None:
        """Called by :class:`Heartbeat`: a heartbeat line if the silence has lasted long enough."""
        with self._lock:
            self._maybe_heartbeat(self.clock())

    # -- lines -------------------------------------------------------------------------------------

    def _maybe_heartbeat(self, now: float) -> None:
        if now - self._last_line < self.heartbeat_s:
            return
        if self._phase is None:
            self._emit(now, "between phases" if self._done_steps or self._phases_seen else "starting")
            return
        elapsed = now - self._phase_started
        parts = [f"{self._phase} {duration(elapsed)}"]
        expected = self._expected.get(self._phase)
        if expected:
            parts.append(f"step {self._done_steps.get(self._phase, 0)}/{expected}")
        elif self._loop is not None:
            desc, done, total, _ = self._loop
            parts.append(f"{desc} {done}/{total}" if total else f"{desc} {done}")
        if self._phase_steps:
            parts.append(self._rate(elapsed))
        left = self._left(now)
        parts.append(f"~{duration(left)} left" if left is not None else "time left unknown")
        self._emit(now, ", ".join(parts))

    def _rate(self, elapsed: float) -> str:
        return f"{self._phase_samples / elapsed:,.1f} samples/s" if elapsed > 0 else "samples/s n/a"

    def _left(self, now: float) -> float | None:
        """Time left in the phase, from the steps so far (announced steps) or the current loop's items."""
        phase = self._phase
        if phase is None:
            return None
        expected = self._expected.get(phase)
        if expected and self._phase_steps:
            per_step = (now - self._phase_started) / self._phase_steps
            return max(0, expected - self._done_steps.get(phase, 0)) * per_step
        if self._loop is not None:
            _, done, total, started = self._loop
            if total and done > 0:
                return (now - started) / done * max(0, total - done)
        return None

    def _emit(self, now: float, text: str) -> None:
        self._last_line = now
        if not self.silent and (self.force or lines_enabled()):
            self.write(f"bench: {self.label}: {text}" if self.label else f"bench: {text}")
            _spoke()


# Outside a tracking() block (bench plan's fake-tensor phases, an in-process run's setup) nothing is written:
# progress lines belong to a strategy's run, and a one-line error must stay one line.
_activity = Activity(silent=True)


def activity() -> Activity:
    """This process's :class:`Activity` (the meter and bars report to it)."""
    return _activity


@contextmanager
def tracking(label: str, *, activity_: Activity | None = None, heartbeat: bool = True) -> Iterator[Activity]:
    """Report this process's progress as ``label`` (a strategy) while the block runs: a fresh
    :class:`Activity` and, where lines are written, a :class:`Heartbeat` thread beside it."""
    global _activity
    if activity_ is None and _activity.label == label and _activity.tracked:
        yield _activity  # nested (the run process covers setup, the worker the strategy): one activity, one beat
        return
    previous = _activity
    _activity = activity_ or Activity()
    _activity.tracked = True
    _activity.label = label
    beat = Heartbeat(_activity) if heartbeat and lines_enabled() else None
    if beat is not None:
        beat.start()
    try:
        yield _activity
    finally:
        if beat is not None:
            beat.stop()
        _activity.tracked = False
        _activity = previous


class Heartbeat:
    """A daemon thread that asks the activity for a heartbeat every few seconds, so a long step, a model
    load or a solver with no loop still shows a line at least every :data:`HEARTBEAT_S` seconds."""

    def __init__(self, target: Activity, every_s: float = 1.0) -> None:
        self.target = target
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.every_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.target.tick()
