"""One sandbox command at a time per state directory (an flock on ``<state_dir>/lock``).

Several people's test sessions may run ``up`` at the same moment; the second one waits for the
first and then finds the sandbox running.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpcplat.errors import SandboxError

LOCK_DEADLINE_S = 180.0


@contextmanager
def held(path: Path, *, deadline_s: float = LOCK_DEADLINE_S) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = path.read_text().strip() or "unknown"
                    raise SandboxError(
                        f"another sandbox command (pid {holder}) has held {path} for over {deadline_s:g} s",
                        hint="wait for it to finish, or check that process with `ps -fp PID`",
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock
