"""The node agent against the real Slurm sandbox (emulated GPUs), with windows of seconds.

Every job submitted here is cancelled at the end, every node drained here is resumed. The idle
policy is scoped to this module's jobs (``only_job_names``) so other people's jobs on the shared
sandbox are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hpcplat.runner import run
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from node_agent.agent import Agent
from node_agent.config import AgentConfig, load
from node_agent.events import JOB_EVENTS_FILE
from node_agent.metrics import MetricsServer

pytestmark = pytest.mark.sandbox

TAG = f"na-test-{uuid.uuid4().hex[:6]}"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 40.0, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


class Cluster:
    """Submits jobs to the sandbox and cleans up after itself."""

    def __init__(self, sandbox: Sandbox, tmp: Path) -> None:
        self.env = sandbox.env()
        self.sandbox = sandbox
        self.tmp = tmp
        self.jobs: list[str] = []
        self.client = CliBackend(env=self.env)

    def slurm(self, *argv: str, check: bool = True) -> str:
        return run(list(argv), timeout=30, env=self.env, check=check).stdout

    def submit(
        self, name: str, body: str, *args: str, job_dir: Path | None = None, partition: str = "debug"
    ) -> str:
        script = self.tmp / f"{name}.sh"
        script.write_text("#!/bin/bash\n" + body + "\n")
        export = "ALL" + (f",HPCPLAT_JOB_DIR={job_dir}" if job_dir else "")
        out = self.slurm(
            "sbatch",
            "--parsable",
            "-J",
            f"{TAG}-{name}",
            "-p",
            partition,
            "--gres=gpu:1",
            "-t",
            "10",
            "-o",
            str(self.tmp / f"{name}.out"),
            f"--export={export}",
            *args,
            str(script),
        )
        job_id = out.strip().split(";")[0]
        self.jobs.append(job_id)
        return job_id

    def state(self, job_id: str) -> str:
        return self.slurm("squeue", "-h", "-j", job_id, "-o", "%T", check=False).strip()

    def node_of(self, job_id: str) -> str:
        return str(
            wait_for(
                f"job {job_id} to run",
                lambda: (
                    self.state(job_id) == "RUNNING"
                    and self.slurm("squeue", "-h", "-j", job_id, "-o", "%N").strip()
                ),
                timeout=60,
            )
        )

    def detail(self, job_id: str) -> str:
        return self.slurm("scontrol", "show", "job", job_id, check=False)

    def node_line(self, node: str) -> str:
        return self.slurm("scontrol", "-o", "show", "node", node)

    def cleanup(self) -> None:
        if self.jobs:
            self.slurm("scancel", *self.jobs, check=False)


@pytest.fixture
def cluster(sandbox: Sandbox, tmp_path: Path) -> Iterator[Cluster]:
    tmp_path.chmod(0o755)
    c = Cluster(sandbox, tmp_path)
    yield c
    c.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """Agents running in-process, each in a thread."""

    def __init__(self, cluster: Cluster, config_text: str, nodes: list[str], **agent_args: Any) -> None:
        path = cluster.tmp / f"agent-{uuid.uuid4().hex[:4]}.toml"
        gres = Path(cluster.env["SLURM_CONF"]).parent / "gres.conf"
        path.write_text(
            f"[node_agent]\nspool_dir = {str(cluster.tmp / 'spool')!r}\nmetrics_port = 0\n"
            + config_text
            + (
                ""
                if "[node_agent.emulated" in config_text
                else f"\n[node_agent.emulated]\ngres_conf = {str(gres)!r}\n"
            )
        )
        config = load(path)
        self.agents = [
            Agent(config, node, client=cluster.client, slurm_env=cluster.env, **agent_args) for node in nodes
        ]
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Running:
        for agent in self.agents:
            agent.start(metrics_port=0)
            thread = threading.Thread(target=agent.run, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        for agent in self.agents:
            agent.stop()
        for thread in self.threads:
            thread.join(timeout=30)
        for agent in self.agents:
            agent.close()

    def events(self, job_id: str | None = None) -> list[tuple[str, str]]:
        return [
            (e.action, e.reason)
            for a in self.agents
            for e in list(a.recorder.recent)
            if job_id is None or e.job_id == job_id
        ]


IDLE_CONFIG = f"""
interval_s = 1
slurm_poll_s = 1
[node_agent.idle]
warn_after_s = [2, 4]
act_after_s = 6
requeue_grace_s = 3
only_job_names = ["{TAG}-*"]
[node_agent.partitions.gpu.idle]
dry_run = true
[node_agent.orphans]
enabled = false
[node_agent.health]
enabled = false
"""


def test_idle_jobs_are_warned_then_requeued_or_cancelled_and_a_busy_job_is_not(cluster: Cluster) -> None:
    job_dir = cluster.tmp / "jobdir"
    job_dir.mkdir()
    cancel = cluster.submit("idle-cancel", "sleep 300", "--no-requeue")
    requeue = cluster.submit(
        "idle-requeue",
        "trap 'echo \"got USR1: checkpoint saved\"' USR1\nwhile true; do sleep 300 & wait $!; done",
        "--requeue",
        "--open-mode=append",
        job_dir=job_dir,
    )
    busy = cluster.submit("busy", f"exec {sys.executable} -c 'while True: pass'", "--no-requeue")
    dry = cluster.submit("idle-dry-run", "sleep 300", "--no-requeue", partition="gpu")
    nodes = sorted({cluster.node_of(j) for j in (cancel, requeue, busy, dry)})
    with Running(cluster, IDLE_CONFIG, nodes) as agents:
        busy_agent = next(a for a in agents.agents if a.node == cluster.node_of(busy))
        port = free_port()
        server = MetricsServer(busy_agent.collector)
        server.start("127.0.0.1", port)
        try:
            wait_for("the idle job to be cancelled", lambda: cluster.state(cancel) in ("", "CANCELLED"))
            wait_for("the requeueable job to be requeued", lambda: "Restarts=1" in cluster.detail(requeue))

            def busy_metric() -> float | None:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                for family in text_string_to_metric_families(text):
                    if family.name == "hpcplat_gpu_utilization_percent":
                        for sample in family.samples:
                            if sample.labels["job"] == busy and sample.value > 0:
                                return sample.value
                return None

            assert wait_for("the busy job's GPU in /metrics", busy_metric, timeout=10) > 0
        finally:
            server.stop()
        # the busy job lived through several act windows untouched
        assert cluster.state(busy) == "RUNNING"
        assert agents.events(busy) == []
        # the dry-run partition: reported, not done, and not shown to the owner
        assert cluster.state(dry) == "RUNNING"
        dry_events = [e for a in agents.agents for e in a.recorder.recent if e.job_id == dry]
        assert [(e.action, e.dry_run) for e in dry_events] == [
            ("idle_warning", True),
            ("idle_warning", True),
            ("cancel", True),
        ]
        assert "hpcplat-node-agent" not in (cluster.tmp / "idle-dry-run.out").read_text()

    cancel_actions = [a for a, _ in agents.events(cancel)]
    assert cancel_actions == ["idle_warning", "idle_warning", "cancel"]
    cancel_out = (cluster.tmp / "idle-cancel.out").read_text()
    assert cancel_out.count("idle_warning") == 2 and "cancel: " in cancel_out  # shown to the owner

    assert [a for a, _ in agents.events(requeue)] == [
        "idle_warning",
        "idle_warning",
        "checkpoint_signal",
        "requeue",
    ]
    requeue_out = (cluster.tmp / "idle-requeue.out").read_text()
    assert "got USR1: checkpoint saved" in requeue_out  # the checkpoint signal reached the batch script
    job_events = [json.loads(line) for line in (job_dir / JOB_EVENTS_FILE).read_text().splitlines()]
    assert [e["action"] for e in job_events][-2:] == ["checkpoint_signal", "requeue"]
    assert all(e["kind"] in ("IDLE_WARNING", "IDLE_RECLAIM") for e in job_events)

    spooled = [
        json.loads(line)
        for f in (cluster.tmp / "spool").glob("*/ready-*.jsonl")
        for line in f.read_text().splitlines()
    ]
    usage = [r for r in spooled if r["type"] == "usage" and r["job_id"] == busy]
    assert usage and max(r["mean_util"] for r in usage) > 0
    assert {r["action"] for r in spooled if r["type"] == "event"} >= {"idle_warning", "cancel", "requeue"}


ORPHAN_CONFIG = """
interval_s = 1
slurm_poll_s = 1
[node_agent.idle]
enabled = false
[node_agent.orphans]
grace_s = 2
scan_interval_s = 1
kill_wait_s = 2
[node_agent.health]
enabled = false
"""


def test_orphans_of_a_finished_job_are_killed_and_a_running_jobs_process_is_not(
    cluster: Cluster, sandbox: Sandbox
) -> None:
    keep = cluster.submit("keep", "sleep 300")
    node = cluster.node_of(keep)
    done = cluster.submit("done", "true")
    wait_for("the short job to finish", lambda: cluster.state(done) == "")
    device = str(sandbox.gpu_device_paths(node)[0])
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"f = open({device!r}); time.sleep(120)"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    on_gpu = subprocess.Popen([sys.executable, "-c", stubborn], env={**base, "SLURM_JOB_ID": done})
    left = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={**base, "SLURM_JOB_ID": done, "SLURMD_NODENAME": node},
    )
    running = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={**base, "SLURM_JOB_ID": keep, "SLURMD_NODENAME": node},
    )
    try:
        with Running(cluster, ORPHAN_CONFIG, [node]) as agents:
            assert left.wait(timeout=30) == -signal.SIGTERM
            assert on_gpu.wait(timeout=30) == -signal.SIGKILL  # it ignored SIGTERM
            time.sleep(2)
            assert running.poll() is None  # its job runs on this node
        actions = sorted(a for a, _ in agents.events(done))
        assert actions == ["orphan_kill", "orphan_term", "orphan_term"]
        reasons = " ".join(r for _, r in agents.events(done))
        assert f"job {done}, which is no longer running on {node}, holds a GPU" in reasons
        assert agents.events(keep) == []
    finally:
        for proc in (on_gpu, left, running):
            proc.kill()
            proc.wait()


def make_devices(directory: Path, node: str) -> list[str]:
    paths = []
    for i in range(4):
        path = directory / f"{node}gpu{i}"
        os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))
        paths.append(str(path))
    return paths


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_health_failure_drains_recovery_resumes_and_an_admin_drain_stays(cluster: Cluster) -> None:
    node = "n4"
    line = cluster.node_line(node)
    if "DRAIN" in line.split("State=", 1)[1].split()[0]:
        pytest.skip(f"{node} is drained by someone else: {line}")
    devices = make_devices(cluster.tmp, node)
    flag = cluster.tmp / "fail-check"
    check = cluster.tmp / "site-check.sh"
    check.write_text(f'#!/bin/sh\nif [ -e {flag} ]; then echo "ib0: link down"; exit 1; fi\nexit 0\n')
    check.chmod(0o755)
    config = f"""
