"""Checkpoint files on disk: one directory per step, one shard and one marker per rank.

::

    <dir>/step-000000000120/rank-00000.pt          the data (written to a temp file, fsynced, renamed)
    <dir>/step-000000000120/rank-00000.done.json   the marker: written last, atomically

A step is complete when every rank ``0..world_size-1`` has its marker. Here: the names, the atomic
writes, the scan, the latest complete step, pruning, and the ownership check before loading.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import pickle
import re
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hpcplat.errors import HpcplatError, UsageError
from hpcplat.files import atomic_file, fsync_dir

log = logging.getLogger("hpcplat.checkpoint")

ENV_DIR = "HPCPLAT_CHECKPOINT_DIR"
DEFAULT_KEEP = 3

_STEP_DIR = re.compile(r"^step-(\d{12})$")
_MARKER = re.compile(r"^rank-(\d{5})\.done\.json$")


class Format(enum.Enum):
    """How a shard is stored."""

    TORCH = "torch"
    PICKLE = "pickle"
    JSON = "json"
    DIR = "dir"
    """A directory of files written by a plain command job."""

    @property
    def suffix(self) -> str:
        return {"torch": ".pt", "pickle": ".pkl", "json": ".json", "dir": ""}[self.value]


def fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def step_dir_name(step: int) -> str:
    return f"step-{step:012d}"


def shard_name(rank: int, fmt: Format) -> str:
    return f"rank-{rank:05d}{fmt.suffix}"


def marker_name(rank: int) -> str:
    return f"rank-{rank:05d}.done.json"


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint step as seen by one rank."""

    step: int
    path: Path
    """The step directory."""
    rank: int
    world_size: int
    """How many ranks wrote this step."""
    format: Format
    shard: Path
    """This rank's file (or directory, for :attr:`Format.DIR`)."""
    saved_at: str = ""

    def load(self, *, map_location: Any = None) -> Any:
        """This rank's state. Torch shards are loaded with ``weights_only=False``: they are the job's
        own files (optimizer state and RNG states are not plain tensors): so a shard, its marker
        and its step directory must belong to the user running the job and be writable by nobody
        else (:func:`check_owned`), or nothing is loaded."""
        check_owned(self.path, self.path / marker_name(self.rank), self.shard)
        if self.format is Format.TORCH:
            import torch

            return torch.load(self.shard, map_location=map_location, weights_only=False)
        if self.format is Format.PICKLE:
            with self.shard.open("rb") as handle:
                return pickle.load(handle)  # noqa: S301 - the job's own checkpoint
        if self.format is Format.JSON:
            return json.loads(self.shard.read_text())
        return self.shard


def check_owned(*paths: Path) -> None:
    """Refuse checkpoint files another user owns or could have written.

    Loading a pickle or a ``torch.load(weights_only=False)`` shard runs code: a shard planted by
    another user of a shared directory would run as the victim. Each path must be owned by this
    process's user (or root, who can write anything anyway), not a link, and not world-writable.
    """
    uid = os.geteuid()
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if st.st_uid not in (uid, 0) or st.st_mode & 0o002 or stat.S_ISLNK(st.st_mode):
            raise HpcplatError(
                f"refusing to load checkpoint {path}: owned by uid {st.st_uid} with mode "
                f"{stat.S_IMODE(st.st_mode):o}; only this user's own files (uid {uid}, not world-writable, "
                "not a link) are loaded",
                hint="someone else may have planted it: move it away, and keep checkpoints in a private "
                "directory (hpcplat's default, <job_root>/<user>/<job id>/checkpoints, is)",
            )


@dataclass(frozen=True)
class StepStatus:
    step: int
    path: Path
    world_size: int | None
    """From the markers; None when no rank finished."""
    ranks_done: tuple[int, ...]

    @property
    def complete(self) -> bool:
        return self.world_size is not None and self.ranks_done == tuple(range(self.world_size))


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None  # pruned by its rank while we looked
    except (OSError, ValueError):
        log.warning("ignoring unreadable checkpoint marker %s", path)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("world_size"), int):
        log.warning("ignoring malformed checkpoint marker %s", path)
        return None
    return data


