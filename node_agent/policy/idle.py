"""Idle-GPU reclaim: a job whose every GPU sample in the window is zero gives its GPUs back.

Per job (and per run of it: a requeued job starts afresh), the idle clock starts at the first
sample where all the job's GPUs on this node read 0 % and restarts at any non-zero sample, at any
unknown cycle followed by a hole longer than ``max_gap_s``, and when the agent restarts. Warnings
go out as the clock passes each ``warn_after_s``; at ``act_after_s`` a requeueable job gets the
checkpoint signal and, if still running after ``requeue_grace_s``, is requeued; any other job is
cancelled. Exempt: interactive jobs, multi-node jobs (each agent sees only its node), disabled
tiers or partitions. This module decides; :mod:`node_agent.actions` acts (after checking again).
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass, field

from node_agent.config import AgentConfig, IdlePolicy
from node_agent.slurm_view import JobDetail


class IdleStep(enum.Enum):
    WARN = "idle_warning"
    SIGNAL = "checkpoint_signal"
    REQUEUE = "requeue"
    CANCEL = "cancel"


@dataclass(frozen=True)
class IdleDecision:
    step: IdleStep
    job: JobDetail
    idle_for_s: float
    reason: str
    dry_run: bool


@dataclass
class _JobClock:
    idle_since: float | None = None
    last_known: float | None = None
    warned: set[float] = field(default_factory=set)
    signalled_at: float | None = None
    done: bool = False


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


class IdleReclaim:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._clocks: dict[tuple[str, str], _JobClock] = {}

    def policy_for(self, job: JobDetail) -> IdlePolicy:
        return self.config.idle_policy_for(qos=job.qos, partition=job.partition)

    def exemption(self, job: JobDetail) -> str | None:
        """Why the job is never reclaimed, or ``None``."""
        policy = self.policy_for(job)
        if not policy.enabled:
            return "idle reclaim is off for its tier/partition"
        if policy.only_job_names and not any(fnmatch.fnmatchcase(job.name, p) for p in policy.only_job_names):
            return "not in only_job_names (roll-out)"
        if policy.exempt_interactive and job.is_interactive(policy.interactive_names):
            return "interactive job"
        if job.num_nodes > 1 and not policy.include_multi_node:
            return "multi-node job (this agent sees one node)"
        return None

    def idle_for(self, job_id: str, start_time: str, at: float) -> float:
        clock = self._clocks.get((job_id, start_time))
        if clock is None or clock.idle_since is None:
            return 0.0
        return at - clock.idle_since

    def observe(self, at: float, job: JobDetail, utils: list[float] | None) -> list[IdleDecision]:
        """One cycle of one job: ``utils`` are its GPUs' utilizations, ``None`` when not all known."""
        if self.exemption(job) is not None:
            return []
        policy = self.policy_for(job)
        dry_run = self.config.dry_run if policy.dry_run is None else policy.dry_run
        key = (job.job_id, job.start_time)
        clock = self._clocks.setdefault(key, _JobClock())
        if clock.done:
            return []
        if clock.signalled_at is not None:
            if at - clock.signalled_at >= policy.requeue_grace_s:
                clock.done = True
                reason = (
                    f"still running {_minutes(at - clock.signalled_at)} after the checkpoint signal; "
                    "requeued to give its GPUs back"
                )
                return [IdleDecision(IdleStep.REQUEUE, job, self.idle_for(*key, at), reason, dry_run)]
            return []
        if utils is None:
            return []
        max_gap = policy.max_gap_s or 3 * self.config.interval_s
        if clock.last_known is not None and at - clock.last_known > max_gap:
            clock.idle_since = None
            clock.warned.clear()
        clock.last_known = at
        if any(u > 0 for u in utils):
            clock.idle_since = None
            clock.warned.clear()
            return []
        if clock.idle_since is None:
            clock.idle_since = at
        idle = at - clock.idle_since
        gpus = len(utils)
        decisions: list[IdleDecision] = []
        if idle >= policy.act_after_s:
            if job.requeue:
                clock.signalled_at = at
                reason = (
                    f"{gpus} GPU(s) at 0% for {_minutes(idle)} (limit {_minutes(policy.act_after_s)}): "
                    "checkpoint signal USR1 sent; requeued in "
                    f"{_minutes(policy.requeue_grace_s)} if still running"
                )
                decisions.append(IdleDecision(IdleStep.SIGNAL, job, idle, reason, dry_run))
                if policy.requeue_grace_s <= 0:
                    clock.done = True
                    decisions.append(
                        IdleDecision(IdleStep.REQUEUE, job, idle, "requeued right after the signal", dry_run)
                    )
            else:
                clock.done = True
                reason = (
                    f"{gpus} GPU(s) at 0% for {_minutes(idle)} (limit {_minutes(policy.act_after_s)}) "
                    "and the job cannot be requeued: cancelled"
                )
                decisions.append(IdleDecision(IdleStep.CANCEL, job, idle, reason, dry_run))
            return decisions
        for threshold in policy.warn_after_s:
            if idle >= threshold and threshold not in clock.warned:
                clock.warned.add(threshold)
                consequence = "requeued after a checkpoint signal" if job.requeue else "cancelled"
                reason = (
                    f"{gpus} GPU(s) at 0% for {_minutes(idle)}; the job will be {consequence} after "
                    f"{_minutes(policy.act_after_s)} of zero GPU use"
                )
                decisions.append(IdleDecision(IdleStep.WARN, job, idle, reason, dry_run))
        return decisions[-1:]

    def forget(self, present: set[tuple[str, str]]) -> None:
        """Drop the clocks of jobs no longer on the node (ended between samples: silently)."""
        for key in [k for k in self._clocks if k not in present]:
            del self._clocks[key]

    def undo_signal(self, job: JobDetail) -> None:
        """The signal could not be sent: start over rather than requeue a job that was not warned."""
        clock = self._clocks.get((job.job_id, job.start_time))
        if clock is not None:
            clock.signalled_at = None
            clock.done = False
