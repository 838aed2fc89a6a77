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
