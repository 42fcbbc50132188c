"""How a node's sinfo state counts for the sandbox: up (responding) and taking jobs (usable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcplat.sandbox.status import DaemonStatus, NodeReport, SandboxStatus


@pytest.mark.parametrize(
    ("state", "responding", "usable"),
    [
        ("idle", True, True),
        ("mixed", True, True),
        ("allocated", True, True),
        ("drained", True, False),  # drained on purpose (say by the node agent): still up
        ("draining", True, False),
        ("idle*", False, False),  # slurmd not answering
        ("down", False, False),
        ("unknown", False, False),
        ("inval", False, False),
    ],
)
def test_node_states(state: str, responding: bool, usable: bool) -> None:
    node = NodeReport("n1", "127.0.1.1", 17011, state)
    assert (node.responding, node.usable) == (responding, usable)


def test_running_needs_every_daemon_alive_and_every_node_responding() -> None:
    daemons = [DaemonStatus("munged", 10, True, None, Path("/l"))]
    up = SandboxStatus("hpcsb", Path("/s"), daemons, [NodeReport("n1", "a", 1, "drained")])
    assert up.running
    down_node = SandboxStatus("hpcsb", Path("/s"), daemons, [NodeReport("n1", "a", 1, "down*")])
    assert not down_node.running
    dead = SandboxStatus("hpcsb", Path("/s"), [DaemonStatus("munged", None, False, None, Path("/l"))])
    assert not dead.running and dead.stopped
    assert up.to_dict()["nodes"] == [{"name": "n1", "addr": "a", "port": 1, "state": "drained"}]
