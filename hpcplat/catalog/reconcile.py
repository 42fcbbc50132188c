"""Reconciliation: attempts, run states and usage follow Slurm, one batched query of each kind.

A cycle reads the runs that may still change, asks Slurm ONCE with ``squeue`` (``client.jobs``) and
ONCE with ``sacct`` (``client.history(all_attempts=True)``) about all their jobs, then writes every
change in one transaction:

- each requeue (Slurm's restart count) gets its own :class:`Attempt` row, an array job's tasks get
  one row each (the placeholder row of the array's base id is replaced by them);
- attempt state, nodes, times, exit code and reason come from Slurm; usage (elapsed, AllocTRES,
  GPU-hours) from accounting; every state change is an :class:`Event`;
- the run's status is derived from its latest attempts (:func:`derive_status`);
- runs stuck in SUBMITTING longer than the grace period (the submitting process died between
  recording the intent and confirming the job) get the job whose comment is ``hpcplat:<run id>``
  attached, or are marked NOT_SUBMITTED;
- tracking spool files in the job directories of these runs are ingested, and so are the
  reconciliation records the submission layer left (:mod:`hpcplat.catalog.pending`).

Terminal attempts are never queried again. A job absent from both answers is reported as missing,
never marked finished on that evidence alone (a transient empty answer must not end a live run).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlmodel import Session, col, select

from hpcplat.catalog import ingest, pending
from hpcplat.catalog.enums import EventKind, RunStatus
from hpcplat.catalog.models import Attempt, Event, Run, Usage
from hpcplat.catalog.store import Store
from hpcplat.catalog.types import utcnow
from hpcplat.errors import CatalogError, SlurmError
from hpcplat.redact import strip_credentials
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.parse import COMMENT_PREFIX, run_id_from_comment
from hpcplat.slurm.state import JobState, parse_job_id

log = logging.getLogger(__name__)


class SlurmQueries(Protocol):
    """The two queries reconciliation needs (any :class:`hpcplat.slurm.client.SlurmClient` has them)."""

    def jobs(self, job_ids: Iterable[str] | None = None, *, user: str | None = None) -> list[JobInfo]: ...

    def history(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        user: str | None = None,
        since: datetime | None = None,
        all_attempts: bool = False,
    ) -> list[JobInfo]: ...


_RUNNING = frozenset(
    {JobState.RUNNING, JobState.COMPLETING, JobState.CONFIGURING, JobState.SIGNALING, JobState.STAGE_OUT}
)
_REQUEUE = frozenset({JobState.REQUEUED, JobState.REQUEUE_HOLD, JobState.REQUEUE_FED, JobState.PREEMPTED})
_TRACKED_RUNS = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.REQUEUED)


@dataclass
class ReconcileReport:
    jobs_checked: int = 0
    slurm_queries: int = 0
    attempts_created: int = 0
    attempts_updated: int = 0
    runs_changed: list[tuple[str, str, str]] = field(default_factory=list)
    """(run id, old status, new status)"""
    attached: list[tuple[str, str]] = field(default_factory=list)
    """(run id, job id) found by comment for runs stuck in SUBMITTING."""
    abandoned: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Job ids Slurm answered nothing about."""
    spool_points: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{self.jobs_checked} jobs checked with {self.slurm_queries} Slurm queries",
            f"{self.attempts_created} attempts added, {self.attempts_updated} updated",
            f"{len(self.runs_changed)} runs changed status",
        ]
        if self.attached:
            parts.append(f"{len(self.attached)} stuck submissions attached")
        if self.abandoned:
            parts.append(f"{len(self.abandoned)} marked not submitted")
        if self.missing:
            parts.append(f"{len(self.missing)} jobs unknown to Slurm: {', '.join(self.missing[:10])}")
        if self.spool_points:
            parts.append(f"{self.spool_points} spooled metric points ingested")
        return "; ".join(parts)


