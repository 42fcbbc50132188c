"""NVIDIA GPUs through NVML, in-process with nvidia-ml-py (module ``pynvml``); never nvidia-smi.

One read costs a handful of NVML calls per GPU (well under a millisecond each on real hardware,
against 10-20 ms for starting nvidia-smi). Failure modes are data:

- ``pynvml`` not installed or ``libnvidia-ml.so.1`` absent → ``LIBRARY_MISSING``;
- the kernel driver not loaded → ``DRIVER_NOT_LOADED``;
- no GPU → ``NO_GPUS``;
- a GPU that stops answering while the agent runs (``GPU_IS_LOST``, fallen off the bus) → a sample
  with ``lost=True``; the health policy drains the node.

A figure a GPU does not support (power on some boards, ECC on consumer GPUs, utilization of a MIG
slice) reads ``None``, never 0: an unknown utilization is never taken as idle.

GRES index: by default the device minor number (``/dev/nvidiaN``), which is Slurm's ``IDX`` when
gres.conf lists ``File=/dev/nvidia[0-N]`` or uses ``AutoDetect=nvml``; ``[node_agent.nvml]
index_by = "nvml"`` uses NVML's enumeration order instead. MIG slices get index -1: the agent
attributes them by the processes running on them only.

Not verified on hardware in the task that wrote it: only the library-missing path runs where it
was developed (no NVIDIA GPU or driver there). See docs/node-agent.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from node_agent.gpu.backend import (
    BackendUnavailable,
    GpuBackendError,
    GpuEvent,
    GpuInfo,
    GpuSample,
    NodeReading,
    ProcessOnGpu,
    ReadHint,
)

log = logging.getLogger(__name__)

_MB = 1024.0 * 1024.0


def _load() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        raise GpuBackendError(
            BackendUnavailable.LIBRARY_MISSING, f"nvidia-ml-py (module pynvml) is not installed: {exc}"
        ) from exc
    return pynvml


def classify(exc: BaseException) -> BackendUnavailable:
    """The failure mode an NVML error stands for."""
    pynvml = _load()
    code = getattr(exc, "value", None)
    mapping = {
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: BackendUnavailable.LIBRARY_MISSING,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND: BackendUnavailable.LIBRARY_MISSING,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED: BackendUnavailable.DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_GPU_IS_LOST: BackendUnavailable.GPU_LOST,
        pynvml.NVML_ERROR_NOT_FOUND: BackendUnavailable.NO_GPUS,
    }
    return mapping.get(code, BackendUnavailable.OTHER)


def _hint(reason: BackendUnavailable) -> str:
    return {
        BackendUnavailable.LIBRARY_MISSING: "libnvidia-ml.so.1 (NVML, from the NVIDIA driver) is missing",
        BackendUnavailable.DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded (`modprobe nvidia`)",
        BackendUnavailable.GPU_LOST: "a GPU fell off the bus; the node needs a GPU reset or reboot",
        BackendUnavailable.NO_GPUS: "NVML sees no GPU on this node",
        BackendUnavailable.OTHER: "NVML refused to start",
    }[reason]


@dataclass
class _Device:
    handle: Any
    info: GpuInfo
    lost: bool = False


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NvmlBackend:
    """Real NVIDIA GPUs through NVML."""

    name = "nvml"
    emulated = False

    def __init__(self, *, index_by: str = "minor") -> None:
        self.index_by = index_by
        self._nvml: Any = None
        self._devices: list[_Device] = []
        self._event_set: Any = None

    # --- start and stop -----------------------------------------------------------------------

    def open(self) -> None:
        nvml = _load()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            reason = classify(exc)
            raise GpuBackendError(reason, f"{_hint(reason)} ({exc})") from exc
        self._nvml = nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            self.close()
            reason = classify(exc)
            raise GpuBackendError(reason, f"nvmlDeviceGetCount failed: {exc}") from exc
        if count == 0:
            self.close()
            raise GpuBackendError(BackendUnavailable.NO_GPUS, _hint(BackendUnavailable.NO_GPUS))
        self._devices = []
        for i in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                info = self._describe(handle, i, parent=None)
            except nvml.NVMLError as exc:
                log.error("NVML GPU %d cannot be opened (%s): %s", i, classify(exc).value, exc)
                continue
            self._devices.append(_Device(handle, info))
            self._devices.extend(self._mig_slices(handle, info))
        if not self._devices:
            self.close()
            raise GpuBackendError(BackendUnavailable.GPU_LOST, f"all {count} GPUs failed to open")
        self._open_events()
        version = self._call(nvml.nvmlSystemGetDriverVersion)
        log.info("NVML: %d GPU(s), driver %s", count, _text(version) if version is not None else "?")

    def close(self) -> None:
        nvml = self._nvml
        if nvml is None:
            return
        if self._event_set is not None:
            try:
                nvml.nvmlEventSetFree(self._event_set)
            except nvml.NVMLError as exc:
                log.debug("nvmlEventSetFree: %s", exc)
            self._event_set = None
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.debug("nvmlShutdown: %s", exc)
        self._nvml = None

    def _describe(self, handle: Any, position: int, parent: GpuInfo | None) -> GpuInfo:
        nvml = self._nvml
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        name = self._call(nvml.nvmlDeviceGetName, handle)
        memory = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
        if parent is not None:
            return GpuInfo(
                uuid=uuid,
                index=-1,
                name=_text(name) if name is not None else "MIG",
                pci_bus_id=parent.pci_bus_id,
                memory_total_mb=float(memory.total) / _MB if memory is not None else 0.0,
                parent_uuid=parent.uuid,
            )
        pci = self._call(nvml.nvmlDeviceGetPciInfo, handle)
        index = position
        if self.index_by == "minor":
            minor = self._call(nvml.nvmlDeviceGetMinorNumber, handle)
            index = int(minor) if minor is not None else position
        return GpuInfo(
            uuid=uuid,
            index=index,
            name=_text(name) if name is not None else "GPU",
            pci_bus_id=_text(pci.busId) if pci is not None else "",
            memory_total_mb=float(memory.total) / _MB if memory is not None else 0.0,
            device_path=f"/dev/nvidia{index}" if self.index_by == "minor" else "",
        )

    def _mig_slices(self, handle: Any, parent: GpuInfo) -> list[_Device]:
        nvml = self._nvml
        modes = self._call(nvml.nvmlDeviceGetMigMode, handle)
        if not modes or int(modes[0]) != int(nvml.NVML_DEVICE_MIG_ENABLE):
            return []
        slices: list[_Device] = []
        count = self._call(nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        for j in range(int(count)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
            except nvml.NVMLError:
                continue  # an empty slot
            slices.append(_Device(mig, self._describe(mig, j, parent=parent)))
        return slices

    def _open_events(self) -> None:
        nvml = self._nvml
        wanted = int(nvml.nvmlEventTypeXidCriticalError) | int(nvml.nvmlEventTypeDoubleBitEccError)
        try:
            self._event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.warning("NVML events unavailable (%s): XID errors will not be seen", exc)
            return
        for device in self._devices:
            if device.info.parent_uuid is not None:
                continue
            supported = self._call(nvml.nvmlDeviceGetSupportedEventTypes, device.handle)
            mask = wanted & int(supported or 0)
            if not mask:
                continue
            try:
                nvml.nvmlDeviceRegisterEvents(device.handle, mask, self._event_set)
            except nvml.NVMLError as exc:
                log.warning("GPU %s: cannot register for XID events: %s", device.info.uuid, exc)

    # --- reading ------------------------------------------------------------------------------

    def _call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, or ``None`` when the GPU or driver does not support it. Lost GPUs raise."""
        nvml = self._nvml
        try:
            return fn(*args)
        except (
            nvml.NVMLError_NotSupported,
            nvml.NVMLError_NoPermission,
            nvml.NVMLError_NoData,
            nvml.NVMLError_FunctionNotFound,  # a driver older than the binding
        ):
            return None

    def _sample(self, device: _Device, at: float) -> GpuSample:
        nvml = self._nvml
        handle, info = device.handle, device.info
        try:
            util = self._call(nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
            temp = self._call(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            power_mw = self._call(nvml.nvmlDeviceGetPowerUsage, handle)
            ecc = self._call(
                nvml.nvmlDeviceGetTotalEccErrors,
                handle,
                nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                nvml.NVML_VOLATILE_ECC,
            )
            procs = self._call(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
        except nvml.NVMLError as exc:
            reason = classify(exc)
            lost = reason is BackendUnavailable.GPU_LOST
            if lost and not device.lost:
                log.error("GPU %s (%s) is lost: %s", info.uuid, info.pci_bus_id, exc)
            device.lost = lost
            return GpuSample(info.uuid, info.index, at, None, lost=lost, error=f"{reason.value}: {exc}")
        device.lost = False
        return GpuSample(
            uuid=info.uuid,
            index=info.index,
            at=at,
            utilization_pct=float(util.gpu) if util is not None else None,
            memory_used_mb=float(memory.used) / _MB if memory is not None else None,
            memory_total_mb=float(memory.total) / _MB if memory is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            power_w=float(power_mw) / 1000.0 if power_mw is not None else None,
            ecc_uncorrected=int(ecc) if ecc is not None else None,
            processes=tuple(
                ProcessOnGpu(
                    int(p.pid),
                    float(p.usedGpuMemory) / _MB if getattr(p, "usedGpuMemory", None) is not None else None,
                )
                for p in procs
            ),
        )

    def _events(self, at: float) -> list[GpuEvent]:
        nvml = self._nvml
        if self._event_set is None:
            return []
        events: list[GpuEvent] = []
        for _ in range(1000):  # drain what is queued, never block
            try:
                data = nvml.nvmlEventSetWait(self._event_set, 0)
            except nvml.NVMLError_Timeout:
                break
            except nvml.NVMLError as exc:
                log.warning("reading NVML events failed: %s", exc)
                break
            uuid = self._call(nvml.nvmlDeviceGetUUID, data.device)
            kind = (
                "xid" if int(data.eventType) == int(nvml.nvmlEventTypeXidCriticalError) else "ecc_double_bit"
            )
            events.append(GpuEvent(_text(uuid) if uuid is not None else "?", kind, int(data.eventData), at))
        return events

    def read(self, hint: ReadHint) -> NodeReading:
        at = time.time()
        if self._nvml is None:
            raise GpuBackendError(BackendUnavailable.OTHER, "the NVML backend is not open")
        samples = tuple(self._sample(d, at) for d in self._devices)
        return NodeReading(
            at=at,
            backend=self.name,
            gpus=tuple(d.info for d in self._devices),
            samples=samples,
            events=tuple(self._events(at)),
        )
