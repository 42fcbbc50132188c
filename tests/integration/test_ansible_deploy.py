"""site.yml applied from nothing with services managed: real munged, MariaDB, slurmdbd, slurmctld
and two slurmd on this machine, then a job, a second apply that changes nothing, and a GPU-count
change that restarts slurmctld and that node's slurmd only.

There is no systemd here, so the inventory sets ``hpcplat_service_manager: direct`` (the roles run
the daemons' programs and find them by their pid files; production uses systemd). Everything is
the test's own: a cluster name, free ports, its own munged socket and key, its own MariaDB data
directory and every file under a temporary directory, so the shared sandbox is never touched.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpcplat.runner import CommandResult, run
from tests.integration.test_ansible import ANSIBLE_DIR, PLAYBOOK, ansible_env, make_device

pytestmark = [
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible-core is not installed (pip install -e .[dev])"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starts Slurm daemons and creates device files"),
    pytest.mark.skipif(not Path("/usr/sbin/slurmctld").exists(), reason="Slurm is not installed"),
    pytest.mark.timeout(420),
]

NODES = ("c1", "c2")
DB_PASSWORD = "Deploy-Test_" + secrets.token_hex(8)


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def build_inventory(tmp: Path, gpus: dict[str, int]) -> dict[str, Any]:
    ctld_port, dbd_port, db_port, *slurmd_ports = free_ports(3 + len(NODES))
    name = "deploy" + secrets.token_hex(3)
    base = {
        "cluster_name": name,
        "control_host": socket.gethostname().split(".")[0],
        "control_addr": "127.0.0.1",
        "slurmctld_port": ctld_port,
        "slurmdbd_host": "127.0.0.1",
        "slurmdbd_port": dbd_port,
        "slurm_user": "root",
        "munge_socket": f"{tmp}/munge/munge.socket",
        "state_save_location": f"{tmp}/spool/ctld",
        "slurmd_spool_dir": f"{tmp}/spool/%n",
        "slurmctld_pid_file": f"{tmp}/run/slurmctld.pid",
        "slurmd_pid_file": f"{tmp}/run/slurmd-%n.pid",
        "slurmdbd_pid_file": f"{tmp}/run/slurmdbd.pid",
        "slurmctld_log_file": f"{tmp}/log/slurmctld.log",
        "slurmd_log_file": f"{tmp}/log/slurmd-%n.log",
        "slurmdbd_log_file": f"{tmp}/log/slurmdbd.log",
        "epilog": f"{tmp}/libexec/hpcplat-epilog",
        "health_check_program": f"{tmp}/libexec/hpcplat-healthcheck",
        "wait_timeout_s": 60,
    }

    def host(name: str, **more: Any) -> dict[str, Any]:
        root = tmp / name
        return {
            "hpcplat_root": "",
            "slurm_config": {**base, "conf_dir": f"{root}/etc/slurm"},
            "common_config": {"hosts_file": f"{root}/etc/hosts"},
            "munge_config": {
                "key_path": f"{root}/etc/munge/munge.key",
                "socket": base["munge_socket"],
                "pid_file": f"{tmp}/run/munged.pid",
                "log_file": f"{tmp}/log/munged.log",
                "seed_file": f"{tmp}/munge/munged.seed",
                # One munged on this machine serves every "machine" of the test.
                "manage_services": name == "ctl",
            },
            "hpcplat_site_config": {
                # One site file for every "machine": slurm.conf names one HealthCheckProgram and
                # one Epilog for all nodes, and they name this file (on a site: the same path on
                # every machine).
                "config_path": f"{tmp}/etc/hpcplat/hpcplat.toml",
                "venv": sys.prefix,
                "catalog_url": f"sqlite:///{tmp}/catalog.db",
                "default_account": "root",
            },
            "node_agent_config": {
                "unit_path": f"{root}/etc/systemd/hpcplat-node-agent.service",
                "env_path": f"{root}/etc/hpcplat/node-agent.env",
                "spool_dir": f"{tmp}/spool/agent",
            },
            "node_agent_log": f"{tmp}/log/node-agent.log",
            "lmod_config": {
                "module_root": f"{root}/modulefiles",
                "profile_script": f"{root}/etc/profile.d/hpcplat-modules.sh",
            },
            **more,
        }

    compute = {}
    for node, port in zip(NODES, slurmd_ports, strict=True):
        devices = [str(tmp / "dev" / f"{node}gpu{i}") for i in range(gpus[node])]
        for device in devices:
            make_device(Path(device))
        compute[node] = host(
            node,
            ansible_host="127.0.0.1",
            slurmd_port=port,
            gpu_count=gpus[node],
            gpu_devices=devices,
            cpus=2,
            memory_mb=1000,
        )
    return {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "ansible_become": False,
                "hpcplat_install_packages": False,
                "hpcplat_manage_users": False,
                "hpcplat_manage_services": True,
                "hpcplat_service_manager": "direct",
                # The sandbox's fast test values, given as the site's own overrides: one host,
                # nodes claiming more CPUs than it has, quick scheduling, no mail.
                "slurm_conf": {
                    "SlurmdParameters": "config_overrides",
                    "SchedulerParameters": ["batch_sched_delay=0", "sched_interval=2", "bf_interval=1"],
                    "MailProg": "/bin/true",
                    "ReturnToService": 2,
                    "KillWait": 10,
                    "HealthCheckInterval": 0,
                },
                "slurmdbd_conf": {"DbdHost": socket.gethostname().split(".")[0]},
                "slurmdbd_config": {
                    "db_password": DB_PASSWORD,
                    "db_port": db_port,
                    "db_datadir": f"{tmp}/mariadb",
                    "db_socket": f"/run/mysqld/hpcplat-{name}.sock",
                    "db_run_as": "root",
                    "db_options_file": f"{tmp}/ctl/etc/slurm/mariadb.cnf",
                },
            },
            "children": {
                "controller": {"hosts": {"ctl": host("ctl", ansible_host="127.0.0.1")}},
                "dbd": {"hosts": {"ctl": None}},
                "compute": {"hosts": compute},
            },
        }
    }


def apply(tmp: Path, *args: str) -> tuple[CommandResult, dict[str, dict[str, int]], float]:
    """site.yml: the result, the recap's counts per host, and the seconds it took."""
    started = time.monotonic()
    result = run(
        [str(PLAYBOOK), "-i", str(tmp / "hosts.yml"), "site.yml", *args],
        timeout=300,
        cwd=str(ANSIBLE_DIR),
        env=ansible_env(tmp),
        check=False,
    )
    took = time.monotonic() - started
    stats = {}
    for line in result.stdout.splitlines():
        if " : ok=" in line:
            host, _, counts = line.partition(" : ")
            stats[host.strip()] = {k: int(v) for k, v in (c.split("=") for c in counts.split())}
    return result, stats, took


def pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def slurm(tmp: Path, *argv: str, timeout: float = 30) -> CommandResult:
    env = {"SLURM_CONF": f"{tmp}/ctl/etc/slurm/slurm.conf", "PATH": os.environ.get("PATH", os.defpath)}
    return run(list(argv), timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("deploy")
    inventory = build_inventory(tmp, {"c1": 2, "c2": 2})
    (tmp / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    state: dict[str, Any] = {"tmp": tmp, "inventory": inventory, "times": {}}
    try:
        result, report, took = apply(tmp)
        state["times"]["first"] = took
        state["first"] = (result, report)
        yield state
    finally:
        for name in ("slurmd-c1", "slurmd-c2", "slurmctld", "slurmdbd", "munged"):
            _stop(tmp / "run" / f"{name}.pid", tmp)
        _stop(tmp / "mariadb" / "mariadbd.pid", tmp)


def _stop(pid_file: Path, tmp: Path) -> None:
    """SIGTERM the daemon of ``pid_file`` if it is ours: its command line or environment names ``tmp``."""
    try:
        number = pid(pid_file)
        proc = Path(f"/proc/{number}")
        ours = str(tmp).encode() in (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
    except (OSError, ValueError):
        return
    if not ours:
        return
    os.kill(number, signal.SIGTERM)
    for _ in range(100):
        if not proc.exists():
            return
        time.sleep(0.1)
    os.kill(number, signal.SIGKILL)


def test_fresh_install_starts_every_daemon_and_runs_a_job(deployed: dict[str, Any]) -> None:
    tmp = deployed["tmp"]
    result, _ = deployed["first"]
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    assert DB_PASSWORD not in result.stdout
    nodes = slurm(tmp, "sinfo", "-h", "-N", "-o", "%N %T %G")
    assert nodes.returncode == 0, nodes.stderr
    assert sorted(set(nodes.stdout.split()[0::3])) == list(NODES) and set(nodes.stdout.splitlines()) == {
        "c1 idle gpu:2",
        "c2 idle gpu:2",
    }, nodes.stdout
    job = slurm(
        tmp,
        "sbatch",
        "--wait",
        "-A",
        "root",
        "-N",
        "2",
        "--gres=gpu:1",
        "-o",
        f"{tmp}/job.out",
        "--wrap",
        "srun hostname",
        timeout=90,
    )
    assert job.returncode == 0, job.stdout + job.stderr
    conf = (tmp / "ctl" / "etc" / "slurm" / "slurm.conf").read_text()
    # Production defaults stay where the site did not override them; its overrides reach the file.
    assert "Epilog=" in conf and "HealthCheckProgram=" in conf
    assert "SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1\n" in conf
    assert "MailProg=/bin/true\n" in conf
    assert (tmp / "ctl" / "etc" / "slurm" / "slurmdbd.conf").stat().st_mode & 0o777 == 0o600
    print(f"first apply from nothing: {deployed['times']['first']:.0f} s")


def test_second_apply_changes_nothing(deployed: dict[str, Any]) -> None:
    tmp = deployed["tmp"]
    assert deployed["first"][0].returncode == 0
    pids = {p.name: pid(p) for p in (tmp / "run").glob("*.pid")}
    result, report, took = apply(tmp)
    assert result.returncode == 0, result.stdout[-6000:]
    changed = {host: counts["changed"] for host, counts in report.items()}
    assert set(changed.values()) == {0}, changed
    assert {p.name: pid(p) for p in (tmp / "run").glob("*.pid")} == pids
    print(f"second apply: {took:.0f} s, changed=0 on {sorted(changed)}")


def test_a_gpu_count_change_restarts_slurmctld_and_that_node_only(deployed: dict[str, Any]) -> None:
    tmp = deployed["tmp"]
    assert deployed["first"][0].returncode == 0
    before = {p.stem: pid(p) for p in (tmp / "run").glob("*.pid")}
    inventory = deployed["inventory"]
    c1 = inventory["all"]["children"]["compute"]["hosts"]["c1"]
    c1["gpu_count"] = 1
    c1["gpu_devices"] = c1["gpu_devices"][:1]
    (tmp / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    result, _, took = apply(tmp)
    assert result.returncode == 0, result.stdout[-8000:]
    after = {p.stem: pid(p) for p in (tmp / "run").glob("*.pid")}
    assert after["slurmctld"] != before["slurmctld"]
    assert after["slurmd-c1"] != before["slurmd-c1"]
    assert after["slurmd-c2"] == before["slurmd-c2"]
    assert after["slurmdbd"] == before["slurmdbd"] and after["munged"] == before["munged"]
    nodes = slurm(tmp, "sinfo", "-h", "-N", "-o", "%N %T %G")
    assert set(nodes.stdout.splitlines()) == {"c1 idle gpu:1", "c2 idle gpu:2"}, nodes.stdout
    print(f"GPU-count change: {took:.0f} s")
