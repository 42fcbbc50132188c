"""Which backend reads this node's GPUs: NVML, emulation, or ``auto`` (NVML, else the sandbox's
emulated GPUs when gres.conf lists device files outside ``/dev``)."""

from __future__ import annotations

import logging

from node_agent.config import AgentConfig, BackendChoice
from node_agent.gpu.backend import BackendUnavailable, GpuBackend, GpuBackendError
from node_agent.gpu.emulated import EmulatedBackend, device_files
from node_agent.gpu.nvml import NvmlBackend
from node_agent.procs import ProcessTable

log = logging.getLogger(__name__)

_FALL_BACK = {
    BackendUnavailable.LIBRARY_MISSING,
    BackendUnavailable.DRIVER_NOT_LOADED,
    BackendUnavailable.NO_GPUS,
}


def _emulated(node: str, config: AgentConfig, procs: ProcessTable) -> EmulatedBackend:
    return EmulatedBackend(
        node,
        devices=config.emulated.devices.get(node) or None,
        gres_conf=config.emulated.gres_conf,
        memory_total_mb=config.emulated.memory_total_mb,
        procs=procs,
    )


def open_backend(choice: BackendChoice, node: str, config: AgentConfig, procs: ProcessTable) -> GpuBackend:
    """An opened backend; raises :class:`GpuBackendError` with the failure mode otherwise."""
    if choice is BackendChoice.EMULATED:
        backend: GpuBackend = _emulated(node, config, procs)
        backend.open()
        return backend
    nvml = NvmlBackend(index_by=config.nvml.index_by)
    try:
        nvml.open()
        return nvml
    except GpuBackendError as nvml_error:
        if choice is BackendChoice.NVML or nvml_error.reason not in _FALL_BACK:
            raise
        try:
            files = device_files(
                node, devices=config.emulated.devices.get(node) or None, gres_conf=config.emulated.gres_conf
            )
        except GpuBackendError:
            raise nvml_error from None
        if any(path.startswith("/dev/") for path in files):
            raise  # real GPU device files: a broken GPU node, not a sandbox
        emulated = _emulated(node, config, procs)
        emulated.open()
        log.warning("NVML unavailable (%s): using the EMULATED GPUs of gres.conf", nvml_error.reason.value)
        return emulated
