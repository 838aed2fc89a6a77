"""Machine information: the built-in ``machine`` plugin (pytest-benchmark's generate/update pair)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from bench.core.markers import hookimpl

LIBRARIES = ("torch", "transformers", "pluggy", "numpy", "scikit-learn", "tabulate", "finetune-bench")
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma", "neon", "asimd", "sve")


@hookimpl(trylast=True)
def bench_generate_machine_info() -> dict[str, Any]:
    return machine_info()


def machine_info() -> dict[str, Any]:
    """CPU model and relevant flags, cores, memory, GPU name/driver/CUDA, library versions."""
    info: dict[str, Any] = {
        "node": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": _cpu(),
        "memory_bytes": _memory_bytes(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }
    info["gpu"] = _gpu()
    return info


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and its flags (``/proc/cpuinfo``; the platform's processor name elsewhere)."""
    model: str = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _cpu() -> dict[str, Any]:
    model, flags = cpu_model_and_flags()
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": sorted(f for f in CPU_FLAGS_OF_INTEREST if f in flags),
    }


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gpu() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "memory_bytes": int(props.total_memory),
        "capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "driver": _nvidia_driver(),
    }


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
