"""The Prometheus ``/metrics`` endpoint: per-GPU figures labelled with the job, user and GPU.

The agent publishes an immutable :class:`Snapshot` after every cycle; the collector renders the
latest one on each scrape, so series of jobs that left disappear at once (no stale labels).
Labels: ``node``, ``gpu`` (GRES index), ``uuid``, ``job``, ``user`` (empty when the GPU is free
or its holder uncertain), ``backend`` (``nvml`` or ``emulated``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

GPU_LABELS = ["node", "gpu", "uuid", "job", "user", "backend"]


@dataclass(frozen=True)
class GpuRow:
    index: int
    uuid: str
    job: str
    user: str
    holding: str
    utilization_pct: float | None
    memory_used_mb: float | None
    memory_total_mb: float | None
    temperature_c: float | None
    power_w: float | None
    ecc_uncorrected: int | None
    idle_for_s: float | None


@dataclass(frozen=True)
class Snapshot:
    node: str
    backend: str
    backend_reason: str
    """Empty when the backend works, else a :class:`BackendUnavailable` value."""
    at: float
    gpus: tuple[GpuRow, ...] = ()
    slurm_ok: bool = False
    healthy: bool | None = None
    problems: tuple[str, ...] = ()
    cycle_seconds: float = 0.0
    actions: tuple[tuple[str, str, bool, int], ...] = ()
    """(kind, action, dry_run, count)."""
    extra: dict[str, Any] = field(default_factory=dict)


class SnapshotCollector:
    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            snap = self._snapshot
        if snap is None:
            return
        up = GaugeMetricFamily(
            "hpcplat_node_agent_backend_up",
            "1 when the GPU backend reads the GPUs; reason says why not",
            labels=["node", "backend", "reason"],
        )
        up.add_metric([snap.node, snap.backend, snap.backend_reason], 0.0 if snap.backend_reason else 1.0)
        yield up
        slurm = GaugeMetricFamily(
            "hpcplat_node_agent_slurm_up", "1 when Slurm answered the last poll", labels=["node"]
        )
        slurm.add_metric([snap.node], 1.0 if snap.slurm_ok else 0.0)
        yield slurm
        cycle = GaugeMetricFamily(
            "hpcplat_node_agent_cycle_seconds", "Duration of the last sampling cycle", labels=["node"]
        )
        cycle.add_metric([snap.node], snap.cycle_seconds)
        yield cycle
        if snap.healthy is not None:
            healthy = GaugeMetricFamily(
                "hpcplat_node_healthy", "1 healthy, 0 unhealthy (see the drain reason)", labels=["node"]
            )
            healthy.add_metric([snap.node], 1.0 if snap.healthy else 0.0)
            yield healthy

        gauges = {
            "util": GaugeMetricFamily(
                "hpcplat_gpu_utilization_percent",
                "GPU utilization (emulated: CPU use of the job)",
                labels=GPU_LABELS,
            ),
            "mem": GaugeMetricFamily("hpcplat_gpu_memory_used_bytes", "GPU memory used", labels=GPU_LABELS),
            "total": GaugeMetricFamily(
                "hpcplat_gpu_memory_total_bytes", "GPU memory total", labels=GPU_LABELS
            ),
            "temp": GaugeMetricFamily(
                "hpcplat_gpu_temperature_celsius", "GPU temperature", labels=GPU_LABELS
            ),
            "power": GaugeMetricFamily("hpcplat_gpu_power_watts", "GPU power draw", labels=GPU_LABELS),
            "ecc": GaugeMetricFamily(
                "hpcplat_gpu_ecc_uncorrected_errors", "Volatile uncorrected ECC errors", labels=GPU_LABELS
            ),
            "idle": GaugeMetricFamily(
                "hpcplat_gpu_job_idle_seconds",
                "How long the holding job's GPUs have all read 0%",
                labels=GPU_LABELS,
            ),
        }
        holding = GaugeMetricFamily(
            "hpcplat_gpu_holding",
            "1 for the GPU's holding state (held, free, uncertain)",
            labels=[*GPU_LABELS, "state"],
        )
        mb = 1024.0 * 1024.0
        for row in snap.gpus:
            labels = [snap.node, str(row.index), row.uuid, row.job, row.user, snap.backend]
            holding.add_metric([*labels, row.holding], 1.0)
            values = {
                "util": row.utilization_pct,
                "mem": row.memory_used_mb * mb if row.memory_used_mb is not None else None,
                "total": row.memory_total_mb * mb if row.memory_total_mb is not None else None,
                "temp": row.temperature_c,
                "power": row.power_w,
                "ecc": float(row.ecc_uncorrected) if row.ecc_uncorrected is not None else None,
                "idle": row.idle_for_s,
            }
            for key, value in values.items():
                if value is not None:
                    gauges[key].add_metric(labels, value)
        yield holding
        yield from gauges.values()
        actions = CounterMetricFamily(
            "hpcplat_node_agent_actions",
            "Actions taken (dry_run=true: only reported)",
            labels=["node", "kind", "action", "dry_run"],
        )
        for kind, action, dry_run, count in snap.actions:
            actions.add_metric([snap.node, kind, action, str(dry_run).lower()], float(count))
        yield actions


class MetricsServer:
    """``/metrics`` over HTTP with prometheus_client, on its own registry."""

    def __init__(self, collector: SnapshotCollector) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._server: Any = None
        self.port = 0

    def start(self, address: str, port: int) -> int:
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        self._server = server
        self.port = int(server.server_address[1])
        return self.port

    def render(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode("utf-8")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
