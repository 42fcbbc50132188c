"""A second, small sandbox next to the shared one: up, stale state, failure clean-up, down.

It uses its own name, node names, loopback network, ports and state directory, so the default
sandbox (which other sessions use) must not notice it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from hpcplat.errors import SandboxError
from hpcplat.runner import run
from hpcplat.sandbox import Sandbox, SandboxConfig, hosts
from hpcplat.sandbox.daemons import Daemon
from hpcplat.sandbox.processes import is_alive

pytestmark = pytest.mark.sandbox

PORT_BASE = 17200


def small_config(state_dir: Path) -> SandboxConfig:
    return SandboxConfig(
        name="hpcsbt",
        state_dir=state_dir,
        nodes=1,
        gpus_per_node=2,
        node_prefix="t",
        loopback_net=2,
        port_base=PORT_BASE,
    )


class FailsAtSlurmdbd(Sandbox):
    """Fault injection: bring-up breaks after munged and MariaDB are running."""

    def _start(self, daemon: Daemon) -> None:
        if daemon.name == "slurmdbd":
            raise SandboxError("injected failure before slurmdbd")
        super()._start(daemon)


def pids_of(sb: Sandbox) -> dict[str, int]:
    return {d.name: d.pid for d in sb.status().daemons if d.pid is not None}


def test_second_sandbox_comes_up_beside_the_default_and_down_leaves_nothing(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> None:
    default_before = pids_of(sandbox)
    state = tmp_path_factory.mktemp("t")
    sb = Sandbox(small_config(state))

    # A failure part way stops what was started.
    failing = FailsAtSlurmdbd(small_config(state))
    with pytest.raises(SandboxError, match="injected"):
        failing.up()
    assert pids_of(failing) == {}
    try:
        status = sb.up()
        assert status.started and status.running, status.to_dict()
        started = pids_of(sb)
        assert set(started) == {"munged", "mariadb", "slurmdbd", "slurmctld", "slurmd-t1", "server"}
        assert "127.0.2.1\tt1\t" in hosts.HOSTS.read_text()
        nodes = run(["sinfo", "-h", "-N", "-o", "%N %G"], timeout=30, env=sb.env()).stdout.split("\n")[0]
        assert nodes.split() == ["t1", "gpu:2"]
        assert [p.name for p in sb.gpu_device_paths("t1")] == ["t1gpu0", "t1gpu1"]

        # Up again: already running, nothing restarted.
        again = sb.up()
        assert again.started is False
        assert pids_of(sb) == started

        # A daemon that died (killed, as in a crash) is started again, the others are kept.
        os.kill(started["slurmd-t1"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while is_alive(started["slurmd-t1"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        repaired = sb.up()
        assert repaired.started and repaired.running
        now = pids_of(sb)
        assert now["slurmd-t1"] != started["slurmd-t1"]
        assert {k: v for k, v in now.items() if k != "slurmd-t1"} == {
            k: v for k, v in started.items() if k != "slurmd-t1"
        }
        started = now

        # A running job: down cancels it and leaves none of its processes.
        job = run(
            ["sbatch", "--parsable", "--gres=gpu:1", "-o", "/dev/null", "--wrap", "sleep 600"],
            timeout=30,
            env=sb.env(),
        ).stdout.strip()
        deadline = time.monotonic() + 60
        while not sb._job_processes():
            assert time.monotonic() < deadline, f"job {job} never started"
            time.sleep(0.2)
        job_pids = sb._job_processes()

        # Down, then stale pid files as after a crash (a gone pid, and a pid now used by another
        # program): up cleans them and starts.
        stopped = sb.down()
        assert sorted(stopped) == sorted(started.values())
        assert not [pid for pid in started.values() if is_alive(pid)]
        assert not [pid for pid in job_pids if is_alive(pid)]
        sb.layout.pid_file("slurmctld").write_text(f"{max(started.values())}\n")
        sb.layout.pid_file("munged").write_text(f"{os.getpid()}\n")  # pytest: not a munged
        restarted = sb.up()
        assert restarted.running
        assert is_alive(os.getpid())
    finally:
        last = pids_of(sb)
        sb.down()
    assert last
    assert not [pid for pid in last.values() if is_alive(pid)]
    assert "hpcsbt" not in hosts.HOSTS.read_text()
    assert pids_of(sandbox) == default_before
    assert sandbox.status().running


def test_a_live_daemon_of_another_sandbox_in_the_pid_file_is_refused(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sb = Sandbox(small_config(tmp_path_factory.mktemp("t")))
    sb.layout.run_dir.mkdir(parents=True)
    ctld = next(d for d in sandbox.status().daemons if d.name == "slurmctld")
    sb.layout.pid_file("slurmctld").write_text(f"{ctld.pid}\n")
    with pytest.raises(SandboxError, match=rf"names pid {ctld.pid}, a slurmctld that is not this sandbox's"):
        sb.up()
    assert is_alive(ctld.pid or 0)
    assert pids_of(sb) == {}
