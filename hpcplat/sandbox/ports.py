"""Which TCP ports are listened on, and by which process (from /proc/net/tcp and /proc/*/fd)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hpcplat.sandbox.processes import PROC, all_pids, inspect

_LISTEN = "0A"


@dataclass(frozen=True)
class PortHolder:
    port: int
    pid: int | None
    command_line: str

    def describe(self) -> str:
        if self.pid is None:
            return "an unknown process (its socket is not visible in /proc/*/fd)"
        return f"pid {self.pid} ({self.command_line})"


def listening_sockets() -> dict[int, set[int]]:
    """Listening TCP port -> socket inodes, over IPv4 and IPv6."""
    found: dict[int, set[int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            port = int(fields[1].rpartition(":")[2], 16)
            found.setdefault(port, set()).add(int(fields[9]))
    return found


def socket_owner(inodes: set[int]) -> int | None:
    """The pid of a process holding one of the sockets ``inodes``."""
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in all_pids():
        fd_dir = PROC / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) in targets:
                    return pid
            except OSError:
                continue
    return None


def holders(ports: list[int]) -> list[PortHolder]:
    """The ports among ``ports`` that something listens on, with that process."""
    listening = listening_sockets()
    result = []
    for port in ports:
        if port not in listening:
            continue
        pid = socket_owner(listening[port])
        info = inspect(pid) if pid is not None else None
        result.append(PortHolder(port, pid, info.command_line if info else ""))
    return result


def is_listening(port: int) -> bool:
    return port in listening_sockets()
