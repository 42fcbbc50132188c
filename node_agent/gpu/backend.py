"""The one typed interface every GPU backend implements, and the records it returns.

A backend reads the node's GPUs; it never decides anything. Failure modes are data: a backend that
cannot start raises :class:`GpuBackendError` with a :class:`BackendUnavailable` reason, and a GPU
that fails while the backend runs shows up as a sample with ``lost=True`` (or in ``missing``), not
as an exception.

GPUs are keyed by UUID (MIG slices have their own); ``index`` is the GPU's Slurm GRES index on the
node, the number ``scontrol show job -d`` prints as ``IDX``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from node_agent.procs import ProcSnapshot


class BackendUnavailable(enum.Enum):
    LIBRARY_MISSING = "library_missing"
    DRIVER_NOT_LOADED = "driver_not_loaded"
    NO_GPUS = "no_gpus"
    GPU_LOST = "gpu_lost"
    OTHER = "other"


class GpuBackendError(Exception):
    """A backend could not start or lost every GPU; ``reason`` says which failure mode."""

    def __init__(self, reason: BackendUnavailable, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class GpuInfo:
    uuid: str
    index: int
    """The Slurm GRES index on this node (``IDX`` in ``scontrol show job -d``)."""
    name: str
    pci_bus_id: str = ""
    memory_total_mb: float = 0.0
    parent_uuid: str | None = None
    """For a MIG slice: the UUID of the physical GPU."""
    device_path: str = ""
    emulated: bool = False


@dataclass(frozen=True)
class ProcessOnGpu:
    pid: int
    used_memory_mb: float | None = None


@dataclass(frozen=True)
class GpuSample:
    uuid: str
    index: int
    at: float
    """Wall-clock seconds (``time.time()``)."""
    utilization_pct: float | None
    """0-100; ``None`` when it could not be read (never taken as idle)."""
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    ecc_uncorrected: int | None = None
    """Volatile (since the last driver load) uncorrected ECC errors."""
    processes: tuple[ProcessOnGpu, ...] = ()
    lost: bool = False
    """The GPU stopped answering (NVML ``GPU_IS_LOST``, fallen off the bus)."""
    error: str = ""


@dataclass(frozen=True)
class GpuEvent:
    """A critical event: an XID error or a double-bit ECC error."""

    uuid: str
    kind: str
    """``xid`` or ``ecc_double_bit``."""
    code: int
    at: float


@dataclass(frozen=True)
class NodeReading:
    """One read of every GPU of the node."""

    at: float
    backend: str
    gpus: tuple[GpuInfo, ...] = ()
    samples: tuple[GpuSample, ...] = ()
    events: tuple[GpuEvent, ...] = ()
    missing: tuple[str, ...] = ()
    """GPUs the backend knows should be there but cannot find (device path or index)."""
    unavailable: BackendUnavailable | None = None
    detail: str = ""

    def sample_of(self, uuid: str) -> GpuSample | None:
        for sample in self.samples:
            if sample.uuid == uuid:
                return sample
        return None


@dataclass(frozen=True)
class ReadHint:
    """What the agent already knows when it reads the GPUs.

    Only emulation uses it: an emulated GPU's utilization is the CPU use of the processes of the
    job holding it, so the emulated backend needs to know the holder (``holders``: GRES index →
    job id, from Slurm) and the process table. A real backend ignores it.
    """

    holders: Mapping[int, str] = field(default_factory=dict)
    procs: ProcSnapshot | None = None
    scan_open_files: bool = False
    """Also look for processes holding a device file open (costly; done every orphan scan)."""


class GpuBackend(Protocol):
    name: str
    emulated: bool

    def open(self) -> None:
        """Start; raises :class:`GpuBackendError` with the failure mode when it cannot."""
        ...

    def read(self, hint: ReadHint) -> NodeReading:
        """Read every GPU. Per-GPU failures are data in the reading, not exceptions."""
        ...

    def close(self) -> None: ...
