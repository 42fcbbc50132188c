"""Atomic file writes: the one way hpcplat replaces a file's content.

A reader sees the old file or the new one, never a part of either, and after a crash (power loss
included) the file is one of the two: the data goes to a temp file in the same directory, which is
flushed and fsynced, renamed over the target, and then the directory is fsynced so the rename
itself is on disk. On any error the temp file is removed and the target is left as it was.

The file gets exactly ``mode`` (the umask does not apply); by default 0600, private to its owner
(:mod:`hpcplat.private`). Callers that publish a file pass its mode (``0o644``), or keep an
existing file's mode with ``mode=path.stat().st_mode & 0o777``. Temp files are named
``.<name>.<random>.tmp``, so a glob for ``*.json`` or ``ready-*.jsonl`` never sees one.

Pure standard library: in-job code (checkpoints on a compute node) imports it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from hpcplat.private import FILE_MODE


def fsync_dir(path: Path) -> None:
    """Make a rename or a new name in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int = FILE_MODE) -> Iterator[IO[bytes]]:
    """A binary handle whose content replaces ``path`` when the block ends without an exception.

    The temp file is created in ``path``'s directory (which must exist) with ``mode``; when the
    block raises, the temp file is removed, ``path`` is untouched and the exception propagates.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode != FILE_MODE:  # mkstemp already created it 0600
                os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str, *, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` (``str`` is written as UTF-8) atomically and durably."""
    with atomic_file(path, mode=mode) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
