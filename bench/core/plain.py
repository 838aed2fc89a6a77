"""Plain JSON-compatible data from typed values: dataclasses, mappings, sequences and paths."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def to_data(obj: Any) -> Any:
    """Dataclasses, tuples and mappings to plain JSON-compatible data. Dataclass fields marked
    ``metadata={"transient": True}`` (where a loaded object lives, say) are left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("transient")}
    if isinstance(obj, Mapping):
        return {str(k): to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):  # NaN and infinities are not JSON
        return None
    return obj
