"""What /proc says about a process: alive or not, its program, arguments and environment.

A zombie (exited, not yet reaped: PID 1 of some containers never reaps) counts as gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    argv: tuple[str, ...]
    environ: dict[str, str]

    @property
    def program(self) -> str:
        return os.path.basename(self.argv[0]) if self.argv else ""

    @property
    def command_line(self) -> str:
        return " ".join(self.argv)


def is_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    # "pid (comm) S ..." where comm may hold spaces and parentheses: the state follows the last ")".
    state = stat.rpartition(")")[2].split()[:1]
    return bool(state) and state[0] not in ("Z", "X")


def inspect(pid: int) -> ProcessInfo | None:
    """Arguments and environment of a live process; None when it is gone or a zombie."""
    if not is_alive(pid):
        return None
    base = PROC / str(pid)
    try:
        raw_argv = (base / "cmdline").read_bytes()
        raw_env = (base / "environ").read_bytes()
    except OSError:
        return None
    argv = tuple(part.decode(errors="replace") for part in raw_argv.split(b"\0") if part)
    environ: dict[str, str] = {}
    for entry in raw_env.split(b"\0"):
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            environ[key] = value
    if not argv:
        return None
    return ProcessInfo(pid=pid, argv=argv, environ=environ)


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir(PROC) if entry.isdigit()]


def read_pid_file(path: Path) -> int | None:
    """The pid in ``path``; None when the file is missing, empty or not a number."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