def derive_status(latest: Sequence[Attempt], current: RunStatus) -> RunStatus:
    """A run's status from the latest attempt of each of its jobs (array tasks)."""
    if not latest:
        return current
    states = [a.state for a in latest]
    if any(s in _RUNNING for s in states):
        return RunStatus.RUNNING
    if any(s.is_active for s in states):
        requeued = any(a.restart > 0 or a.state in _REQUEUE for a in latest if a.state.is_active)
        return RunStatus.REQUEUED if requeued else RunStatus.QUEUED
    if any(s is JobState.UNKNOWN for s in states):
        return current
    if all(s is JobState.COMPLETED for s in states):
        return RunStatus.COMPLETED
    if any(s.is_failure and s is not JobState.CANCELLED for s in states):
        return RunStatus.FAILED
    return RunStatus.CANCELLED


def _utc(value: datetime | None) -> datetime | None:
    """Slurm prints local times without a zone."""
    if value is None:
        return None
    return value.astimezone(UTC)  # a naive value is taken as local time


def _base(job_id: str) -> str:
    return job_id.split("_", 1)[0].split(".", 1)[0]


def _expand(infos: Iterable[JobInfo]) -> dict[str, list[JobInfo]]:
    """Infos by job id; a pending array record ``12_[3-5]`` counts for tasks 12_3, 12_4, 12_5."""
    found: dict[str, list[JobInfo]] = defaultdict(list)
    for info in infos:
        try:
            parsed = parse_job_id(info.job_id)
        except ValueError:
            log.warning("ignoring a job id Slurm printed that is not one: %r", info.job_id)
            continue
        if parsed.is_step:
            continue
        if parsed.array_pending is not None:
            for task in parsed.array_range:
                found[f"{parsed.job}_{task}"].append(info)
        else:
            found[info.job_id].append(info)
    return found


def reconcile(
    store: Store, client: SlurmQueries, *, grace_s: float = 300.0, now: datetime | None = None
) -> ReconcileReport:
    now = now or utcnow()
    report = ReconcileReport()
    attach_pending(store, report)
    deadline = now - timedelta(seconds=grace_s)
    with store.read() as s:
        active = s.exec(select(Run).where(col(Run.status).in_(_TRACKED_RUNS))).all()
        stuck = s.exec(
            select(Run).where(Run.status == RunStatus.SUBMITTING, col(Run.created) < deadline)
        ).all()
        attempts = _attempts_of(s, [r.id for r in active])
        with_usage = _with_usage(s, [r.id for r in active])
        job_dirs = _job_dirs(active, attempts)
    query_ids = _ids_to_query(attempts, with_usage, now)
    report.jobs_checked = len(query_ids)
    live: list[JobInfo] = []
    history: list[JobInfo] = []
    if query_ids or stuck:
        # With stuck submissions the job ids are unknown: list everything (still one call each).
        ids = None if stuck else sorted(query_ids)
        since = min(r.created for r in stuck) - timedelta(minutes=5) if stuck else None
        live = client.jobs(ids)
        report.slurm_queries += 1
        try:
            history = client.history(ids, since=since, all_attempts=True)
        except SlurmError as exc:
            report.warnings.append(f"accounting (sacct) unavailable, states from squeue only: {exc.message}")
        report.slurm_queries += 1
    live_by_id = _expand(live)
    hist_by_id = _expand(history)
    with store.write() as s:
        # Stuck submissions first: a job found by its comment (in squeue, or in accounting once it
        # has left the queue) gets its state, attempts and usage from the same answers right away.
        attached = _resolve_stuck(s, [r.id for r in stuck], live + history, report, grace_s)
        run_ids = [r.id for r in active] + attached
        _apply(s, run_ids=run_ids, live=live_by_id, hist=hist_by_id, report=report, now=now)
    for job_dir in job_dirs:
        for path in ingest.spool_files(job_dir):
            try:
                report.spool_points += ingest.ingest_spool(store.engine, path)
            except (CatalogError, OSError, ValueError, KeyError) as exc:
                report.warnings.append(f"spool {path} not ingested: {exc}")
    return report


def _job_dirs(runs: Sequence[Run], attempts: Sequence[Attempt]) -> list[str]:
    """Where the runs' jobs keep their spool: ``Run.job_dir``, or ``<job_root>/<job id>`` for
    jobs submitted by hpcplat (``job_root`` in the recorded Slurm request)."""
    dirs: set[str] = {r.job_dir for r in runs if r.job_dir}
    roots = {r.id: str(r.slurm_request.get("job_root") or "") for r in runs}
    for a in attempts:
        root = roots.get(a.run_id)
        if root:
            dirs.add(f"{root}/{a.job_id}")
    return sorted(dirs)


def attach_pending(store: Store, report: ReconcileReport) -> None:
    """Jobs the submission layer could neither record nor cancel (its reconciliation records in
    :mod:`hpcplat.catalog.pending`): attach each to its run, then remove the record."""
    for path, record in pending.pending():
        if record.catalog_url and strip_credentials(record.catalog_url) != strip_credentials(store.url):
            continue
        with store.write() as s:
            run = s.get(Run, record.run_id)
            if run is None:
                continue
            if run.status is RunStatus.SUBMITTING:
                s.add(Attempt(run_id=run.id, job_id=record.job_id, restart=0))
                run.status = RunStatus.QUEUED
                run.updated = utcnow()
                report.attached.append((run.id, record.job_id))
                report.runs_changed.append((run.id, RunStatus.SUBMITTING.value, RunStatus.QUEUED.value))
            s.add(
                Event(
                    kind=EventKind.RECONCILE,
                    reason=f"job {record.job_id} attached from the submission's reconciliation record "
                    f"({record.reason})",
                    source="reconcile",
                    job_id=record.job_id,
                    run_id=run.id,
                )
            )
        pending.settle(path)


def _attempts_of(s: Session, run_ids: Sequence[str]) -> list[Attempt]:
    if not run_ids:
        return []
    return list(s.exec(select(Attempt).where(col(Attempt.run_id).in_(run_ids))).all())


ACCOUNTING_WAIT = timedelta(hours=6)
"""How long after its end a finished attempt is still asked about, waiting for its accounting."""


def _settled(attempt: Attempt, with_usage: set[int], now: datetime) -> bool:
    """Finished, and either its accounting is in or it ended long ago: never queried again."""
    if not attempt.state.is_terminal:
        return False
    if attempt.id in with_usage:
        return True
    return attempt.end is not None and attempt.end < now - ACCOUNTING_WAIT


def _with_usage(s: Session, run_ids: Sequence[str]) -> set[int]:
    if not run_ids:
        return set()
    return set(s.exec(select(Usage.attempt_id).where(col(Usage.run_id).in_(run_ids))).all())


def _ids_to_query(attempts: Sequence[Attempt], with_usage: set[int], now: datetime) -> set[str]:
    latest: dict[tuple[str, str], Attempt] = {}
    for a in attempts:
        key = (a.run_id, a.job_id)
        if key not in latest or a.restart > latest[key].restart:
            latest[key] = a
    return {a.job_id for a in latest.values() if not _settled(a, with_usage, now)}


