"""Exceptions that carry what went wrong, who caused it and what to do about it.

Every error a user can cause by what they typed, installed or pointed at derives from
:class:`BenchError`; the CLI prints its message on one line and exits with ``exit_code``.
"""

from __future__ import annotations


class BenchError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class UsageError(BenchError):
    """Bad option, bad value, bad input file: the culprit is named in the message."""


class PluginError(BenchError):
    """A plugin failed to import, does not match the hookspecs, or clashes with another."""


class AssetError(BenchError):
    """A default asset could not be fetched, or its checksum does not match."""


class DataError(UsageError):
    """A dataset file or dataset id that cannot be used (missing columns, one label, bad line)."""


class ModelError(UsageError):
    """A model folder or id that holds no usable model of the required kind."""


class Interrupted(KeyboardInterrupt):
    """The invocation was told to stop: SIGINT (Ctrl-C), SIGTERM (a CI runner, a job scheduler, ``kill``)
    or SIGHUP (the terminal closed). Raised in the main thread by the host's signal handlers, so that
    the running strategy is stopped, its row written as interrupted and every earlier result kept;
    the command then exits with ``128 + signal number`` (130, 143, 129), as a shell reports it."""

    def __init__(self, signum: int = 2) -> None:
        import signal

        self.signum = int(signum)
        try:
            self.signal_name = signal.Signals(self.signum).name
        except ValueError:
            self.signal_name = f"signal {self.signum}"
        super().__init__(self.signal_name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
