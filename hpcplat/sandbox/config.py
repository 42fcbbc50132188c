"""What a sandbox cluster looks like: its name, size, addresses and ports.

A :class:`SandboxConfig` is plain data, validated once (:meth:`SandboxConfig.validate`) before
anything is started. Every port is derived from ``port_base`` so two sandboxes on one machine
only need different bases:

    slurmctld = base, slurmdbd = base + 1, MariaDB = base + 2, hpcplat server = base + 3,
    slurmd of node i = base + 10 + i
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpcplat.errors import UsageError

DEFAULT_NAME = "hpcsb"
DEFAULT_PORT_BASE = 17000
MAX_NODES = 64
# A Unix socket path is at most 107 bytes; slurmd puts "<node>_<job>.<step>" sockets in its
# spool directory and munged its socket under the state dir.
MAX_STATE_DIR_LEN = 60
# Paths land unquoted in slurm.conf and on daemon command lines.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")


def default_state_dir() -> Path:
    """``$HPCPLAT_SANDBOX_DIR``, else ``~/.local/state/hpcplat/sandbox``."""
    configured = os.environ.get("HPCPLAT_SANDBOX_DIR")
    if configured:
        return Path(configured).expanduser().absolute()
    return Path.home() / ".local" / "state" / "hpcplat" / "sandbox"


@dataclass(frozen=True)
class SandboxConfig:
    name: str = DEFAULT_NAME
    state_dir: Path = field(default_factory=default_state_dir)
    nodes: int = 4
    gpus_per_node: int = 4
    node_prefix: str = "n"
    loopback_net: int = 1
    port_base: int = DEFAULT_PORT_BASE
    cpus_per_node: int = 4
    memory_mb: int = 4000

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).expanduser().absolute())

    # -- validation -------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the first bad field, what is allowed and what to do."""
        if not self.name.isidentifier() or not self.name.isascii() or not self.name.islower():
            raise UsageError(
                f"sandbox name {self.name!r} is not allowed",
                hint="use lower-case letters, digits and '_' (Slurm cluster names), e.g. 'hpcsb'",
            )
        if not 1 <= self.nodes <= MAX_NODES:
            raise UsageError(
                f"--nodes must be between 1 and {MAX_NODES}, got {self.nodes}",
                hint="a sandbox needs at least one node, e.g. --nodes 4",
            )
        if not 0 <= self.gpus_per_node <= 16:
            raise UsageError(
                f"--gpus-per-node must be between 0 and 16, got {self.gpus_per_node}",
                hint="the default is 4 emulated GPUs per node",
            )
        if not (self.node_prefix.isalpha() and self.node_prefix.isascii() and self.node_prefix.islower()):
            raise UsageError(
                f"node prefix {self.node_prefix!r} is not allowed",
                hint="use lower-case letters only (nodes are named <prefix>1, <prefix>2, ...)",
            )
        if not 1 <= self.loopback_net <= 254:
            raise UsageError(
                f"loopback_net must be between 1 and 254, got {self.loopback_net}",
                hint="node i gets the address 127.0.<loopback_net>.<i>",
            )
        if not 1024 <= self.port_base <= 65535 - (10 + MAX_NODES):
            raise UsageError(
                f"--port-base must be between 1024 and {65535 - 10 - MAX_NODES}, got {self.port_base}",
                hint=f"the default is {DEFAULT_PORT_BASE}; the sandbox uses base..base+{10 + MAX_NODES}",
            )
        if self.cpus_per_node < 1 or self.memory_mb < 100:
            raise UsageError(
                f"each node needs at least 1 CPU and 100 MB, got {self.cpus_per_node} CPUs and "
                f"{self.memory_mb} MB",
            )
        if not _SAFE_PATH.match(str(self.state_dir)):
            raise UsageError(
                f"state directory {str(self.state_dir)!r} has characters Slurm's config files cannot hold",
                hint="use letters, digits and . _ + - / only (no spaces or quotes)",
            )
        if len(str(self.state_dir)) > MAX_STATE_DIR_LEN:
            raise UsageError(
                f"state directory path is too long ({len(str(self.state_dir))} characters, at most "
                f"{MAX_STATE_DIR_LEN}): {self.state_dir}",
                hint="Unix socket paths under it must stay under 108 bytes; choose a shorter "
                "HPCPLAT_SANDBOX_DIR",
            )

    # -- derived values ---------------------------------------------------------------------------

    @property
    def slurmctld_port(self) -> int:
        return self.port_base

    @property
    def slurmdbd_port(self) -> int:
        return self.port_base + 1

    @property
    def mariadb_port(self) -> int:
        return self.port_base + 2

    @property
    def server_port(self) -> int:
        """The hpcplat server's TCP port (127.0.0.1)."""
        return self.port_base + 3

    def slurmd_port(self, index: int) -> int:
        """Port of node ``index`` (1-based)."""
        return self.port_base + 10 + index

    @property
    def node_names(self) -> list[str]:
        return [f"{self.node_prefix}{i}" for i in range(1, self.nodes + 1)]

    def node_addr(self, index: int) -> str:
        return f"127.0.{self.loopback_net}.{index}"

    def node_index(self, node: str) -> int:
        """1-based index of ``node``; :class:`UsageError` for a name that is not in this sandbox."""
        if node in self.node_names:
            return self.node_names.index(node) + 1
        raise UsageError(
            f"no node {node!r} in sandbox {self.name!r}",
            hint=f"nodes are {', '.join(self.node_names)}",
        )

    def ports(self) -> dict[str, int]:
        """Every port the sandbox listens on, by the daemon that owns it."""
        ports = {
            "slurmctld": self.slurmctld_port,
            "slurmdbd": self.slurmdbd_port,
            "mariadb": self.mariadb_port,
            "server": self.server_port,
        }
        for i, node in enumerate(self.node_names, start=1):
            ports[f"slurmd-{node}"] = self.slurmd_port(i)
        return ports

    # -- persistence ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["state_dir"] = Path(str(known.get("state_dir", default_state_dir())))
        return cls(**known)
