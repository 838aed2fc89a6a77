"""The marker plugin authors import (also re-exported as ``bench.hookimpl``)."""

import pluggy

PROJECT_NAME = "bench"
ENTRY_POINT_GROUP = "finetune_bench"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
