"""A local spool of JSON lines: what the agent has to send to the catalog, kept while it cannot.

The sampling loop only appends lines to ``current.jsonl`` (no database, no network). At each flush
the file is renamed (``os.replace``, atomic) to ``ready-<time>.jsonl``; the reporter subprocess
sends ready files and deletes each one it sent. When the catalog is down the ready files stay and
are sent later; past ``max_bytes`` the oldest are dropped with one warning each.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CURRENT = "current.jsonl"
READY_GLOB = "ready-*.jsonl"


class Spool:
    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._broken = False

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def append(self, record_type: str, record: dict[str, Any]) -> None:
        line = json.dumps({"type": record_type, **record}, default=str) + "\n"
        with self._lock:
            try:
                with open(self.dir / CURRENT, "a", encoding="utf-8") as handle:
                    handle.write(line)
                self._broken = False
            except OSError as exc:
                if not self._broken:
                    log.error(
                        "cannot write the spool %s (%s): events and usage are only logged", self.dir, exc
                    )
                self._broken = True

    def rotate(self) -> Path | None:
        """Move what was spooled so far to a ready file; returns it (``None`` when empty)."""
        with self._lock:
            current = self.dir / CURRENT
            try:
                if current.stat().st_size == 0:
                    return None
            except FileNotFoundError:
                return None
            target = self.dir / f"ready-{time.time_ns()}.jsonl"
            os.replace(current, target)
        self._trim()
        return target

    def ready(self) -> list[Path]:
        return sorted(self.dir.glob(READY_GLOB))

    def _trim(self) -> None:
        files = self.ready()
        total = sum(f.stat().st_size for f in files)
        while files and total > self.max_bytes:
            oldest = files.pop(0)
            size = oldest.stat().st_size
            log.warning(
                "spool over %d bytes: dropping %s (catalog unreachable for long?)", self.max_bytes, oldest
            )
            oldest.unlink(missing_ok=True)
            total -= size


def read_records(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: not JSON, skipped", path, number)
            continue
        if isinstance(value, dict):
            records.append(value)
    return records
