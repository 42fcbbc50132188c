"""Carries out the policies' decisions, after checking once more, and records each as an event.

Before touching a job the agent asks Slurm again (``scontrol show job -d``): the job must still be
running on this node in the same run (same start time). A job that ended in between is dropped
silently. In dry-run mode the checks are made and the event says what would have been done.

Processes are signalled through pidfds (``os.pidfd_open``) after checking the start time, so a PID
reused by a new process is never hit: SIGTERM first, SIGKILL ``kill_wait_s`` later.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from dataclasses import dataclass

from hpcplat.errors import CommandError, SlurmError
from hpcplat.runner import Runner, run
from hpcplat.slurm.client import SlurmClient
from hpcplat.slurm.state import JobState
from node_agent.events import EventKind, EventRecorder, Owner
from node_agent.policy.health import NodeDecision, NodeStep
from node_agent.policy.idle import IdleDecision, IdleStep
from node_agent.policy.orphans import Daemons, OrphanCandidate
from node_agent.procs import ProcessTable
from node_agent.slurm_view import JobDetail, JobGone, SlurmView

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    pidfd: int
    term_at: float
    candidate: OrphanCandidate


def _exited(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited (even before it is reaped)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


class Actuator:
    def __init__(
        self,
        node: str,
        view: SlurmView,
        client: SlurmClient,
        recorder: EventRecorder,
        *,
        procs: ProcessTable,
        runner: Runner = run,
        timeout: float = 10.0,
        kill_wait_s: float = 10.0,
        daemons: Daemons | None = None,
    ) -> None:
        self.node = node
        self.daemons = daemons
        self.view = view
        self.client = client
        self.recorder = recorder
        self.procs = procs
        self._run = runner
        self.timeout = timeout
        self.kill_wait_s = kill_wait_s
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._dry_reported: set[tuple[int, int]] = set()

    # --- jobs ---------------------------------------------------------------------------------

    def _still_here(self, job: JobDetail) -> bool | None:
        """True: same run still running here; False: it is not (drop silently); None: no answer."""
        fresh = self.view.job(job.job_id)
        if fresh is None:
            return None
        if isinstance(fresh, JobGone):
            return False
        return (
            fresh.state is JobState.RUNNING
            and fresh.start_time == job.start_time
            and self.node in fresh.nodes
        )

    def idle(self, decision: IdleDecision, owner: Owner) -> bool:
        """Carry out one idle decision; False when nothing was done (and the decision should be retried)."""
        job = decision.job
        if decision.step is IdleStep.WARN:
            self._job_event(EventKind.IDLE_WARNING, decision, owner)
            return True
        here = self._still_here(job)
        if here is None:
            log.warning("job %s: not acting (%s): Slurm did not answer", job.job_id, decision.step.value)
            return False
        if not here:
            log.info("job %s left the node before %s: nothing to do", job.job_id, decision.step.value)
            return True
        if not decision.dry_run:
            try:
                if decision.step is IdleStep.SIGNAL:
                    # The checkpoint signal protocol: USR1 to every task, batch shell included.
                    self._run(
                        ["scancel", "--signal=USR1", "--full", job.job_id],
                        timeout=self.timeout,
                        env=self.view.env,
                        error=SlurmError,
                    )
                elif decision.step is IdleStep.REQUEUE:
                    self.client.requeue([job.job_id])
                elif decision.step is IdleStep.CANCEL:
                    self.client.cancel([job.job_id])
            except CommandError as exc:
                log.error("job %s: %s failed: %s", job.job_id, decision.step.value, exc.message)
                return False
        self._job_event(EventKind.IDLE_RECLAIM, decision, owner)
        return True

    def _job_event(self, kind: EventKind, decision: IdleDecision, owner: Owner) -> None:
        job = decision.job
        self.recorder.event(
            kind,
            decision.step.value,
            decision.reason,
            job_id=job.job_id,
            run_id=job.run_id,
            user=job.user,
            dry_run=decision.dry_run,
            owner=owner,
        )

    # --- node ---------------------------------------------------------------------------------

    def node_state(self, decision: NodeDecision) -> bool:
        if not decision.dry_run:
            try:
                if decision.step is NodeStep.DRAIN:
                    self.client.update_node(self.node, state="drain", reason=decision.reason)
                else:
                    self.client.update_node(self.node, state="resume")
            except CommandError as exc:
                log.error("%s of node %s failed: %s", decision.step.value, self.node, exc.message)
                return False
        self.recorder.event(EventKind.NODE, decision.step.value, decision.reason, dry_run=decision.dry_run)
        return True

    # --- processes ----------------------------------------------------------------------------

    def is_pending(self, candidate: OrphanCandidate) -> bool:
        return (candidate.pid, candidate.start_ticks) in self._pending

    def orphan(self, candidate: OrphanCandidate, *, dry_run: bool) -> bool:
        """SIGTERM an orphan after confirming with Slurm that its job is not running here."""
        if self.is_pending(candidate):
            return True
        if candidate.job_id is not None:
            fresh = self.view.job(candidate.job_id)
            if fresh is None:
                return False
            if not isinstance(fresh, JobGone) and fresh.state.is_active and self.node in fresh.nodes:
                log.info(
                    "process %d: job %s is running here after all; left alone",
                    candidate.pid,
                    candidate.job_id,
                )
                return False
        owner = Owner(uid=candidate.uid, job_dir=candidate.job_dir or "")
        reason = f"{candidate.reason}: SIGTERM, then SIGKILL after {self.kill_wait_s:g} s"
        if dry_run:
            key = (candidate.pid, candidate.start_ticks)
            if key in self._dry_reported:
                return True
            self._dry_reported.add(key)
            self.recorder.event(
                EventKind.POLICY, "orphan_term", reason, job_id=candidate.job_id, dry_run=True, owner=owner
            )
            return True
        try:
            pidfd = os.pidfd_open(candidate.pid)
        except ProcessLookupError:
            return True
        except OSError as exc:
            log.error("cannot open process %d: %s", candidate.pid, exc)
            return False
        current = self.procs.read(candidate.pid)
        if current is None or current.start_ticks != candidate.start_ticks:
            os.close(pidfd)
            return True  # it exited (and the PID may be reused): nothing to do
        if self.daemons is not None and self.daemons.is_daemon(candidate.pid):
            os.close(pidfd)  # it may have exec'd a daemon's binary since the scan
            log.error("process %d is a system daemon now; left alone", candidate.pid)
            return False
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        except ProcessLookupError:
            os.close(pidfd)
            return True
        self._pending[(candidate.pid, candidate.start_ticks)] = _Pending(pidfd, time.monotonic(), candidate)
        self.recorder.event(EventKind.POLICY, "orphan_term", reason, job_id=candidate.job_id, owner=owner)
        return True

    def finish_kills(self, *, force: bool = False) -> None:
        """SIGKILL the orphans still alive ``kill_wait_s`` after their SIGTERM."""
        now = time.monotonic()
        for key, pending in list(self._pending.items()):
            if not force and now - pending.term_at < self.kill_wait_s:
                continue
            candidate = pending.candidate
            try:
                killed = not _exited(pending.pidfd)
                if killed:
                    signal.pidfd_send_signal(pending.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                killed = False
            finally:
                os.close(pending.pidfd)
                del self._pending[key]
            if killed:
                self.recorder.event(
                    EventKind.POLICY,
                    "orphan_kill",
                    f"process {candidate.pid} ({candidate.comm}) ignored SIGTERM for "
                    f"{self.kill_wait_s:g} s: SIGKILL",
                    job_id=candidate.job_id,
                    owner=Owner(uid=candidate.uid, job_dir=candidate.job_dir or ""),
                )

    def close(self) -> None:
        for pending in self._pending.values():
            os.close(pending.pidfd)
        self._pending.clear()
