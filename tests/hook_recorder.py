"""A plugin for tests/test_hooks.py: one implementation of every hook in bench/host/hookspecs.py, taking
exactly the arguments its spec documents, that records each call in ``CALLS`` (the argument values
themselves). Loaded with ``-p hook_recorder`` (tests/ is on sys.path) and ``--no-isolate``, so the test
reads this same module object.

The implementations are written from the specs' signatures (pluggy reads a hook implementation's
argument names from its code, so each needs a real ``def`` with those names): a new hook gets a recorder,
and so a test, without an edit here."""

from __future__ import annotations

import inspect
from typing import Any

from bench import hookimpl
from bench.host import hookspecs

CALLS: list[tuple[str, dict[str, Any]]] = []

for _name, _spec in inspect.getmembers(hookspecs, inspect.isfunction):
    if _name.startswith("bench_"):
        _args = ", ".join(inspect.signature(_spec).parameters)
        _scope: dict[str, Any] = {"CALLS": CALLS}
        exec(f"def {_name}({_args}):\n    CALLS.append(({_name!r}, dict(locals())))\n", _scope)  # noqa: S102
        globals()[_name] = hookimpl(_scope[_name])
