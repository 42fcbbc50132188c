"""Files and directories private to their owner: what hpcplat creates on a machine other users share.

The catalog database, tracking spools and reconciliation records hold run names, params, metrics
and paths; a co-tenant on a login or compute node must not read them. Modes are set at creation
only (an existing file or directory keeps the mode its owner gave it). Pure stdlib.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700; existing directories are left alone."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)


def touch_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (then it is left alone)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
