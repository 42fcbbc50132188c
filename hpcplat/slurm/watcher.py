"""One status watcher per process for every job it follows.

However many jobs a process follows (the CLI's ``wait``, thousands of :class:`hpcplat.Executor`
handles, a sweep), each refresh cycle costs Slurm's controller ONE ``squeue`` call for all of them,
plus ONE ``sacct`` call for those ``squeue`` no longer lists. Cycles back off (1, 2, 4... seconds up
to a cap), every call has a deadline, and a job in a terminal state is never asked about again.

A job missing from ``squeue`` is not taken as finished: ``squeue`` can answer empty for a moment
(a controller restart, a failover). Only ``sacct`` saying the job ended makes it terminal; a job
neither command knows for several cycles in a row is reported ``UNKNOWN`` ("lost"), which a waiter
treats as a failure without anything being done to the job.

Use :meth:`Watcher.shared` to get the process's watcher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar, TypeVar

from hpcplat.errors import CommandTimeout, HpcplatError, SlurmError
from hpcplat.slurm.client import SlurmClient
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.state import JobState, parse_job_id

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MIN_INTERVAL_S = 1.0
DEFAULT_MAX_INTERVAL_S = 30.0
DEFAULT_CALL_DEADLINE_S = 30.0
DEFAULT_LOST_AFTER = 5

LOST_REASON = "neither squeue nor sacct knows this job any more"

# Which state an array stands in when its tasks differ: the first of these any task is in.
_ARRAY_ACTIVE_ORDER = (
    JobState.RUNNING,
    JobState.COMPLETING,
    JobState.CONFIGURING,
    JobState.REQUEUED,
    JobState.PREEMPTED,
    JobState.SUSPENDED,
    JobState.PENDING,
)


@dataclass
class WatcherStats:
    """What the watcher has cost Slurm so far."""

    cycles: int = 0
    squeue_calls: int = 0
    sacct_calls: int = 0
    errors: int = 0


class Watcher:
    """Follows jobs by id; thread-safe. ``client`` defaults to :func:`hpcplat.slurm.get_client`."""

    _shared: ClassVar[Watcher | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        client: SlurmClient | None = None,
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL_S,
        max_interval: float = DEFAULT_MAX_INTERVAL_S,
        call_deadline: float = DEFAULT_CALL_DEADLINE_S,
        lost_after: int = DEFAULT_LOST_AFTER,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if min_interval <= 0 or max_interval < min_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        self._client = client
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.call_deadline = call_deadline
        self.lost_after = lost_after
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()  # guards the dictionaries below
        self._cycle_lock = threading.Lock()  # one cycle at a time
        self._followed: set[str] = set()
        self._info: dict[str, JobInfo] = {}
        self._terminal: set[str] = set()
        self._misses: dict[str, int] = {}
        self._interval = min_interval
        self._last_cycle: float | None = None
        self.last_error: HpcplatError | None = None
        self.stats = WatcherStats()

    # -- the process-wide instance ------------------------------------------------------------

    @classmethod
    def shared(cls, client: SlurmClient | None = None) -> Watcher:
        """The process's watcher (created on first use; ``client`` only matters then)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls(client)
            return cls._shared

    @classmethod
    def reset_shared(cls) -> None:
        """Forget the process's watcher (a forked child, tests)."""
        with cls._shared_lock:
            cls._shared = None

    @property
    def client(self) -> SlurmClient:
        if self._client is None:
            from hpcplat.slurm import get_client

            self._client = get_client()
        return self._client

    # -- following ----------------------------------------------------------------------------

    def follow(self, job_ids: Iterable[str]) -> None:
        """Start following jobs (``123``, ``123_4`` for an array task, ``123`` for a whole array)."""
        new = False
        with self._lock:
            for job_id in job_ids:
                job_id = str(job_id).strip()
                parse_job_id(job_id)  # ValueError for something that is not a job id
                if job_id not in self._followed:
                    self._followed.add(job_id)
                    new = True
            if new:
                self._interval = self.min_interval

    def forget(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._followed.discard(job_id)
                self._misses.pop(job_id, None)

    def info(self, job_id: str) -> JobInfo | None:
        """The last known record of ``job_id`` (no Slurm call)."""
        with self._lock:
            return self._info.get(job_id)

    def state(self, job_id: str) -> JobState:
        info = self.info(job_id)
        return info.state if info else JobState.UNKNOWN

    def done(self, job_id: str) -> bool:
        """Terminal, or lost (see the module docstring)."""
        with self._lock:
            return job_id in self._terminal

    @property
    def interval(self) -> float:
        """Seconds until the next cycle is due, counted from the last one."""
        return self._interval

    # -- cycles -------------------------------------------------------------------------------

    def due_in(self) -> float:
        """Seconds until a refresh is due (0 when it is)."""
        if self._last_cycle is None:
            return 0.0
        return max(0.0, self._last_cycle + self._interval - self._clock())

    def refresh(self, *, force: bool = False) -> bool:
        """Run one cycle if one is due (or ``force``); returns whether Slurm was asked.

        Threads calling this at the same time share one cycle."""
        if not force and self.due_in() > 0:
            return False
        with self._cycle_lock:
            if not force and self.due_in() > 0:
                return False  # another thread just did it
            return self._cycle()

    def poll(self, job_id: str) -> JobInfo | None:
        """Refresh when due, then the job's record. Following starts if it had not."""
        self.follow([job_id])
        self.refresh()
        return self.info(job_id)

    def wait(
        self,
        job_ids: Iterable[str],
        *,
        timeout: float | None = None,
        on_cycle: Callable[[Mapping[str, JobInfo | None]], None] | None = None,
    ) -> dict[str, JobInfo | None]:
        """Block until every job is done (terminal or lost); returns their last records.

        ``on_cycle`` is called with the records after every refresh (a progress display). Raises
        :class:`TimeoutError` naming the jobs still running when ``timeout`` passes."""
        ids = [str(j) for j in job_ids]
        self.follow(ids)
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            asked = self.refresh()
            snapshot = {j: self.info(j) for j in ids}
            if asked and on_cycle is not None:
                on_cycle(snapshot)
            if all(self.done(j) for j in ids):
                return snapshot
            pause = max(self.due_in(), 0.05)
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    pending = [f"{j} ({_state_text(snapshot[j])})" for j in ids if not self.done(j)]
                    raise TimeoutError(f"still not finished after {timeout:g} s: {', '.join(pending)}")
                pause = min(pause, left)
            self._sleep(pause)

    def _cycle(self) -> bool:
        with self._lock:
            active = sorted(j for j in self._followed if j not in self._terminal)
        self._last_cycle = self._clock()
        self._interval = min(self._interval * 2, self.max_interval) if self.stats.cycles else self._interval
        if not active:
            return False
        self.stats.cycles += 1
        query = _query_ids(active)
        try:
            self.stats.squeue_calls += 1
            live = _expand(self._call(lambda: self.client.jobs(query)))
        except HpcplatError as exc:
            self._failed(exc, "squeue")
            return True
        found: dict[str, JobInfo] = {}
        missing: list[str] = []
        for job_id in active:
            record = _lookup(job_id, live)
            if record is None:
                missing.append(job_id)
            else:
                found[job_id] = record
        history: dict[str, JobInfo] = {}
        history_ok = True
        if missing:
            try:
                self.stats.sacct_calls += 1
                history = _expand(self._call(lambda: self.client.history(_query_ids(missing))))
            except HpcplatError as exc:
                history_ok = False
                self._failed(exc, "sacct")
        with self._lock:
            for job_id, record in found.items():
                self._update(job_id, record)
            for job_id in missing:
                record = _lookup(job_id, history) if history_ok else None
                if record is not None:
                    self._update(job_id, record)
                    continue
                # Not in squeue and not (yet) in sacct: a transient empty answer, accounting lag,
                # or a job that is gone. Declare nothing until it has lasted several cycles.
                self._misses[job_id] = self._misses.get(job_id, 0) + 1
                if self._misses[job_id] >= self.lost_after:
                    previous = self._info.get(job_id)
                    lost = JobInfo(
                        job_id=job_id, name="", user="", state=JobState.UNKNOWN, reason=LOST_REASON
                    )
                    self._info[job_id] = (
                        replace(previous, state=JobState.UNKNOWN, reason=LOST_REASON) if previous else lost
                    )
                    self._terminal.add(job_id)
                    log.warning("job %s: %s (after %d cycles)", job_id, LOST_REASON, self._misses[job_id])
        self.last_error = None if history_ok else self.last_error
        return True

    def _update(self, job_id: str, record: JobInfo) -> None:
        self._misses.pop(job_id, None)
        self._info[job_id] = record
        if record.state.is_terminal:
            self._terminal.add(job_id)

    def _failed(self, exc: HpcplatError, what: str) -> None:
        self.stats.errors += 1
        self.last_error = exc
        log.warning("status refresh (%s) failed, retrying in %.0f s: %s", what, self._interval, exc)

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one Slurm call with this watcher's deadline, whatever the backend does."""
        box: dict[str, object] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread below
                box["error"] = exc

        worker = threading.Thread(target=target, name="hpcplat-watcher-call", daemon=True)
        worker.start()
        worker.join(self.call_deadline)
        if worker.is_alive():
            raise CommandTimeout(
                f"Slurm did not answer a status query within {self.call_deadline:g} s",
                argv=(),
                returncode=None,
                hint="the controller may be overloaded; hpcplat will retry with back-off",
            )
        if "error" in box:
            error = box["error"]
            if isinstance(error, HpcplatError):
                raise error
            if isinstance(error, BaseException):
                raise SlurmError(f"status query failed: {error}", argv=(), returncode=None) from error
        return box["value"]  # type: ignore[return-value]


def _state_text(info: JobInfo | None) -> str:
    return info.state.value if info is not None else "not seen yet"


def _base(job_id: str) -> str:
    return job_id.split("_", 1)[0].split(".", 1)[0].split("+", 1)[0]


def _query_ids(job_ids: Iterable[str]) -> list[str]:
    """What to ask Slurm for: array tasks are asked for through their array (one id)."""
    out: list[str] = []
    seen: set[str] = set()
    for job_id in job_ids:
        key = _base(job_id) if "_" in job_id else job_id
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _expand(records: Iterable[JobInfo]) -> dict[str, JobInfo]:
    """Records by id, a pending array record ``12_[3-5%2]`` giving ``12_3``, ``12_4``, ``12_5``."""
    out: dict[str, JobInfo] = {}
    for record in records:
        try:
            parsed = parse_job_id(record.job_id)
        except ValueError:
            log.warning("ignoring a record with an unreadable job id: %r", record.job_id)
            continue
        if parsed.array_pending is not None:
            for task in parsed.array_range:
                task_id = f"{parsed.job}_{task}"
                out.setdefault(task_id, replace(record, job_id=task_id))
        else:
            out[record.job_id] = record
    return out


def _lookup(job_id: str, records: Mapping[str, JobInfo]) -> JobInfo | None:
    """The record of ``job_id``; for a whole array, one record standing for all its tasks."""
    record = records.get(job_id)
    if record is not None:
        return record
    if "_" in job_id:
        return None
    prefix = f"{job_id}_"
    tasks = [r for key, r in records.items() if key.startswith(prefix)]
    if not tasks:
        return None
    states = {t.state for t in tasks}
    for state in _ARRAY_ACTIVE_ORDER:
        if state in states:
            return replace(tasks[0], job_id=job_id, state=state)
    active = [s for s in states if not s.is_terminal]
    if active:
        return replace(tasks[0], job_id=job_id, state=active[0])
    failed = [t for t in tasks if t.state.is_failure]
    pick = failed[0] if failed else tasks[0]
    return replace(pick, job_id=job_id)
