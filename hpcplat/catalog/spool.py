"""The tracking spool: JSON lines in ``$HPCPLAT_JOB_DIR/spool/`` written when the database cannot be
reached from a compute node, ingested later by ``hpcplat reconcile`` (pure stdlib).

Each line is one flushed batch: ``{"t": "m", "r": run, "a": attempt, "pts": [[step, name, value,
time], ...]}`` for metrics (a value may be ``NaN``, ``Infinity`` or ``-Infinity``, as Python's
``json`` writes them), ``{"t": "p", ...}`` for params, ``{"t": "a", ...}`` for artifacts.
A line is written with one ``write`` and ``fsync``'d; a torn last line (the job died mid-write)
is not ingested, and the ingested byte offset is kept in ``<file>.offset``. Files are created
mode 0600 and directories 0700 (:mod:`hpcplat.private`): metrics are their owner's business.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from hpcplat.files import atomic_write
from hpcplat.private import FILE_MODE, make_private_dir

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"
SUFFIX = ".jsonl"


def spool_path(job_dir: str | os.PathLike[str], run_id: str) -> Path:
    """This process's spool file (one per process: no two writers share a file)."""
    host = socket.gethostname().split(".")[0]
    return Path(job_dir) / SPOOL_DIR / f"{run_id}-{host}-{os.getpid()}{SUFFIX}"


def append(path: Path, records: list[dict[str, Any]]) -> None:
    """Append records, one line each, and fsync before returning."""
    if not records:
        return
    make_private_dir(path.parent)
    # NaN and infinities are metric values like any other: Python's json writes and reads them back
    data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete records after byte ``offset``, and the offset just past the last one."""
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    records: list[dict[str, Any]] = []
    for number, line in enumerate(data[: end + 1].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: skipping a damaged spool line (%d after offset %d)", path, number, offset)
    return records, offset + end + 1


def offset_path(path: Path) -> Path:
    return path.with_name(path.name + ".offset")


def read_offset(path: Path) -> int:
    try:
        return int(offset_path(path).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def write_offset(path: Path, offset: int) -> None:
    atomic_write(offset_path(path), str(offset), mode=FILE_MODE)
