"""Start, find and stop the sandbox's daemons, by their pid files.

Each daemon forks itself into the background and writes its own pid file. A pid from a pid file
counts as "ours" only when /proc shows the same program with the same arguments and the sandbox's
state directory in its arguments or environment, so a recycled pid is never signalled.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpcplat.errors import SandboxError
from hpcplat.runner import run
from hpcplat.sandbox.processes import ProcessInfo, inspect, is_alive, read_pid_file

log = logging.getLogger(__name__)

LAUNCH_TIMEOUT_S = 30.0
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 15.0
KILL_DEADLINE_S = 5.0
POLL_S = 0.05
LOG_TAIL_LINES = 25


class Ownership(enum.Enum):
    """What the pid file of a daemon points at."""

    NONE = "none"  # no pid file, or its process is gone (stale)
    OURS = "ours"  # our daemon, running
    FOREIGN = "foreign"  # the same program, running for another state directory
    RECYCLED = "recycled"  # the pid now belongs to an unrelated program


@dataclass(frozen=True)
class Daemon:
    name: str  # "munged", "mariadb", "slurmdbd", "slurmctld", "slurmd-n1"
    program: str  # basename of the executable as /proc shows it
    argv: tuple[str, ...]
    pid_file: Path
    log_file: Path
    marker: str  # the state directory: in the arguments or the environment of our process
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    launcher: tuple[str, ...] = ()  # e.g. ("setsid", "--fork") for a daemon that stays in front

    def classify(self, info: ProcessInfo | None) -> Ownership:
        if info is None:
            return Ownership.NONE
        if not _same_program(info.program, self.program):
            return Ownership.RECYCLED
        mine = info.argv[1:] == self.argv[1:] and (
            self.marker in info.command_line or any(self.marker in v for v in info.environ.values())
        )
        return Ownership.OURS if mine else Ownership.FOREIGN

    def ownership(self) -> tuple[Ownership, int | None]:
        pid = read_pid_file(self.pid_file)
        if pid is None:
            return Ownership.NONE, None
        return self.classify(inspect(pid)), pid

    def running_pid(self) -> int | None:
        """The pid of our running daemon, or None."""
        owned, pid = self.ownership()
        return pid if owned is Ownership.OURS else None


_PYTHON = re.compile(r"python[0-9.]*\Z")


def _same_program(seen: str, expected: str) -> bool:
    """The same program; any Python interpreter counts as the same one (the server runs as
    ``python3 -m hpcplat server``, started by whichever of ``python``, ``python3`` or
    ``python3.11`` brought the sandbox up; its arguments and marker still have to match)."""
    return seen == expected or bool(_PYTHON.match(seen) and _PYTHON.match(expected))


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def failure(daemon: Daemon, what: str) -> SandboxError:
    """A SandboxError for ``daemon`` with the tail of its log and the log's path."""
    return SandboxError(
        f"{daemon.name} {what}\n--- last lines of {daemon.log_file} ---\n{log_tail(daemon.log_file)}",
        hint=f"read {daemon.log_file}; `hpcplat sandbox down` stops what is left",
    )


def wait_until(
    check: Callable[[], bool], *, deadline_s: float, on_timeout: Callable[[], SandboxError]
) -> None:
    """Poll ``check`` until true; raise ``on_timeout()`` after ``deadline_s`` seconds."""
    deadline = time.monotonic() + deadline_s
    delay = POLL_S
    while not check():
        if time.monotonic() > deadline:
            raise on_timeout()
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def start(daemon: Daemon, *, ready: Callable[[], bool], deadline_s: float = START_DEADLINE_S) -> int:
    """Launch ``daemon`` and wait until its pid file names it and ``ready()`` holds."""
    owned, _ = daemon.ownership()
    if owned is Ownership.OURS:
        raise SandboxError(f"{daemon.name} is already running (pid file {daemon.pid_file})")
    daemon.pid_file.unlink(missing_ok=True)
    log.info("starting %s: %s", daemon.name, " ".join(daemon.argv))
    result = run([*daemon.launcher, *daemon.argv], timeout=LAUNCH_TIMEOUT_S, env=daemon.env, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise failure(daemon, f"failed to start (exit code {result.returncode}): {detail}")

    def started() -> bool:
        owned, _ = daemon.ownership()
        return owned is Ownership.OURS

    wait_until(
        started,
        deadline_s=deadline_s,
        on_timeout=lambda: failure(
            daemon, f"did not write its pid file {daemon.pid_file} in {deadline_s:g} s"
        ),
    )
    pid = daemon.running_pid()
    assert pid is not None

    def up() -> bool:
        if not is_alive(pid):
            raise failure(daemon, "exited during start-up")
        return ready()

    wait_until(
        up,
        deadline_s=deadline_s,
        on_timeout=lambda: failure(daemon, f"did not become ready in {deadline_s:g} s"),
    )
    return pid


def stop(daemons: Sequence[Daemon], *, extra_pids: Sequence[int] = ()) -> list[int]:
    """SIGTERM our running ``daemons`` (and ``extra_pids``), SIGKILL after a deadline.

    Returns the pids that were signalled; all of them are gone when this returns. Pid files are
    removed. Raises SandboxError if a process survives SIGKILL.
    """
    pids: list[int] = list(extra_pids)
    for daemon in daemons:
        pid = daemon.running_pid()
        if pid is not None:
            pids.append(pid)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    survivors = _wait_gone(pids, STOP_DEADLINE_S)
    if survivors:
        log.warning("SIGKILL to %s (no exit %g s after SIGTERM)", survivors, STOP_DEADLINE_S)
        for pid in survivors:
            _signal(pid, signal.SIGKILL)
        survivors = _wait_gone(survivors, KILL_DEADLINE_S)
    if survivors:
        raise SandboxError(f"processes {survivors} survived SIGKILL", hint="look at them with `ps -fp`")
    for daemon in daemons:
        if daemon.running_pid() is None:
            daemon.pid_file.unlink(missing_ok=True)
    return pids


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        log.debug("pid %d already gone", pid)


def _wait_gone(pids: Sequence[int], deadline_s: float) -> list[int]:
    deadline = time.monotonic() + deadline_s
    left = [pid for pid in pids if is_alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(POLL_S)
        left = [pid for pid in left if is_alive(pid)]
    return left
