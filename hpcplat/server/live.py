"""A live view of Slurm: reconciliation run continuously, at a cost independent of who is watching.

The server runs one :class:`LiveReconciler` in a background thread. Each cycle is one
:func:`hpcplat.catalog.reconcile.reconcile` over the catalog's store, with the Slurm client seen
through a per-cycle view (:class:`_CycleView`) so that Slurm is asked:

- **one ``squeue`` for the whole cluster** (every user's jobs, no ``--jobs`` list), whatever the
  number of runs tracked; no call at all when nothing is tracked;
- **``sacct`` only for the jobs that need accounting**: those squeue no longer lists, those it
  lists as finished, and those whose state squeue shows changing since the catalog last recorded
  them (a start, an end, a preemption or requeue). Their times (Start, End) and attempts
  (requeues) come from accounting, so every event carries the time Slurm reports. A cycle in which
  nothing changed asks sacct nothing.

Spool files of the tracked runs' jobs are ingested in the same cycle (reconcile does it), so
metrics a job could not write directly appear within ``interval_s``. Readers (``hpcplat runs``,
``run show``, the API) read the catalog and never ask Slurm: a hundred users following their jobs
cost Slurm what one does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime

from sqlmodel import col, select

from hpcplat.catalog.models import Attempt, Run
from hpcplat.catalog.reconcile import _TRACKED_RUNS, ReconcileReport, SlurmQueries, reconcile
from hpcplat.catalog.store import Store
from hpcplat.errors import HpcplatError
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.state import JobState

log = logging.getLogger(__name__)


class _CycleView:
    """The Slurm client as one cycle of reconciliation sees it: ``jobs`` is answered from one
    ``squeue`` of the whole cluster (made on first use), ``history`` asks sacct only about the jobs
    that need it (see the module docstring)."""

    def __init__(self, client: SlurmQueries, recorded: dict[str, JobState]) -> None:
        self._client = client
        self._recorded = recorded
        """The state the catalog holds for the latest attempt of each tracked job."""
        self._live: list[JobInfo] | None = None
        self._by_base: dict[str, list[JobInfo]] = {}
        self.calls = 0

    def _snapshot(self) -> list[JobInfo]:
        if self._live is None:
            self._live = self._client.jobs(None)
            self.calls += 1
            for info in self._live:
                self._by_base.setdefault(_base(info.job_id), []).append(info)
        return self._live

    def jobs(self, job_ids: Iterable[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        # Reconcile looks answers up by job id: the rest of the cluster's jobs are simply unused.
        return self._snapshot()

    def history(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        user: str | None = None,
        since: datetime | None = None,
        all_attempts: bool = False,
    ) -> list[JobInfo]:
        if job_ids is None:  # stuck submissions: their jobs are found by comment in all of it
            self.calls += 1
            return self._client.history(None, user=user, since=since, all_attempts=all_attempts)
        wanted = sorted(j for j in job_ids if self._needs_accounting(j))
        if not wanted:
            return []
        self.calls += 1
        return self._client.history(wanted, user=user, since=since, all_attempts=all_attempts)

    def _needs_accounting(self, job_id: str) -> bool:
        self._snapshot()
        listed = [i for i in self._by_base.get(_base(job_id), []) if i.job_id == job_id or "_" not in job_id]
        if not listed:
            return True  # left the queue: only accounting knows how it ended
        recorded = self._recorded.get(job_id)
        return any(i.state.is_terminal or i.state is not recorded for i in listed)


def _base(job_id: str) -> str:
    return job_id.split("_", 1)[0]


class LiveReconciler:
    """Reconciliation of ``store`` with Slurm (``client``) every ``interval_s`` seconds.

    :meth:`cycle` runs one; :meth:`run` runs cycles until ``stop`` is set (the server calls it in a
    background thread). A failing cycle (Slurm or the database unreachable) is logged and retried
    at the next interval; it never ends the loop."""

    def __init__(self, store: Store, client: SlurmQueries, *, interval_s: float = 2.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.store = store
        self.client = client
        self.interval_s = interval_s
        self.cycles = 0
        self.last_report: ReconcileReport | None = None
        self.last_error: str | None = None
        self.last_slurm_calls = 0
        """Slurm calls of the latest cycle (squeue and sacct)."""

    def _recorded_states(self) -> dict[str, JobState]:
        with self.store.read() as s:
            attempts = s.exec(
                select(Attempt)
                .join(Run, col(Run.id) == col(Attempt.run_id))
                .where(col(Run.status).in_(_TRACKED_RUNS))
            ).all()
        latest: dict[str, tuple[int, JobState]] = {}
        for a in attempts:
            if a.job_id not in latest or a.restart > latest[a.job_id][0]:
                latest[a.job_id] = (a.restart, a.state)
        return {job_id: state for job_id, (_, state) in latest.items()}

    def cycle(self) -> None:
        """One reconciliation: at most one squeue and one sacct (see the module docstring)."""
        view = _CycleView(self.client, self._recorded_states())
        try:
            report = reconcile(self.store, view)
        finally:
            self.last_slurm_calls = view.calls
        self.cycles += 1
        self.last_report = report
        for warning in report.warnings:
            log.warning("live reconcile: %s", warning)
        if report.runs_changed:
            log.info("live reconcile: %s", report.summary())

    def run(self, stop: threading.Event) -> None:
        """Cycles every ``interval_s`` seconds until ``stop`` is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.cycle()
                self.last_error = None
            except HpcplatError as exc:
                self.last_error = exc.message
                log.warning("live reconcile failed, retrying in %g s: %s", self.interval_s, exc.message)
            except Exception as exc:  # the loop must outlive any one bad cycle
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("live reconcile failed, retrying in %g s", self.interval_s)
            stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))


__all__ = ["LiveReconciler"]
