"""Every action the agent takes (or, in dry-run, would take) becomes an event with its reason.

An event goes to four places: the agent's log; the spool, from which the reporter sends it to the
catalog (``Catalog.add_event``); and, so the job's owner sees it, one line appended to the job's
stdout file and one JSON line appended to ``$HPCPLAT_JOB_DIR/events.jsonl``.

The agent runs as root and those paths are chosen by users, so the owner files are written
carefully: never through a symbolic link (``O_NOFOLLOW``), only to a regular file (or directory)
owned by the job's owner, and the stdout file is never created.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import stat
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from node_agent.spool import Spool

log = logging.getLogger(__name__)

JOB_EVENTS_FILE = "events.jsonl"


class EventKind(enum.StrEnum):
    """The catalog's event kinds the agent uses (``hpcplat.catalog.enums.EventKind`` values)."""

    IDLE_WARNING = "IDLE_WARNING"
    IDLE_RECLAIM = "IDLE_RECLAIM"
    POLICY = "POLICY"
    NODE = "NODE"


@dataclass(frozen=True)
class AgentEvent:
    kind: EventKind
    action: str
    """``idle_warning``, ``checkpoint_signal``, ``requeue``, ``cancel``, ``orphan_term``,
    ``orphan_kill``, ``drain``, ``resume``, ``unhealthy``, ``skipped``..."""
    reason: str
    node: str
    at: float
    job_id: str | None = None
    run_id: str | None = None
    user: str | None = None
    dry_run: bool = False

    @property
    def text(self) -> str:
        prefix = "[dry-run] would " if self.dry_run else ""
        stamp = datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        job = f" job {self.job_id}" if self.job_id else ""
        return f"{stamp} hpcplat-node-agent@{self.node}{job}: {prefix}{self.action}: {self.reason}"

    def to_record(self) -> dict[str, object]:
        record = asdict(self)
        record["kind"] = self.kind.value
        return record


@dataclass(frozen=True)
class Owner:
    """Where to tell a job's owner: the job's stdout file and its HPCPLAT_JOB_DIR."""

    uid: int | None
    stdout_path: str = ""
    job_dir: str = ""


def _append_owned(path: str, data: str, uid: int | None, *, create: bool) -> bool:
    """Append to ``path`` only if it is a regular file owned by ``uid`` reached without a link."""
    if not path or not os.path.isabs(path) or uid is None:
        return False
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    directory, name = os.path.split(path)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        dir_stat = os.fstat(dir_fd)
        if create and dir_stat.st_uid != uid:
            return False
        try:
            fd = os.open(name, flags | (os.O_CREAT if create else 0), 0o644, dir_fd=dir_fd)
        except OSError:
            return False
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return False
            if info.st_uid != uid:
                if not (create and info.st_size == 0 and info.st_uid == os.geteuid()):
                    return False
                os.fchown(fd, uid, -1)
            os.write(fd, data.encode("utf-8"))
            return True
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


class EventRecorder:
    """Records events: log, spool (for the catalog) and the owner's files."""

    def __init__(self, node: str, spool: Spool | None, *, notify_owner: bool = True, keep: int = 200) -> None:
        self.node = node
        self.spool = spool
        self.notify_owner = notify_owner
        self.recent: deque[AgentEvent] = deque(maxlen=keep)
        self.counts: dict[tuple[str, str, bool], int] = {}

    def event(
        self,
        kind: EventKind,
        action: str,
        reason: str,
        *,
        job_id: str | None = None,
        run_id: str | None = None,
        user: str | None = None,
        dry_run: bool = False,
        owner: Owner | None = None,
    ) -> AgentEvent:
        event = AgentEvent(kind, action, reason, self.node, time.time(), job_id, run_id, user, dry_run)
        self.record(event, owner)
        return event

    def record(self, event: AgentEvent, owner: Owner | None = None) -> None:
        level = logging.INFO if event.kind is EventKind.IDLE_WARNING or event.dry_run else logging.WARNING
        log.log(level, "%s", event.text)
        self.recent.append(event)
        key = (event.kind.value, event.action, event.dry_run)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.spool is not None:
            self.spool.append("event", event.to_record())
        if self.notify_owner and owner is not None and not event.dry_run:  # dry runs stay with the site
            line = event.text + "\n"
            _append_owned(owner.stdout_path, line, owner.uid, create=False)
            if owner.job_dir:
                record = json.dumps({"source": "hpcplat-node-agent", **event.to_record()}) + "\n"
                _append_owned(os.path.join(owner.job_dir, JOB_EVENTS_FILE), record, owner.uid, create=True)
