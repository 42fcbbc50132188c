"""Reconciliation records: a job Slurm accepted that neither the catalog nor ``scancel`` could settle.

When the catalog write after ``sbatch`` fails and cancelling the job fails too, the job is running
untracked. Rather than lose it, the submission layer writes one JSON file per such job here
(:func:`write_pending`), and ``hpcplat reconcile`` (:func:`hpcplat.catalog.reconcile.attach_pending`)
attaches it to its run once the catalog is reachable, and deletes the file. The format lives in the
catalog, the layer that reads it; the submission layer above writes it.

Directory: ``$HPCPLAT_SPOOL_DIR``, else ``$XDG_STATE_HOME/hpcplat/reconcile`` (``~/.local/state/...``).
Files are written atomically (:func:`hpcplat.files.atomic_write`), mode 0600 in directories
hpcplat creates 0700; pure stdlib.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from hpcplat.files import atomic_write
from hpcplat.private import FILE_MODE, make_private_dir
from hpcplat.redact import strip_credentials


@dataclass(frozen=True)
class PendingRecord:
    run_id: str
    job_id: str
    catalog_url: str
    reason: str
    written_at: str


def spool_dir() -> Path:
    named = os.environ.get("HPCPLAT_SPOOL_DIR")
    if named:
        return Path(named)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "hpcplat" / "reconcile"


def write_pending(run_id: str, job_id: str, *, catalog_url: str, reason: str) -> Path:
    """Record a job to reconcile later; returns the file written. Raises ``OSError`` when even
    that is impossible (the caller then says so)."""
    record = PendingRecord(
        run_id=run_id,
        job_id=job_id,
        catalog_url=strip_credentials(catalog_url),  # no password at rest
        reason=reason,
        written_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    directory = spool_dir()
    make_private_dir(directory)
    target = directory / f"{run_id}.json"
    atomic_write(target, json.dumps(asdict(record), indent=1), mode=FILE_MODE)
    return target


def pending() -> list[tuple[Path, PendingRecord]]:
    """Every record waiting for reconciliation (unreadable files are skipped, not deleted)."""
    directory = spool_dir()
    out: list[tuple[Path, PendingRecord]] = []
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            out.append((path, PendingRecord(**data)))
        except (OSError, ValueError, TypeError):
            continue
    return out


def settle(path: Path) -> None:
    """The record was reconciled: remove it."""
    path.unlink(missing_ok=True)
