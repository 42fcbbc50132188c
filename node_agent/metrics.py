"""The Prometheus ``/metrics`` endpoint: per-GPU figures labelled with the job, user and GPU.

The agent publishes an immutable :class:`Snapshot` after every cycle; the collector renders the
latest one on each scrape, so series of jobs that left disappear at once (no stale labels).
Labels: ``node``, ``gpu`` (GRES index), ``uuid``, ``job``, ``user`` (empty when the GPU is free
or its holder uncertain), ``backend`` (``nvml`` or ``emulated``).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

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


DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_CLIENT_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
}


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    outgoing: memoryview | None = None


class MetricsServer:
    """``/metrics`` over HTTP on its own registry, hardened for a root daemon on a shared node.

    One thread serves every connection without blocking (``selectors``): a client that connects
    and sends nothing costs a file descriptor, not a thread. At most ``max_connections`` are open
    at once (the oldest is closed to make room for a new one, so a flood of idle connections cannot
    lock a scraper out); each has ``client_timeout_s`` in all to send its request and read the
    answer. Only ``GET`` and ``HEAD`` of ``/metrics`` are answered (other methods 405, other paths
    404); one request per connection.
    """

    def __init__(
        self,
        collector: SnapshotCollector,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.max_connections = max(1, max_connections)
        self.client_timeout_s = client_timeout_s
        self.port = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    def start(self, address: str, port: int) -> int:
        """Listen on ``address:port`` (port 0: any free one) and serve; returns the port."""
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST
        )[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen(max(self.max_connections, 64))
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="metrics-http", daemon=True)
        self._thread.start()
        return self.port

    def render(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode("utf-8")

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        self._thread.join(timeout=10)
        self._thread = None
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._listener = self._wake_r = self._wake_w = None

    # --- the serving thread -------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, "listen")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        conns: dict[int, _Connection] = {}  # insertion order: oldest first
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for fd, expiring in list(conns.items()):
                    if now >= expiring.deadline:
                        self._close(selector, conns, fd)
                timeout = min((c.deadline for c in conns.values()), default=now + 1.0) - now
                for key, events in selector.select(max(0.0, min(timeout, 1.0))):
                    if key.data == "wake":
                        continue
                    if key.data == "listen":
                        self._accept(selector, conns)
                        continue
                    fd = key.fd
                    conn = conns.get(fd)
                    if conn is None:
                        continue
                    try:
                        if events & selectors.EVENT_READ and conn.outgoing is None:
                            self._read(selector, conns, fd, conn)
                        elif events & selectors.EVENT_WRITE and conn.outgoing is not None:
                            self._write(selector, conns, fd, conn)
                    except OSError:
                        self._close(selector, conns, fd)
        finally:
            for fd in list(conns):
                self._close(selector, conns, fd)
            selector.close()

    def _accept(self, selector: selectors.BaseSelector, conns: dict[int, _Connection]) -> None:
        assert self._listener is not None
        for _ in range(self.max_connections):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: try again next round
                log.warning("metrics: accept failed: %s", exc)
                return
            while len(conns) >= self.max_connections:
                self._close(selector, conns, next(iter(conns)))  # the oldest makes room
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic() + self.client_timeout_s)
            conns[sock.fileno()] = conn
            selector.register(sock, selectors.EVENT_READ)

    def _read(
        self, selector: selectors.BaseSelector, conns: dict[int, _Connection], fd: int, conn: _Connection
    ) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._close(selector, conns, fd)
            return
        conn.received += data
        end = conn.received.find(b"\r\n\r\n")
        if end < 0:
            end = conn.received.find(b"\n\n")
        if end < 0:
            if len(conn.received) > MAX_REQUEST_BYTES:
                self._respond(selector, conn, (431, b"request too large\n", True, {}))
            return
        self._respond(selector, conn, self._answer(bytes(conn.received[:end])))

    def _answer(self, head: bytes) -> tuple[int, bytes, bool, dict[str, str]]:
        """(status, body, whether to send the body, extra headers) for a request head."""
        parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, b"bad request\n", True, {}
        method, target = parts[0], parts[1]
        path = target.split(b"?", 1)[0]
        if path != b"/metrics":
            return 404, b"not found: only /metrics is served\n", method != b"HEAD", {}
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed: use GET\n", True, {"Allow": "GET, HEAD"}
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.registry)
        return 200, body, method == b"GET", {"Content-Type": CONTENT_TYPE_LATEST}

    def _respond(
        self,
        selector: selectors.BaseSelector,
        conn: _Connection,
        answer: tuple[int, bytes, bool, dict[str, str]],
    ) -> None:
        status, body, send_body, headers = answer
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}"]
        fields = {"Content-Type": "text/plain; charset=utf-8", **headers}
        fields["Content-Length"] = str(len(body))
        fields["Connection"] = "close"
        lines += [f"{k}: {v}" for k, v in fields.items()]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body if send_body else b"")
        conn.outgoing = memoryview(payload)
        selector.modify(conn.sock, selectors.EVENT_WRITE)

    def _write(
        self, selector: selectors.BaseSelector, conns: dict[int, _Connection], fd: int, conn: _Connection
    ) -> None:
        assert conn.outgoing is not None
        try:
            sent = conn.sock.send(conn.outgoing)
        except (BlockingIOError, InterruptedError):
            return
        conn.outgoing = conn.outgoing[sent:]
        if not conn.outgoing:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
                # what the client sent beyond the head (a POST body): read, so that closing does
                # not reset the connection before the client has read the answer
                while conn.sock.recv(65536):
                    pass
            self._close(selector, conns, fd)

    @staticmethod
    def _close(selector: selectors.BaseSelector, conns: dict[int, _Connection], fd: int) -> None:
        conn = conns.pop(fd, None)
        if conn is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn.sock)
        conn.sock.close()
