"""Run processes: started in a process group of their own, dying with the host, stopped whole.

* The host turns SIGTERM and SIGHUP into :class:`~bench.core.errors.Interrupted` (as Python turns
  SIGINT into ``KeyboardInterrupt``), so a CI runner's or a job scheduler's stop is handled like
  Ctrl-C: the running strategy is stopped, its row written as interrupted with its phase, every
  earlier result kept, and the command exits 128 + the signal's number (:func:`signals_interrupt`).
* A run process makes itself the leader of a new process group (so the host can stop it with all it
  started, and a terminal's Ctrl-C reaches only the host), asks the kernel to kill it when the host
  dies (``PR_SET_PDEATHSIG``, Linux), and watches the host's end of a pipe on the other systems; a
  ``--max-memory`` cap is an address-space limit (``RLIMIT_AS``) set before anything loads
  (:func:`become_run_process`).
* :func:`stop` ends a run process's whole group: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from bench.core.errors import Interrupted, UsageError

STOP_SIGNALS = ("SIGTERM", "SIGHUP")
GRACE_S = 5.0


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread for the block, like SIGINT's
    ``KeyboardInterrupt``. After the first stop signal, later ones (a second Ctrl-C included) are noted
    and ignored, so that stopping the run process and saving the results finish. The previous handlers
    are restored after the block. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [n for n in (*STOP_SIGNALS, "SIGINT") if hasattr(signal, n)]
    previous = {n: signal.getsignal(getattr(signal, n)) for n in names}
    stopping = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise Interrupted(signum)

    try:
        for n in names:
            if n != "SIGINT" or previous[n] is signal.default_int_handler:
                signal.signal(getattr(signal, n), handler)
        yield
    finally:
        for n, old in previous.items():
            signal.signal(getattr(signal, n), old if old is not None else signal.SIG_DFL)


def become_run_process(parent_pid: int, max_memory: int | None) -> None:
    """First thing in a run process: a process group of its own, death with the host, the memory cap."""
    if hasattr(os, "setpgid"):
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
    _die_with_parent(parent_pid)
    if max_memory:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            _watch_parent()
    else:  # pragma: no cover - macOS and others
        _watch_parent()
    if os.getppid() != parent_pid:  # the host died before the request took effect
        os._exit(1)


def _watch_parent() -> None:  # pragma: no cover - used where PR_SET_PDEATHSIG is not
    import multiprocessing
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        wait([sentinel])
        with contextlib.suppress(OSError):
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


def stop(process: Any, grace_s: float = GRACE_S) -> None:
    """End ``process`` (a started ``multiprocessing.Process``) and every process in its group: SIGTERM,
    then SIGKILL if it is still there after ``grace_s``; it is reaped before this returns."""
    if not hasattr(os, "killpg"):  # pragma: no cover - Windows: the process alone
        process.terminate()
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join()
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        if not process.is_alive():
            break
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):  # not (yet) a group leader: the process alone
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
        process.join(wait_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever it started, still in its group


def parse_size(value: Any) -> int:
    """``--max-memory``: bytes from ``4GiB``, ``512MiB``, ``2G``, ``1500M`` or a plain number of bytes."""
    import re

    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)", text, flags=re.IGNORECASE)
    if not match or (match.group(2) == "" and match.group(3) != ""):
        raise UsageError(f"--max-memory {text!r}: expected a size such as 4GiB, 512MiB or a number of bytes")
    scale = 1024 ** " KMGT".index(match.group(2).upper() or " ")
    size = int(float(match.group(1)) * scale)
    if size < 2**20:
        raise UsageError(f"--max-memory {text!r}: {size} bytes is too small to start a run process (give e.g. 4GiB)")
    return size
