"""`hpcplat fleet` against real OpenSSH servers on loopback addresses (tests/fixtures/sshd.py).

Every "machine" is an sshd on its own 127.0.1.N address with its own host key; they all share
this machine's processes, so what a remote probe finds can be compared with a local pgrep.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from hpcplat.cli.main import cli
from hpcplat.errors import UsageError
from hpcplat.runner import run
from tests.fixtures.sshd import SshFleet, free_port, keygen

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]

SILENT_ADDRESS = "127.0.1.14"
DEAD_ADDRESS = "127.0.1.15"


def write_inventory(
    path: Path,
    fleet: SshFleet,
    *,
    groups: dict[str, list[str]] | None = None,
    extra_hosts: dict[str, dict[str, Any]] | None = None,
    host_vars: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """m1 is the controller, m2 and m3 compute hosts (no GPUs) unless ``groups`` says otherwise."""
    groups = groups or {"controller": ["m1"], "compute": ["m2", "m3"]}
    machines = {s.name: fleet.host_vars(s) for s in fleet.servers}
    machines.update(extra_hosts or {})
    for name, more in (host_vars or {}).items():
        machines[name] = {**machines[name], **more}
    children: dict[str, Any] = {}
    listed: set[str] = set()
    for group, names in groups.items():
        hosts: dict[str, Any] = {}
        for name in names:
            hosts[name] = None if name in listed else machines[name]
            listed.add(name)
        children[group] = {"hosts": hosts}
    path.write_text(yaml.safe_dump({"all": {"children": children}}, sort_keys=False))
    return path


def fleet_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["fleet", *args], env=env, catch_exceptions=True)


@pytest.fixture
def inventory(tmp_path: Path, sshd_fleet: SshFleet) -> Path:
    return write_inventory(tmp_path / "hosts.yml", sshd_fleet)


@pytest.fixture
def known_hosts(tmp_path: Path, sshd_fleet: SshFleet) -> Path:
    return sshd_fleet.write_known_hosts(tmp_path / "known_hosts")


def base_args(inventory: Path, known_hosts: Path, *more: str) -> list[str]:
    return ["-i", str(inventory), "--known-hosts", str(known_hosts), "--no-agent", *more]


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (no SSH banner)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((SILENT_ADDRESS, 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def test_exec_collects_exit_codes_per_host(inventory: Path, known_hosts: Path) -> None:
    command = 'case "$SSH_CONNECTION" in *127.0.1.12*) echo bad >&2; exit 3;; esac; echo "on $SSH_CONNECTION"'
    result = fleet_cli(*base_args(inventory, known_hosts), "exec", "--on", "all", "--json", "--", command)
    assert result.exit_code == 1, result.output
    hosts = {h["host"]: h for h in json.loads(result.output)["hosts"]}
    assert {h: r["exit_code"] for h, r in hosts.items()} == {"m1": 0, "m2": 3, "m3": 0}
    assert "127.0.1.11" in hosts["m1"]["stdout"] and "127.0.1.13" in hosts["m3"]["stdout"]
    assert hosts["m2"]["stderr"] == "bad\n"
    assert "hpcplat-remote-pid" not in hosts["m1"]["stdout"]

    ok = fleet_cli(
        *base_args(inventory, known_hosts), "exec", "--on", "compute", "--", "echo", "a b", "$HOME"
    )
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("a b $HOME") == 2  # several arguments are quoted one by one
    assert "2/2 host(s) succeeded" in ok.output


def test_dead_and_silent_hosts_are_reported_and_the_rest_handled(
    tmp_path: Path, sshd_fleet: SshFleet, known_hosts: Path, silent_listener: int
) -> None:
    extra = {
        "silent": {"ansible_host": SILENT_ADDRESS, "ansible_port": silent_listener},
        "dead": {"ansible_host": DEAD_ADDRESS, "ansible_port": free_port(DEAD_ADDRESS)},
    }
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        sshd_fleet,
        groups={"controller": ["m1"], "compute": ["m2", "m3", "silent", "dead"]},
        extra_hosts=extra,
    )
    args = base_args(inventory, known_hosts, "--connect-timeout", "2")
    result = fleet_cli(*args, "exec", "--on", "all", "--json", "--", "echo alive")
    assert result.exit_code == 1
    hosts = {h["host"]: h for h in json.loads(result.output)["hosts"]}
    assert [hosts[m]["stdout"] for m in ("m1", "m2", "m3")] == ["alive\n"] * 3
    assert hosts["dead"]["error_kind"] == "unreachable"
    assert "connection refused" in hosts["dead"]["error"] and hosts["dead"]["error"].startswith("dead:")
    assert hosts["silent"]["error_kind"] == "timeout"
    assert "did not finish within 2 s" in hosts["silent"]["error"]

    check = fleet_cli(*args, "check", "--no-slurm", "--json", "silent", "dead", "m1")
    assert check.exit_code == 1
    report = {h["host"]: h for h in json.loads(check.output)["hosts"]}
    assert report["silent"]["probes"]["ssh"]["value"] == "timeout"
    assert report["dead"]["probes"]["ssh"]["value"] == "unreachable"
    assert report["m1"]["probes"]["ssh"]["health"] == "ok"


def test_unknown_host_key_is_refused_until_accepted(
    tmp_path: Path, inventory: Path, sshd_fleet: SshFleet
) -> None:
    known_hosts = tmp_path / "empty_known_hosts"
    refused = fleet_cli(*base_args(inventory, known_hosts), "exec", "--on", "m1", "--json", "--", "true")
    assert refused.exit_code == 1
    (outcome,) = json.loads(refused.output)["hosts"]
    assert outcome["error_kind"] == "unknown-host-key"
    assert "SHA256:" in outcome["error"] and "--accept-new" in outcome["error"]
    assert not known_hosts.exists()

    accepted = fleet_cli(
        *base_args(inventory, known_hosts, "--accept-new"), "exec", "--on", "all", "--", "true"
    )
    assert accepted.exit_code == 0, accepted.output
    recorded = set(known_hosts.read_text().splitlines())
    assert recorded == set(sshd_fleet.known_hosts_text().splitlines())
    assert known_hosts.stat().st_mode & 0o777 == 0o600

    again = fleet_cli(*base_args(inventory, known_hosts), "exec", "--on", "all", "--", "true")
    assert again.exit_code == 0, again.output


def test_changed_host_key_is_refused_even_with_accept_new(
    tmp_path: Path, inventory: Path, sshd_fleet: SshFleet
) -> None:
    m1, m2 = sshd_fleet.servers[:2]
    wrong = m2.host_key_line.replace(f"[{m2.address}]:{m2.port}", f"[{m1.address}]:{m1.port}")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(wrong + "\n")
    result = fleet_cli(
        *base_args(inventory, known_hosts, "--accept-new"), "exec", "--on", "m1", "--json", "--", "true"
    )
    (outcome,) = json.loads(result.output)["hosts"]
    assert outcome["error_kind"] == "host-key-mismatch"
    assert "host key of 127.0.1.11" in outcome["error"] and "ssh-keygen -R" in outcome["error"]
    assert known_hosts.read_text() == wrong + "\n"


def test_wrong_user_key_is_refused_with_a_clear_message(
    tmp_path: Path, inventory: Path, known_hosts: Path
) -> None:
    other = keygen(tmp_path / "not_authorized")
    result = fleet_cli(
        *base_args(inventory, known_hosts, "--identity", str(other)),
        "exec",
        "--on",
        "m3",
        "--json",
        "--",
        "true",
    )
    (outcome,) = json.loads(result.output)["hosts"]
    assert outcome["error_kind"] == "auth-failed"
    assert "root@127.0.1.13" in outcome["error"] and "refused authentication" in outcome["error"]
    assert "authorized_keys" in outcome["error"] and "passwords are never used" in outcome["error"]


def test_command_that_never_returns_times_out_and_is_killed(inventory: Path, known_hosts: Path) -> None:
    marker = "sleep 987654"
    result = fleet_cli(
        *base_args(inventory, known_hosts),
        "exec",
        "--on",
        "m2",
        "--timeout",
        "1.5",
        "--json",
        "--",
        f"echo started; {marker}",
    )
    assert result.exit_code == 1
    (outcome,) = json.loads(result.output)["hosts"]
    assert outcome["error_kind"] == "command-timeout"
    assert "did not finish within 1.5 s; it was killed" in outcome["error"]
    assert outcome["stdout"] == "started\n"
    # The remote machine is this one: the command's process group must be gone.
    deadline = time.monotonic() + 10
    while (
        run(["pgrep", "-f", marker], timeout=10, check=False).returncode == 0 and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert run(["pgrep", "-f", marker], timeout=10, check=False).returncode == 1


def local_running(name: str) -> bool:
    return run(["pgrep", "-x", name], timeout=10, check=False).returncode == 0


def test_check_reports_what_is_really_running(inventory: Path, known_hosts: Path) -> None:
    result = fleet_cli(*base_args(inventory, known_hosts), "check", "--no-slurm", "--json")
    report = json.loads(result.output)
    hosts = {h["host"]: h for h in report["hosts"]}
    assert set(hosts) == {"m1", "m2", "m3"}
    assert set(hosts["m1"]["probes"]) == {"ssh", "munged", "slurmctld", "disk", "clock", "load"}
    assert {"slurmd", "node_agent", "slurm", "gpus"} <= set(hosts["m2"]["probes"])
    for probe, process in (("munged", "munged"), ("slurmctld", "slurmctld")):
        expected = "ok" if local_running(process) else "fail"
        assert hosts["m1"]["probes"][probe]["health"] == expected
    expected_slurmd = "ok" if local_running("slurmd") else "fail"
    assert hosts["m3"]["probes"]["slurmd"]["health"] == expected_slurmd
    assert hosts["m2"]["probes"]["slurm"]["health"] == "skip"
    assert abs(hosts["m2"]["probes"]["clock"]["value"]) < 5  # the same clock on both ends
    assert 0 < hosts["m2"]["probes"]["disk"]["value"] <= 100
    any_fail = any(h["health"] == "fail" for h in hosts.values())
    assert report["healthy"] is (not any_fail)
    assert result.exit_code == (1 if any_fail else 0)

    table = fleet_cli(*base_args(inventory, known_hosts), "check", "--no-slurm")
    header = table.output.splitlines()[0].split()
    assert header[:3] == ["HOST", "HEALTH", "SSH"] and "MUNGED" in header and "CLOCK" in header


@pytest.fixture
def munged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real munged, started when none runs (the check of a login host wants one)."""
    if local_running("munged"):
        yield
        return
    root = tmp_path_factory.mktemp("munge")
    key = root / "munge.key"
    run(["mungekey", "-c", "-k", str(key)], timeout=30)
    pid_file = root / "munged.pid"
    run(
        [
            "munged",
            "--force",
            f"--key-file={key}",
            f"--socket={root / 'munge.socket'}",
            f"--pid-file={pid_file}",
            f"--log-file={root / 'munged.log'}",
            f"--seed-file={root / 'munged.seed'}",
        ],
        timeout=30,
    )
    try:
        yield
    finally:
        if pid_file.exists():
            run(["kill", pid_file.read_text().strip()], timeout=10, check=False)