def _apply(
    s: Session,
    *,
    run_ids: Sequence[str],
    live: dict[str, list[JobInfo]],
    hist: dict[str, list[JobInfo]],
    report: ReconcileReport,
    now: datetime,
) -> None:
    for run_id in run_ids:
        run = s.get(Run, run_id)
        if run is None or run.status not in _TRACKED_RUNS:
            continue
        attempts = list(s.exec(select(Attempt).where(Attempt.run_id == run_id)).all())
        by_job: dict[str, dict[int, Attempt]] = defaultdict(dict)
        for a in attempts:
            by_job[a.job_id][a.restart] = a
        with_usage = set(s.exec(select(Usage.attempt_id).where(Usage.run_id == run_id)).all())
        for job_id in list(by_job):
            restarts = by_job[job_id]
            if _settled(restarts[max(restarts)], with_usage, now):
                continue
            tasks = _tasks_of(job_id, live, hist)
            if tasks and tasks != [job_id]:
                # An array: its tasks replace the placeholder attempt of the base id.
                for placeholder in restarts.values():
                    s.delete(placeholder)
                del by_job[job_id]
                for task in tasks:
                    _apply_job(
                        s,
                        run,
                        job_id=task,
                        restarts=by_job[task],
                        live=live.get(task, []),
                        hist=hist.get(task, []),
                        report=report,
                    )
                continue
            if job_id not in live and job_id not in hist:
                report.missing.append(job_id)
                continue
            _apply_job(
                s,
                run,
                job_id=job_id,
                restarts=restarts,
                live=live.get(job_id, []),
                hist=hist.get(job_id, []),
                report=report,
            )
        s.flush()
        latest = [rs[max(rs)] for rs in by_job.values() if rs]
        new_status = derive_status(latest, run.status)
        if new_status is not run.status:
            report.runs_changed.append((run.id, run.status.value, new_status.value))
            run.status = new_status
            run.status_reason = ""
            run.updated = now


def _tasks_of(job_id: str, live: dict[str, list[JobInfo]], hist: dict[str, list[JobInfo]]) -> list[str]:
    if "_" in job_id:
        return [job_id]
    prefix = f"{job_id}_"
    tasks = {k for k in (*live, *hist) if k.startswith(prefix)}
    return sorted(tasks, key=lambda k: int(k.split("_", 1)[1])) if tasks else []


def _apply_job(
    s: Session,
    run: Run,
    *,
    job_id: str,
    restarts: dict[int, Attempt],
    live: list[JobInfo],
    hist: list[JobInfo],
    report: ReconcileReport,
) -> None:
    for info in sorted(hist, key=lambda i: i.restarts):
        attempt = _attempt(s, run, job_id=job_id, restart=info.restarts, restarts=restarts, report=report)
        _update(s, run, attempt, info, report, from_accounting=True)
        if info.elapsed_s is not None and attempt.id is not None:
            _usage(s, run.id, attempt, info)
    if live:
        current = max(restarts) if restarts else 0
        attempt = _attempt(s, run, job_id=job_id, restart=current, restarts=restarts, report=report)
        _update(s, run, attempt, live[-1], report, from_accounting=False)


def _attempt(
    s: Session, run: Run, *, job_id: str, restart: int, restarts: dict[int, Attempt], report: ReconcileReport
) -> Attempt:
    attempt = restarts.get(restart)
    if attempt is not None:
        return attempt
    attempt = Attempt(run_id=run.id, job_id=job_id, restart=restart)
    s.add(attempt)
    s.flush()
    restarts[restart] = attempt
    report.attempts_created += 1
    if restart > 0:
        previous = restarts.get(restart - 1)
        kind = (
            EventKind.PREEMPTED
            if previous is not None and previous.state is JobState.PREEMPTED
            else EventKind.REQUEUED
        )
        why = f"attempt {restart} of job {job_id}"
        if previous is not None:
            why += f" (previous attempt {previous.state.value.lower()}"
            why += f": {previous.reason})" if previous.reason else ")"
        at = previous.end if previous is not None and previous.end is not None else utcnow()
        s.add(Event(kind=kind, reason=why, source="reconcile", job_id=job_id, run_id=run.id, at=at))
    return attempt


