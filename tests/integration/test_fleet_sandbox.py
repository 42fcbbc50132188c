"""`hpcplat fleet drain/resume/check` against the real Slurm sandbox (nodes n1..n4).

The sshd "machines" of tests/fixtures/sshd.py stand for the hosts; their inventory entries name the
sandbox's Slurm nodes (``slurm_node_name``), so SSH probes and Slurm's view meet as on a real site.
Whatever is drained is resumed, even when the test fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from tests.fixtures.sshd import SshFleet
from tests.integration.test_fleet_ssh import base_args, fleet_cli, write_inventory

pytestmark = [pytest.mark.sandbox, pytest.mark.sshd, pytest.mark.timeout(180)]

NODE = "n4"
REASON = "hpcplat fleet test: disk replaced"


def test_drain_then_resume_through_slurm(tmp_path: Path, sandbox: Sandbox, sshd_fleet: SshFleet) -> None:
    env = sandbox.env()
    client = CliBackend(env=env)
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        sshd_fleet,
        host_vars={"m2": {"slurm_node_name": "n3"}, "m3": {"slurm_node_name": NODE}},
    )
    known_hosts = sshd_fleet.write_known_hosts(tmp_path / "known_hosts")
    args = base_args(inventory, known_hosts)
    before = {n.name: n for n in client.nodes()}[NODE]
    if before.status.drained_or_draining:
        pytest.skip(f"{NODE} is already drained by someone else ({before.reason})")
    try:
        drained = fleet_cli(*args, "drain", "m3", "--reason", REASON, "--json", env=env)
        assert drained.exit_code == 0, drained.output
        (change,) = json.loads(drained.output)
        assert (change["host"], change["node"]) == ("m3", NODE)
        assert change["reason"].startswith(REASON)  # Slurm adds "[user@time]"
        assert "drain" in change["state"]
        node = {n.name: n for n in client.nodes()}[NODE]
        assert node.status.drained_or_draining and node.reason.startswith(REASON)

        check = fleet_cli(*args, "check", "--json", "m2", "m3", env=env)
        hosts = {h["host"]: h for h in json.loads(check.output)["hosts"]}
        assert hosts["m3"]["probes"]["slurm"]["health"] == "warn"
        assert REASON in hosts["m3"]["probes"]["slurm"]["detail"]
        assert hosts["m2"]["probes"]["slurm"]["health"] in {"ok", "warn"}  # n3 as Slurm sees it
    finally:
        resumed = fleet_cli(*args, "resume", "m3", "--json", env=env)
    assert resumed.exit_code == 0, resumed.output
    node = {n.name: n for n in client.nodes()}[NODE]
    assert not node.status.drained_or_draining


def test_drain_refuses_hosts_slurm_does_not_schedule_and_needs_a_reason(
    tmp_path: Path, sandbox: Sandbox, sshd_fleet: SshFleet
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yml", sshd_fleet)
    args = base_args(inventory, tmp_path / "known_hosts")
    controller = fleet_cli(*args, "drain", "m1", "--reason", "x", env=sandbox.env())
    assert "not in the compute group" in str(controller.exception)
    blank = fleet_cli(*args, "drain", "m2", "--reason", "  ", env=sandbox.env())
    assert "needs a one-line reason" in str(blank.exception)
