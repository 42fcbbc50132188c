"""Emulated GPUs: one character device per GPU (``mknod c 1 3``, the numbers of /dev/null).

slurmd accepts a GPU only with a ``File=`` that is a character or block device.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEVICE = os.makedev(1, 3)


def make_devices(paths: list[Path]) -> None:
    for path in paths:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            os.mknod(path, 0o666 | stat.S_IFCHR, DEVICE)
            continue
        if not stat.S_ISCHR(mode):
            path.unlink()
            os.mknod(path, 0o666 | stat.S_IFCHR, DEVICE)
