"""What a sandbox is doing: each daemon (pid, alive) and each node's Slurm state."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcplat.slurm.state import NodeState, NodeStatus, parse_node_state


@dataclass(frozen=True)
class DaemonStatus:
    name: str
    pid: int | None
    alive: bool
    port: int | None
    log_file: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "alive": self.alive,
            "port": self.port,
            "log_file": str(self.log_file),
        }


@dataclass(frozen=True)
class NodeReport:
    """A node of the sandbox and its state as ``sinfo`` prints it (``idle``, ``mixed*``...)."""

    name: str
    addr: str
    port: int
    state: str  # sinfo's text; "unknown" when slurmctld did not answer

    @property
    def parsed(self) -> NodeStatus:
        return parse_node_state(self.state)

    @property
    def usable(self) -> bool:
        """Takes new jobs: registered, responding, not drained."""
        status = self.parsed
        return status.state.usable and not status.not_responding and not status.drained_or_draining

    @property
    def responding(self) -> bool:
        """Its slurmd registered and answers; it may still be drained on purpose."""
        status = self.parsed
        return (status.state.usable or status.drained_or_draining) and not status.not_responding

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "addr": self.addr, "port": self.port, "state": self.state}


@dataclass(frozen=True)
class SandboxStatus:
    name: str
    state_dir: Path
    daemons: list[DaemonStatus] = field(default_factory=list)
    nodes: list[NodeReport] = field(default_factory=list)
    took_s: float = 0.0
    started: bool = False  # True when this `up` started daemons, False when all were running

    @property
    def running(self) -> bool:
        """Every daemon alive and every node responding (a drained node counts: it is up)."""
        return all(d.alive for d in self.daemons) and all(n.responding for n in self.nodes)

    @property
    def stopped(self) -> bool:
        return not any(d.alive for d in self.daemons)

    def node_states(self) -> dict[str, NodeState]:
        return {n.name: n.parsed.state for n in self.nodes}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state_dir": str(self.state_dir),
            "running": self.running,
            "daemons": [d.to_dict() for d in self.daemons],
            "nodes": [n.to_dict() for n in self.nodes],
        }