def test_healthy_host_exits_zero(
    tmp_path: Path, sshd_fleet: SshFleet, known_hosts: Path, munged: None
) -> None:
    inventory = write_inventory(
        tmp_path / "hosts.yml", sshd_fleet, groups={"controller": ["m1"], "compute": ["m2"], "login": ["m3"]}
    )
    result = fleet_cli(*base_args(inventory, known_hosts), "check", "--no-slurm", "login")
    assert result.exit_code == 0, result.output
    row = result.output.splitlines()[1].split()
    assert row[0] == "m3" and row[1] in {"ok", "warn"} and row[2] == "up" and row[3] == "up"


def test_logs_tail_the_agent_and_slurmd_logs(tmp_path: Path, sshd_fleet: SshFleet, known_hosts: Path) -> None:
    agent_log = tmp_path / "agent log.txt"
    agent_log.write_text("".join(f"agent line {i}\n" for i in range(100)))
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        sshd_fleet,
        host_vars={"m2": {"node_agent_log": str(agent_log), "slurmd_log": str(tmp_path / "missing-%n.log")}},
    )
    result = fleet_cli(*base_args(inventory, known_hosts), "logs", "m2", "-n", "3")
    assert result.exit_code == 0, result.output
    assert f"==> {agent_log} <==\nagent line 97\nagent line 98\nagent line 99\n" in result.output
    assert f"{tmp_path}/missing-m2.log: not found" in result.output
    group = fleet_cli(*base_args(inventory, known_hosts), "logs", "compute")
    assert isinstance(group.exception, UsageError) and "name one host" in str(group.exception)


def test_unknown_host_in_a_command_is_a_usage_error(inventory: Path, known_hosts: Path) -> None:
    result = run(
        [
            str(Path(sys.executable).parent / "hpcplat"),
            "fleet",
            *base_args(inventory, known_hosts),
            "exec",
            "--on",
            "m9",
            "--",
            "true",
        ],
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown host or group 'm9' in inventory")
    assert "hosts: m1, m2, m3" in result.stderr
