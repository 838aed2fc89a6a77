"""Energy counters: joules per phase, read where the machine exposes a cumulative counter.

* NVIDIA GPUs: NVML's total energy since the driver loaded (``nvmlDeviceGetTotalEnergyConsumption``,
  millijoules; Volta and newer), through ``libnvidia-ml.so.1`` with ctypes (no Python package needed).
* CPUs: the powercap RAPL zones (``/sys/class/powercap/intel-rapl:N``, also used by AMD's RAPL driver):
  ``energy_uj`` in microjoules, wrapping around at ``max_energy_range_uj``. Only the package zones
  (``intel-rapl:N``, not their ``:M`` sub-zones, which they already include) are summed. Recent
  kernels let only root read ``energy_uj``.

A counter is read at the start and the end of each phase (one file read or one library call: nothing
inside a timed step). Where no counter is readable, the result says ``not measured`` and why.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

POWERCAP = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


class EnergyCounter(Protocol):
    """A cumulative energy counter: :meth:`read` returns joules since some fixed origin, as a float that
    only grows (wrap-around already undone between two reads by :func:`delta_j` and the counter)."""

    source: str

    def read(self) -> Sequence[int]: ...

    def delta_j(self, start: Sequence[int], end: Sequence[int]) -> float: ...


@dataclass(frozen=True)
class EnergyAvailability:
    """Whether energy is measured on this device, from what, or why not."""

    measured: bool
    source: str  # "nvml", "rapl" or "" when not measured
    detail: str  # the zones or the GPU read; or why energy is not measured


# -------------------------------------------------------------------------------------------------
# RAPL through powercap.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaplZone:
    name: str
    energy_file: Path
    max_range_uj: int


class RaplCounter:
    """Sum of the package zones' ``energy_uj``; each zone's wrap-around undone on its own."""

    source = "rapl"

    def __init__(self, zones: Sequence[RaplZone]) -> None:
        self.zones = tuple(zones)

    def read(self) -> list[int]:
        return [int(z.energy_file.read_text().strip()) for z in self.zones]

    def delta_j(self, start: Sequence[int], end: Sequence[int]) -> float:
        total_uj = 0
        for zone, a, b in zip(self.zones, start, end, strict=True):
            total_uj += b - a if b >= a else b + zone.max_range_uj - a  # the counter wrapped once
        return total_uj / 1e6


def rapl_counter(root: Path = POWERCAP) -> tuple[RaplCounter | None, str]:
    """The package zones under ``root`` that can be read, or None and why not."""
    if not root.is_dir():
        return None, f"no powercap counters ({root} does not exist)"
    zones, unreadable = [], []
    for folder in sorted(p for p in root.iterdir() if _PACKAGE_ZONE.match(p.name)):
        energy = folder / "energy_uj"
        try:
            int(energy.read_text().strip())
            max_range = int((folder / "max_energy_range_uj").read_text().strip())
        except PermissionError:
            unreadable.append(folder.name)
            continue
        except (OSError, ValueError):
            continue
        name = (folder / "name").read_text().strip() if (folder / "name").is_file() else folder.name
        zones.append(RaplZone(name, energy, max_range))
    if zones:
        return RaplCounter(zones), ""
    if unreadable:
        return None, (f"the RAPL counters ({', '.join(unreadable)}) are readable by root only on this kernel; run "
                      "as root or grant read access to energy_uj")
    return None, f"no RAPL package zone under {root} (the CPU or the virtual machine exposes none)"


# -------------------------------------------------------------------------------------------------
# NVML.
# -------------------------------------------------------------------------------------------------


class NvmlCounter:
    """NVML's total energy of one GPU, in millijoules since the driver loaded (a 64-bit counter)."""

    source = "nvml"

    def __init__(self, lib: ctypes.CDLL, handle: ctypes.c_void_p) -> None:
        self._lib = lib
        self._handle = handle

    def read(self) -> list[int]:
        value = ctypes.c_ulonglong()
        status = self._lib.nvmlDeviceGetTotalEnergyConsumption(self._handle, ctypes.byref(value))
        if status != 0:
            raise OSError(f"nvmlDeviceGetTotalEnergyConsumption returned {status}")
        return [int(value.value)]

    def delta_j(self, start: Sequence[int], end: Sequence[int]) -> float:
        return (end[0] - start[0]) / 1e3


def nvml_counter(index: int = 0, library: str = "libnvidia-ml.so.1") -> tuple[NvmlCounter | None, str]:
    """GPU ``index``'s energy counter through NVML, or None and why not."""
    try:
        lib = ctypes.CDLL(library)
    except OSError:
        return None, f"NVML ({library}) cannot be loaded"
    if lib.nvmlInit_v2() != 0:
        return None, "nvmlInit failed"
    handle = ctypes.c_void_p()
    if lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)) != 0:
        return None, f"NVML has no GPU {index}"
    counter = NvmlCounter(lib, handle)
    try:
        counter.read()
    except OSError as exc:
        return None, f"this GPU does not report total energy ({exc})"
    return counter, ""


def counter_for(device: str) -> tuple[EnergyCounter | None, EnergyAvailability]:
    """The energy counter for a run on ``device`` (``cuda``: the GPU's; ``cpu``: RAPL), and what it is."""
    counter: EnergyCounter | None
    if device == "cuda":
        import torch

        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
        counter, why = nvml_counter(index)
        detail = f"GPU {index}" if counter is not None else why
    else:
        rapl, why = rapl_counter()
        counter = rapl
        detail = ", ".join(z.name for z in rapl.zones) if rapl is not None else why
    if counter is None:
        return None, EnergyAvailability(False, "", detail)
    return counter, EnergyAvailability(True, counter.source, detail)
