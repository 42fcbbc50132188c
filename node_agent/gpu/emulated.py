"""EMULATED GPUs: the sandbox's GPU stand-ins, read without any GPU.

The sandbox gives each node GPUs that are character device files listed in Slurm's ``gres.conf``
(``NodeName=n1 Name=gpu File=/.../n1gpu[0-3]``); Slurm allocates them like real GPUs. This backend
reads them so the agent can be exercised end to end on a machine without GPUs. It is emulation,
and says so everywhere: backend name ``emulated``, UUIDs ``EMU-<node>-<index>``, GPU name
``emulated-gpu``.

What each figure means here:

- utilization: the CPU use of the processes of the job holding the GPU (the job comes from Slurm's
  GRES allocation, its processes from Slurm's count, :mod:`node_agent.membership`), as a percentage
  of one core over the time since the previous read, capped at 100 and rounded down. A ``sleep``
  job reads 0, a CPU-bound loop 100. The first read has no previous one and gives ``None``.
- memory used: the RSS of those processes; memory total: ``[node_agent.emulated] memory_total_mb``.
- processes on the GPU: processes with the device file open (``/proc/<pid>/fd``), found on the
  scans that ask for it.
- a device file that is gone is a missing GPU (how a health failure is simulated).
- temperature, power, ECC and XID events do not exist here: always ``None`` / none.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

from hpcplat.slurm.parse import expand_hostlist
from node_agent.gpu.backend import (
    BackendUnavailable,
    GpuBackendError,
    GpuInfo,
    GpuSample,
    NodeReading,
    ProcessOnGpu,
    ReadHint,
)
from node_agent.procs import CLK_TCK, ProcessTable

log = logging.getLogger(__name__)

EMULATED_NAME = "emulated-gpu"


def gres_conf_path(explicit: str | None) -> Path | None:
    """``explicit``, else the ``gres.conf`` next to ``$SLURM_CONF``, else ``/etc/slurm/gres.conf``."""
    if explicit:
        return Path(explicit)
    slurm_conf = os.environ.get("SLURM_CONF")
    candidate = Path(slurm_conf).parent / "gres.conf" if slurm_conf else Path("/etc/slurm/gres.conf")
    return candidate if candidate.exists() else None


def parse_gres_conf(text: str, node: str) -> list[str]:
    """The GPU device files gres.conf gives ``node``, in GRES index order.

    Lines without ``NodeName=`` apply to every node. Keys are case-insensitive, as in Slurm.
    """
    files: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields: dict[str, str] = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key.lower()] = value
        if fields.get("name", "").lower() != "gpu" or "file" not in fields:
            continue
        nodes = fields.get("nodename")
        if nodes is not None and node not in expand_hostlist(nodes):
            continue
        files.extend(expand_hostlist(fields["file"].replace("%n", node)))
    return files


def device_files(node: str, *, devices: tuple[str, ...] | None, gres_conf: str | None) -> list[str]:
    """The node's emulated GPU device files, from the configuration or from gres.conf."""
    if devices:
        return list(devices)
    path = gres_conf_path(gres_conf)
    if path is None:
        raise GpuBackendError(
            BackendUnavailable.NO_GPUS,
            "no emulated GPUs: no gres.conf found (set [node_agent.emulated] gres_conf or devices)",
        )
    try:
        files = parse_gres_conf(path.read_text(encoding="utf-8"), node)
    except OSError as exc:
        raise GpuBackendError(BackendUnavailable.OTHER, f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise GpuBackendError(BackendUnavailable.OTHER, f"{path}: {exc}") from exc
    if not files:
        raise GpuBackendError(BackendUnavailable.NO_GPUS, f"{path} gives node {node} no GPU device files")
    return files


def _is_device(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


class EmulatedBackend:
    """EMULATION of a node's GPUs for the sandbox; see the module documentation."""

    name = "emulated"
    emulated = True

    def __init__(
        self,
        node: str,
        *,
        devices: tuple[str, ...] | None = None,
        gres_conf: str | None = None,
        memory_total_mb: float = 16384.0,
        procs: ProcessTable | None = None,
    ) -> None:
        self.node = node
        self._devices_cfg = devices
        self._gres_conf = gres_conf
        self.memory_total_mb = memory_total_mb
        self.procs = procs or ProcessTable()
        self.paths: list[str] = []
        self._prev_ticks: dict[tuple[int, int], int] = {}
        self._prev_at: float | None = None
        self._fd_holders: dict[str, set[int]] = {}

    def open(self) -> None:
        self.paths = device_files(self.node, devices=self._devices_cfg, gres_conf=self._gres_conf)
        log.info("emulated GPUs of %s (EMULATION, no real GPU): %s", self.node, ", ".join(self.paths))

    def close(self) -> None:
        self._prev_ticks.clear()

    def uuid(self, index: int) -> str:
        return f"EMU-{self.node}-{index}"

    def read(self, hint: ReadHint) -> NodeReading:
        now = time.time()
        snapshot = hint.procs if hint.procs is not None else self.procs.scan()
        boot_now = snapshot.at
        present = [(i, p) for i, p in enumerate(self.paths) if _is_device(p)]
        missing = tuple(p for p in self.paths if not _is_device(p))
        if hint.scan_open_files:
            self._fd_holders = self.procs.holders_of([p for _, p in present], snapshot.procs.keys())

        elapsed = None if self._prev_at is None else boot_now - self._prev_at
        ticks: dict[tuple[int, int], int] = {}
        job_ticks: dict[str, int] = {}
        job_rss_kb: dict[str, int] = {}
        for proc in snapshot.procs.values():
            job = snapshot.job_of(proc.pid)
            if job is None:
                continue
            key = (proc.pid, proc.start_ticks)
            ticks[key] = proc.cpu_ticks
            before = self._prev_ticks.get(key)
            if before is not None:
                delta = proc.cpu_ticks - before
            elif self._prev_at is not None and proc.start_ticks / CLK_TCK >= self._prev_at:
                delta = proc.cpu_ticks
            else:
                delta = 0
            job_ticks[job] = job_ticks.get(job, 0) + max(delta, 0)
            job_rss_kb[job] = job_rss_kb.get(job, 0) + proc.rss_kb
        self._prev_ticks = ticks
        self._prev_at = boot_now

        gpus: list[GpuInfo] = []
        samples: list[GpuSample] = []
        for index, path in present:
            uuid = self.uuid(index)
            gpus.append(
                GpuInfo(
                    uuid=uuid,
                    index=index,
                    name=EMULATED_NAME,
                    pci_bus_id="emulated",
                    memory_total_mb=self.memory_total_mb,
                    device_path=path,
                    emulated=True,
                )
            )
            holder = hint.holders.get(index)
            util: float | None
            if elapsed is None or elapsed <= 0:
                util = None
            elif holder is None:
                util = 0.0
            else:
                util = float(min(100, int(100.0 * job_ticks.get(holder, 0) / CLK_TCK / elapsed)))
            mem = job_rss_kb.get(holder, 0) / 1024.0 if holder is not None else 0.0
            holders = sorted(self._fd_holders.get(path, set()))
            samples.append(
                GpuSample(
                    uuid=uuid,
                    index=index,
                    at=now,
                    utilization_pct=util,
                    memory_used_mb=round(mem, 1),
                    memory_total_mb=self.memory_total_mb,
                    processes=tuple(ProcessOnGpu(pid) for pid in holders),
                )
            )
        return NodeReading(
            at=now,
            backend=self.name,
            gpus=tuple(gpus),
            samples=tuple(samples),
            missing=missing,
            detail="EMULATED GPUs (sandbox): utilization is the CPU use of the holding job",
        )