def _entries(directory: Path) -> list[Path]:
    """The entries of ``directory``; empty when another rank just removed it."""
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def scan(directory: Path) -> list[StepStatus]:
    """Every step directory under ``directory``, oldest first, with which ranks finished it.

    Other ranks save and prune at the same time: files and directories that vanish while we look
    are simply not there."""
    steps: list[StepStatus] = []
    for entry in _entries(directory):
        match = _STEP_DIR.match(entry.name)
        if match is None:
            continue
        ranks: list[int] = []
        sizes: set[int] = set()
        for item in _entries(entry):
            marker = _MARKER.match(item.name)
            if marker is None:
                continue
            data = _read_marker(item)
            if data is None:
                continue
            ranks.append(int(marker.group(1)))
            sizes.add(int(data["world_size"]))
        # Markers that disagree about the world size never make a step complete.
        world = next(iter(sizes)) if len(sizes) == 1 else None
        steps.append(StepStatus(int(match.group(1)), entry, world, tuple(sorted(ranks))))
    steps.sort(key=lambda s: s.step)
    return steps


def resolve_dir(directory: str | os.PathLike[str] | None) -> Path:
    if directory is not None:
        return Path(directory)
    value = os.environ.get(ENV_DIR, "").strip()
    if not value:
        raise UsageError(
            f"no checkpoint directory: ${ENV_DIR} is not set",
            hint=f"pass dir=... (or --dir), or export {ENV_DIR}; hpcplat job scripts export it",
        )
    return Path(value)


def write_marker(
    step_dir: Path, *, step: int, rank: int, world_size: int, fmt: Format, shard: Path
) -> Checkpoint:
    """Write ``rank``'s completion marker for ``step`` (after its data is durable)."""
    saved_at = datetime.now(UTC).isoformat(timespec="seconds")
    size = (
        shard.stat().st_size
        if shard.is_file()
        else sum(p.stat().st_size for p in shard.rglob("*") if p.is_file())
    )
    body = {
        "step": step,
        "rank": rank,
        "world_size": world_size,
        "format": fmt.value,
        "shard": shard.name,
        "bytes": size,
        "saved_at": saved_at,
        "job_id": os.environ.get("SLURM_JOB_ID", ""),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
    }
    with atomic_file(step_dir / marker_name(rank)) as handle:
        handle.write(json.dumps(body, sort_keys=True).encode())
    return Checkpoint(step, step_dir, rank, world_size, fmt, shard, saved_at)


def latest(directory: Path, *, rank: int = 0, world_size: int | None = None) -> Checkpoint | None:
    """The newest step of ``directory`` complete for all ranks, seen by ``rank``."""
    for status in reversed(scan(directory)):
        if not status.complete or status.world_size is None:
            continue
        if world_size is not None and status.world_size != world_size:
            raise HpcplatError(
                f"the latest complete checkpoint (step {status.step} in {status.path}) was written by "
                f"{status.world_size} rank(s), this job has {world_size}",
                hint="resume with the same number of tasks, or start from a fresh checkpoint directory",
            )
        data = _read_marker(status.path / marker_name(rank))
        if data is None:
            continue
        fmt = Format(str(data.get("format", "pickle")))
        shard = status.path / str(data.get("shard", shard_name(rank, fmt)))
        return Checkpoint(
            status.step, status.path, rank, status.world_size, fmt, shard, str(data.get("saved_at", ""))
        )
    return None


def prune(directory: Path, *, rank: int, keep: int) -> None:
    """Remove ``rank``'s files in steps older than the ``keep`` newest complete steps."""
    steps = scan(directory)
    complete = [s.step for s in steps if s.complete]
    if len(complete) < keep:
        return
    oldest_kept = complete[-keep]
    for status in steps:
        if status.step >= oldest_kept:
            break
        prefix = f"rank-{rank:05d}"
        # Marker first: once it is gone the step no longer counts, whatever is left of the data.
        (status.path / marker_name(rank)).unlink(missing_ok=True)
        for item in _entries(status.path):
            if item.name.startswith(prefix) or item.name.startswith(f".{prefix}"):
                remove(item)
        with contextlib.suppress(OSError):  # not empty yet: other ranks' files
            status.path.rmdir()