def _update(
    s: Session, run: Run, attempt: Attempt, info: JobInfo, report: ReconcileReport, *, from_accounting: bool
) -> None:
    before = (attempt.state, attempt.nodes, attempt.start, attempt.end, attempt.exit_code, attempt.reason)
    old_state = attempt.state
    if info.state is not JobState.UNKNOWN:
        attempt.state = info.state
    if info.nodes:
        attempt.nodes = info.nodes
    attempt.start = _utc(info.start_time) or attempt.start
    if info.state.is_terminal or from_accounting:
        attempt.end = _utc(info.end_time) or attempt.end
    if info.exit_code is not None and (info.state.is_terminal or from_accounting):
        attempt.exit_code = info.exit_code
    attempt.reason = info.reason  # Slurm's reason for the current state ("" once running)
    after = (attempt.state, attempt.nodes, attempt.start, attempt.end, attempt.exit_code, attempt.reason)
    if after != before:
        report.attempts_updated += 1
    if attempt.state is not old_state:
        why = f"{old_state.value} -> {attempt.state.value}"
        if attempt.reason:
            why += f" ({attempt.reason})"
        if attempt.exit_code not in (None, 0) and attempt.state.is_terminal:
            why += f", exit code {attempt.exit_code}"
        s.add(
            Event(
                kind=EventKind.STATE,
                reason=why,
                source="reconcile",
                job_id=attempt.job_id,
                run_id=run.id,
                at=_slurm_time(attempt),
            )
        )


def _slurm_time(attempt: Attempt) -> datetime:
    """When Slurm says the attempt's current state began: its end for a finished (or preempted)
    attempt, its start for a running one; the time of this reconcile when Slurm gave none."""
    if attempt.state.is_terminal or attempt.state in _REQUEUE:
        return attempt.end or utcnow()
    if attempt.state in _RUNNING:
        return attempt.start or utcnow()
    return utcnow()


def _usage(s: Session, run_id: str, attempt: Attempt, info: JobInfo) -> None:
    assert attempt.id is not None
    row = s.get(Usage, attempt.id)
    if row is None:
        row = Usage(attempt_id=attempt.id, run_id=run_id, job_id=attempt.job_id)
        s.add(row)
    row.elapsed_s = info.elapsed_s or 0
    row.alloc_tres = dict(info.tres)
    row.gpus = info.gpus
    row.gpu_hours = info.gpus * row.elapsed_s / 3600.0
    row.updated = utcnow()


def _resolve_stuck(
    s: Session, run_ids: Sequence[str], infos: Sequence[JobInfo], report: ReconcileReport, grace_s: float
) -> list[str]:
    """Attach each stuck run to the job whose comment names it (squeue's or sacct's record), else
    mark it NOT_SUBMITTED. Returns the ids of the runs attached."""
    attached: list[str] = []
    if not run_ids:
        return attached
    by_run: dict[str, str] = {}
    for info in infos:
        run_id = run_id_from_comment(info.comment)
        if run_id is not None:
            job = _base(info.job_id) if "_" in info.job_id else info.job_id
            by_run.setdefault(run_id, job)
    for run_id in run_ids:
        run = s.get(Run, run_id)
        if run is None or run.status is not RunStatus.SUBMITTING:
            continue
        job_id = by_run.get(run_id)
        if job_id is not None:
            s.add(Attempt(run_id=run_id, job_id=job_id, restart=0))
            run.status = RunStatus.QUEUED
            run.updated = utcnow()
            s.add(
                Event(
                    kind=EventKind.RECONCILE,
                    reason=f"the submitting process stopped before recording job {job_id}; "
                    f"found by its comment {COMMENT_PREFIX}{run_id}",
                    source="reconcile",
                    job_id=job_id,
                    run_id=run_id,
                )
            )
            report.attached.append((run_id, job_id))
            report.runs_changed.append((run_id, RunStatus.SUBMITTING.value, RunStatus.QUEUED.value))
            attached.append(run_id)
        else:
            reason = (
                f"the submitting process stopped and no Slurm job has comment {COMMENT_PREFIX}{run_id} "
                f"after {grace_s:g} s"
            )
            run.status = RunStatus.NOT_SUBMITTED
            run.status_reason = reason
            run.updated = utcnow()
            s.add(Event(kind=EventKind.SUBMIT_FAILED, reason=reason, source="reconcile", run_id=run_id))
            report.abandoned.append(run_id)
            report.runs_changed.append((run_id, RunStatus.SUBMITTING.value, RunStatus.NOT_SUBMITTED.value))
    s.flush()
    return attached
