"""Unit tests of what the node agent reports: owner notices, the spool, usage windows, the catalog
trip (a real SQLite catalog), Prometheus output, and the light sampling path."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hpcplat.slurm.state import JobState
from node_agent.attribution import GpuAttribution, Holding
from node_agent.config import ConfigError, from_mapping
from node_agent.events import JOB_EVENTS_FILE, EventKind, EventRecorder, Owner
from node_agent.gpu.backend import GpuInfo, GpuSample
from node_agent.metrics import GpuRow, MetricsServer, Snapshot, SnapshotCollector
from node_agent.reporter import CatalogFlusher, UsageWindows
from node_agent.slurm_view import JobDetail
from node_agent.spool import Spool, read_records

UID = os.geteuid()


def owner_files(tmp_path: Path) -> tuple[Path, Path]:
    stdout = tmp_path / "slurm-1.out"
    stdout.write_text("job output\n")
    job_dir = tmp_path / "jobdir"
    job_dir.mkdir()
    return stdout, job_dir


def test_event_reaches_log_spool_stdout_and_job_dir(tmp_path: Path) -> None:
    stdout, job_dir = owner_files(tmp_path)
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    recorder = EventRecorder("n1", spool)
    recorder.event(
        EventKind.IDLE_WARNING,
        "idle_warning",
        "1 GPU(s) at 0% for 60 min",
        job_id="7",
        owner=Owner(uid=UID, stdout_path=str(stdout), job_dir=str(job_dir)),
    )
    assert "hpcplat-node-agent@n1 job 7: idle_warning: 1 GPU(s) at 0% for 60 min" in stdout.read_text()
    line = json.loads((job_dir / JOB_EVENTS_FILE).read_text())
    assert line["kind"] == "IDLE_WARNING" and line["job_id"] == "7"
    rotated = spool.rotate()
    assert rotated is not None
    assert read_records(rotated)[0]["type"] == "event"


def test_owner_files_are_never_reached_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep\n")
    link = tmp_path / "link.out"
    link.symlink_to(target)
    dir_link = tmp_path / "dirlink"
    dir_link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    recorder = EventRecorder("n1", None)
    recorder.event(
        EventKind.POLICY,
        "orphan_term",
        "x",
        owner=Owner(uid=UID, stdout_path=str(link), job_dir=str(dir_link)),
    )
    assert target.read_text() == "keep\n"
    assert not (tmp_path / "elsewhere" / JOB_EVENTS_FILE).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
def test_owner_files_of_someone_else_are_not_written(tmp_path: Path) -> None:
    stdout, job_dir = owner_files(tmp_path)
    os.chown(stdout, 12345, -1)
    os.chown(job_dir, 12345, -1)
    EventRecorder("n1", None).event(
        EventKind.POLICY,
        "orphan_term",
        "x",
        owner=Owner(uid=UID, stdout_path=str(stdout), job_dir=str(job_dir)),
    )
    assert stdout.read_text() == "job output\n"
    assert not (job_dir / JOB_EVENTS_FILE).exists()
    # the owner's own files are written, and a new events file is handed to the owner
    EventRecorder("n1", None).event(
        EventKind.POLICY,
        "orphan_term",
        "y",
        owner=Owner(uid=12345, stdout_path=str(stdout), job_dir=str(job_dir)),
    )
    assert "orphan_term: y" in stdout.read_text()
    assert (job_dir / JOB_EVENTS_FILE).stat().st_uid == 12345


def detail(job_id: str) -> JobDetail:
    return JobDetail(
        job_id,
        "train",
        "alice",
        1000,
        JobState.RUNNING,
        "gpu",
        "normal",
        "vision",
        ("n1",),
        1,
        True,
        True,
        0,
        "t0",
        "",
        "",
        {"n1": (0,)},
        1,
    )


def held(job_id: str, uuid: str, at: float, util: float, mem: float = 100.0) -> GpuAttribution:
    gpu = GpuInfo(uuid=uuid, index=0, name="A100")
    return GpuAttribution(
        gpu, GpuSample(uuid, 0, at, util, memory_used_mb=mem), Holding.HELD, job=detail(job_id)
    )


def test_usage_windows_down_sample_per_job_and_gpu(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.ensure()
    windows = UsageWindows("n1", spool, window_s=30.0, interval_s=10.0)
    for t, util in [(100.0, 0.0), (110.0, 50.0), (120.0, 100.0)]:
        windows.observe([held("7", "GPU-a", t, util, mem=t)])
    windows.observe([])  # the job left its GPU: the window closes
    path = spool.rotate()
    assert path is not None
    (record,) = read_records(path)
    assert record["job_id"] == "7" and record["gpu_uuid"] == "GPU-a" and record["node"] == "n1"
    assert (record["samples"], record["busy_samples"], record["mean_util"], record["max_mem_mb"]) == (
        3,
        2,
        50.0,
        120.0,
    )
    assert record["start"].startswith("1970-01-01T00:01:30")  # one interval before the first sample
    assert record["end"].startswith("1970-01-01T00:02:00")


def test_long_window_is_cut(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.ensure()
    windows = UsageWindows("n1", spool, window_s=20.0, interval_s=10.0)
    for t in range(0, 60, 10):
        windows.observe([held("7", "GPU-a", float(t), 0.0)])
    windows.close_all()
    path = spool.rotate()
    assert path is not None
    assert [r["samples"] for r in read_records(path)] == [2, 2, 2]


def test_flush_sends_to_a_real_sqlite_catalog_and_keeps_the_spool_when_down(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    windows = UsageWindows("n1", spool, window_s=300.0, interval_s=10.0)
    windows.observe([held("4242", "GPU-a", 1000.0, 30.0)])
    windows.close_all()
    EventRecorder("n1", spool).event(EventKind.IDLE_WARNING, "idle_warning", "idle 60 min", job_id="4242")

    down = CatalogFlusher(spool, "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", 60.0)
    assert not down.flush()
    assert len(spool.ready()) == 1  # kept for later

    db = tmp_path / "catalog.db"
    up = CatalogFlusher(spool, f"sqlite:///{db}", 60.0)
    assert up.flush(), "the reporter subprocess failed"
    assert spool.ready() == []
    with sqlite3.connect(db) as conn:
        usage = conn.execute("SELECT job_id, node, gpu_uuid, samples, busy_samples FROM gpu_usage").fetchall()
        events = conn.execute("SELECT kind, reason, job_id, source FROM event").fetchall()
    assert usage == [("4242", "n1", "GPU-a", 1, 1)]
    assert events == [("IDLE_WARNING", "idle_warning: idle 60 min", "4242", "hpcplat-node-agent@n1")]


def test_metrics_parse_with_prometheus_parser() -> None:
    collector = SnapshotCollector()
    collector.publish(
        Snapshot(
            node="n1",
            backend="emulated",
            backend_reason="",
            at=0.0,
            gpus=(
                GpuRow(0, "EMU-n1-0", "12", "alice", "held", 0.0, 10.0, 100.0, None, None, None, 120.0),
                GpuRow(1, "EMU-n1-1", "", "", "free", 0.0, 0.0, 100.0, None, None, None, None),
            ),
            slurm_ok=True,
            healthy=True,
            actions=(("IDLE_WARNING", "idle_warning", False, 2),),
        )
    )
    text = MetricsServer(collector).render()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    util = families["hpcplat_gpu_utilization_percent"].samples
    assert {s.labels["job"] for s in util} == {"12", ""}
    assert util[0].labels["user"] == "alice" and util[0].labels["gpu"] == "0"
    assert families["hpcplat_gpu_job_idle_seconds"].samples[0].value == 120.0
    assert families["hpcplat_node_agent_actions"].samples[0].value == 2.0
    assert (
        "hpcplat_gpu_temperature_celsius" not in text
        or not families["hpcplat_gpu_temperature_celsius"].samples
    )


def serve(**limits: float) -> MetricsServer:
    collector = SnapshotCollector()
    collector.publish(Snapshot(node="n1", backend="emulated", backend_reason="", at=0.0, slurm_ok=True))
    server = MetricsServer(collector, **limits)  # type: ignore[arg-type]
    server.start("127.0.0.1", 0)
    return server


def http(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send ``request``; (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_metrics_answer_only_get_and_head_of_metrics() -> None:
    server = serve()
    try:
        status, body = http(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and b"hpcplat_node_agent_slurm_up" in body
        assert http(server.port, b"HEAD /metrics HTTP/1.1\r\n\r\n") == (200, b"")
        status, _ = http(server.port, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        assert status == 405
        assert http(server.port, b"PUT /metrics HTTP/1.1\r\n\r\n")[0] == 405
        assert http(server.port, b"GET / HTTP/1.1\r\n\r\n")[0] == 404
        assert http(server.port, b"GET /metrics/../etc HTTP/1.1\r\n\r\n")[0] == 404
        assert http(server.port, b"nonsense\r\n\r\n")[0] == 400
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics", data=b"x"), timeout=5
            )
        assert info.value.code == 405
    finally:
        server.stop()


def test_half_open_connections_do_not_exhaust_the_metrics_server() -> None:
    server = serve(max_connections=8, client_timeout_s=1.0)
    threads_before = threading.active_count()
    started = time.monotonic()
    idle: list[socket.socket] = []
    try:
        for _ in range(200):  # connected, never sending a request
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        assert threading.active_count() <= threads_before  # no thread per connection
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read()
        assert b"hpcplat_node_agent_backend_up" in text
        assert time.monotonic() - started < 5
        # a client that trickles its request is cut off after client_timeout_s in all
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
            slow.sendall(b"GET /metr")
            time.sleep(1.5)
            with contextlib.suppress(OSError):
                slow.sendall(b"ics HTTP/1.1\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert slow.recv(100) == b""
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_the_metrics_address_is_loopback_unless_configured() -> None:
    assert from_mapping({}).metrics_address == "127.0.0.1"
    assert from_mapping({"node_agent": {"metrics_address": "10.1.2.3"}}).metrics_address == "10.1.2.3"
    with pytest.raises(ConfigError, match="metrics_address must be an IP address"):
        from_mapping({"node_agent": {"metrics_address": "node1.example.org"}})
    with pytest.raises(ConfigError, match="metrics_max_connections"):
        from_mapping({"node_agent": {"metrics_max_connections": 0}})


def run_agent(
    args: list[str], tmp_path: Path, *, code: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    program = code or (
        "import json, sys\n"
        "from node_agent.main import main\n"
        f"rc = main({args!r})\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in {'sqlalchemy', 'sqlmodel', 'alembic', 'torch'})\n"
        "print('MODULES ' + json.dumps(heavy))\n"
        "sys.exit(rc)\n"
    )
    dead = tmp_path / "dead-slurm.conf"  # no Slurm here: a controller nobody listens for
    dead.write_text("ClusterName=dead\nSlurmctldHost=localhost\nSlurmctldPort=1\nMessageTimeout=1\n")
    env = {**os.environ, "HPCPLAT_CONFIG": str(tmp_path / "site.toml"), "SLURM_CONF": str(dead)}
    return subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_sampling_loop_never_imports_an_orm(tmp_path: Path) -> None:
    devices = []
    for i in range(2):
        path = tmp_path / f"nxgpu{i}"
        os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))
        devices.append(str(path))
    (tmp_path / "site.toml").write_text(
        f'[catalog]\nurl = "sqlite:///{tmp_path}/c.db"\n'
        f"[node_agent]\ninterval_s = 1\nspool_dir = {str(tmp_path / 'spool')!r}\n"
        f"[node_agent.emulated.devices]\nnx = {devices!r}\n"
    )
    once = run_agent(["--once", "--json", "--node", "nx", "--backend", "emulated"], tmp_path)
    assert once.returncode == 0, once.stderr
    out, modules = once.stdout.rsplit("MODULES ", 1)
    data = json.loads(out)
    assert [g["uuid"] for g in data["gpus"]] == ["EMU-nx-0", "EMU-nx-1"]
    assert data["slurm_ok"] is False  # no Slurm configured here: unknown, not "no jobs"
    assert json.loads(modules) == []
    # the loop itself: a few cycles with spooling and the flusher thread
    loop = (
        "import json, sys\n"
        "from node_agent.agent import Agent\n"
        "from node_agent.config import load, BackendChoice\n"
        f"config = load(__import__('pathlib').Path({str(tmp_path / 'site.toml')!r}))\n"
        "agent = Agent(config, 'nx', backend_choice=BackendChoice.EMULATED)\n"
        "agent.start(metrics_port=0)\n"
        "agent.run(max_cycles=3)\n"
        "agent.close()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'sqlmodel', 'alembic'})\n"
        "print('MODULES ' + json.dumps(heavy))\n"
    )
    looped = run_agent([], tmp_path, code=loop)
    assert looped.returncode == 0, looped.stderr
    assert json.loads(looped.stdout.rsplit("MODULES ", 1)[1]) == []


def test_once_with_a_malformed_config_exits_2_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text("[node_agent]\ninterval_s = 0\n")
    result = run_agent(["--once", "--node", "nx"], tmp_path)
    assert result.returncode == 2
    assert "node_agent.interval_s must be between 1 and 60" in result.stderr


def test_daemon_with_a_malformed_config_keeps_running_observe_only(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text("[node_agent\n")
    dead = tmp_path / "dead-slurm.conf"
    dead.write_text("ClusterName=dead\nSlurmctldHost=localhost\nSlurmctldPort=1\nMessageTimeout=1\n")
    env = {**os.environ, "HPCPLAT_CONFIG": str(tmp_path / "site.toml"), "SLURM_CONF": str(dead)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node_agent.main",
            "--node",
            "nx",
            "--metrics-port",
            "0",
            "--backend",
            "nvml",
            "--spool-dir",
            str(tmp_path / "spool"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)
        assert proc.poll() is None, "the agent exited"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "is not valid TOML" in err and "OBSERVE-ONLY" in err
    assert err.count("no GPU backend") == 1  # one clear message, not one per cycle
    assert (tmp_path / "spool" / "nx").is_dir()


def test_epilog_cleans_only_the_finished_jobs_processes(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    env = {**os.environ, "SLURM_JOB_ID": "990077", "SLURMD_NODENAME": "nx", "HPCPLAT_JOB_DIR": str(tmp_path)}
    leftover = subprocess.Popen([sys.executable, "-c", stubborn], env=env)
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    other_job = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**env, "SLURM_JOB_ID": "990078"}
    )
    other_node = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**env, "SLURMD_NODENAME": "ny"}
    )
    try:
        time.sleep(0.5)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "node_agent.epilog",
                "--job-id",
                "990077",
                "--node",
                "nx",
                "--grace",
                "1",
                "--spool-dir",
                str(tmp_path / "spool"),
            ],
            env={**os.environ, "SLURM_JOB_ID": "990077", "SLURMD_NODENAME": "nx"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0
        assert "2 leftover process(es) terminated, 1 killed" in result.stderr
        assert leftover.wait(timeout=5) == -signal.SIGKILL
        assert polite.wait(timeout=5) == -signal.SIGTERM
        assert other_job.poll() is None and other_node.poll() is None
        actions = [
            json.loads(line)["action"] for line in (tmp_path / JOB_EVENTS_FILE).read_text().splitlines()
        ]
        assert sorted(actions) == ["epilog_kill", "epilog_term", "epilog_term"]
        assert (tmp_path / "spool" / "nx" / "current.jsonl").exists()
    finally:
        for proc in (leftover, polite, other_job, other_node):
            proc.kill()
            proc.wait()


def test_dry_run_events_are_not_shown_to_the_owner(tmp_path: Path) -> None:
    stdout, job_dir = owner_files(tmp_path)
    recorder = EventRecorder("n1", None)
    event = recorder.event(
        EventKind.IDLE_RECLAIM,
        "cancel",
        "idle",
        job_id="7",
        dry_run=True,
        owner=Owner(uid=UID, stdout_path=str(stdout), job_dir=str(job_dir)),
    )
    assert "would cancel" in event.text
    assert stdout.read_text() == "job output\n"
    assert not (job_dir / JOB_EVENTS_FILE).exists()
    assert recorder.counts == {("IDLE_RECLAIM", "cancel", True): 1}


def test_unreachable_slurm_is_unknown_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from node_agent.slurm_view import SlurmView

    conf = tmp_path / "slurm.conf"  # a controller nobody listens for
    conf.write_text("ClusterName=dead\nSlurmctldHost=localhost\nSlurmctldPort=1\nMessageTimeout=1\n")
    view = SlurmView("n1", env={"SLURM_CONF": str(conf)}, timeout=10)
    with caplog.at_level("ERROR"):
        assert view.poll() is None
        assert view.poll() is None
        assert view.node_view() is None
    assert len([r for r in caplog.records if "Slurm unreachable" in r.getMessage()]) == 1
