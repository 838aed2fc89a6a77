"""The pluggy markers of the ``bench`` project: ``hookimpl`` for plugins, ``hookspec`` for the host."""

import pluggy

PROJECT_NAME = "bench"
ENTRY_POINT_GROUP = "finetune_bench"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