interval_s = 1
slurm_poll_s = 1
[node_agent.idle]
enabled = false
[node_agent.orphans]
enabled = false
[node_agent.health]
resume_after_s = 1
check_interval_s = 1
checks = [{{ path = "{check}", timeout_s = 5 }}]
[node_agent.emulated.devices]
{node} = {json.dumps(devices)}
"""

    def reason() -> str:
        text = cluster.node_line(node)
        return text.split(" Reason=", 1)[1].strip() if " Reason=" in text else ""

    try:
        with Running(cluster, config, [node]) as agents:
            os.rename(devices[3], devices[3] + ".gone")  # a GPU falls off
            assert "hpcplat-agent: GPU missing: 3 of 4 present" in wait_for("a drain", reason)
            os.rename(devices[3] + ".gone", devices[3])
            wait_for("the agent to resume the node", lambda: reason() == "")
            flag.touch()
            assert "site check site-check.sh failed: exit 1: ib0: link down" in wait_for("a drain", reason)
            flag.unlink()
            wait_for("the agent to resume the node", lambda: reason() == "")
            cluster.slurm("scontrol", "update", f"nodename={node}", "state=drain", "reason=admin: bad DIMM")
            time.sleep(4)  # several healthy cycles, past resume_after_s
            assert reason().startswith("admin: bad DIMM")
        assert [a for a, _ in agents.events()] == ["drain", "resume", "drain", "resume"]
    finally:
        if reason():
            cluster.slurm("scontrol", "update", f"nodename={node}", "state=resume", check=False)


def test_entry_point_serves_metrics_and_once_json(cluster: Cluster, sandbox: Sandbox) -> None:
    config = cluster.tmp / "site.toml"
    config.write_text(Path(cluster.env["HPCPLAT_CONFIG"]).read_text() + "\n[node_agent]\ninterval_s = 1\n")
    env = {**os.environ, **cluster.env, "HPCPLAT_CONFIG": str(config)}
    agent_bin = str(Path(sys.executable).parent / "hpcplat-node-agent")
    once = subprocess.run(
        [agent_bin, "--once", "--json", "--node", "n2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert once.returncode == 0, once.stderr
    data = json.loads(once.stdout)
    assert data["backend"] == "emulated" and data["slurm_ok"]
    assert [g["uuid"] for g in data["gpus"]] == [f"EMU-n2-{i}" for i in range(4)]
    assert data["health"]["healthy"] is True

    port = free_port()
    proc = subprocess.Popen(
        [
            agent_bin,
            "--node",
            "n2",
            "--dry-run",
            "--metrics-port",
            str(port),
            "--spool-dir",
            str(cluster.tmp / "sp"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def scrape() -> str | None:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                return None
            return text if "hpcplat_gpu_utilization_percent{" in text else None

        text = wait_for("/metrics", scrape, timeout=30)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        util = families["hpcplat_gpu_utilization_percent"].samples
        assert sorted(s.labels["gpu"] for s in util) == ["0", "1", "2", "3"]
        assert {"node", "gpu", "uuid", "job", "user", "backend"} <= set(util[0].labels)
        assert families["hpcplat_node_agent_backend_up"].samples[0].labels["backend"] == "emulated"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_a_process_exporting_another_jobs_id_is_attributed_to_its_real_job(
    cluster: Cluster, sandbox: Sandbox
) -> None:
    other = cluster.submit("claimed", "sleep 300")
    node = cluster.node_of(other)
    devices = [str(p) for p in sandbox.gpu_device_paths(node)]
    program = cluster.tmp / "liar.py"
    program.write_text(
        "import os, time\n"
        f"gpu = open({devices!r}[int(os.environ['SLURM_JOB_GPUS'].split(',')[0])])\n"
        f"open({str(cluster.tmp / 'liar-ready')!r}, 'w').close()\n"
        "time.sleep(300)\n"
    )
    # The job's only process says it is job `other`'s and holds the job's own GPU open.
    liar = cluster.submit(
        "liar", f"export SLURM_JOB_ID={other}\nexec {sys.executable} {program}", f"--nodelist={node}"
    )
    assert cluster.node_of(liar) == node
    # Its interpreter's start-up is CPU use: the idle check below starts once it sleeps.
    wait_for("the liar to start", (cluster.tmp / "liar-ready").exists, timeout=60)
    config = load_config(
        cluster, "interval_s = 1\nslurm_poll_s = 1\n[node_agent.orphans]\nscan_interval_s = 1\n"
    )
    agent = Agent(config, node, client=cluster.client, slurm_env=cluster.env, act=False, spool=False)
    agent.start(metrics_port=0, background=False)
    try:

        def held() -> dict[str, str] | None:
            result = agent.cycle()
            holders = {a.job_id: a.gpu.uuid for a in result.attributions if a.job_id in (liar, other)}
            on_gpu = [
                p for a in result.attributions if a.job_id == liar and a.sample for p in a.sample.processes
            ]
            return holders if len(holders) == 2 and on_gpu else None

        holders = wait_for("both jobs' GPUs to be held by their real jobs", held, timeout=30)
        assert holders[liar] != holders[other]
        claims = [e for e in agent.recorder.recent if e.action == "false_job_claim"]
        assert len(claims) == 1 and claims[0].job_id == liar
        assert (
            f"claims job {other}" in claims[0].reason and f"Slurm counts it in job {liar}" in claims[0].reason
        )
        agent.cycle()  # a fresh window: the start-up CPU may still be in the previous one
        time.sleep(1.0)
        liar_gpu = next(a for a in agent.cycle().attributions if a.job_id == liar)
        assert liar_gpu.sample is not None and liar_gpu.sample.utilization_pct == 0.0  # it sleeps
    finally:
        agent.close()


def load_config(cluster: Cluster, text: str) -> AgentConfig:
    path = cluster.tmp / f"agent-{uuid.uuid4().hex[:4]}.toml"
    gres = Path(cluster.env["SLURM_CONF"]).parent / "gres.conf"
    path.write_text(
        f"[node_agent]\nspool_dir = {str(cluster.tmp / 'spool')!r}\nmetrics_port = 0\n{text}\n"
        f"[node_agent.emulated]\ngres_conf = {str(gres)!r}\n"
    )
    return load(path)
