"""Orphans: processes that hold a GPU, or were left by a finished job, and belong to no running job.

A process is a candidate when, on this node, either

- it is on one of the node's GPUs (NVML lists it; for emulated GPUs it has the device file open) and
  its ``SLURM_JOB_ID`` names a job not running on the node, or
- its environment says it belongs to a job of this node (``SLURM_JOB_ID`` + ``SLURMD_NODENAME``)
  that is no longer running here.

It is signalled only when certain: it was a candidate on two scans at least ``grace_s`` apart, both
against a fresh, successful Slurm answer, and :mod:`node_agent.actions` confirms with
``scontrol show job`` just before acting that the job is not running on this node. A process on a
GPU with no Slurm job in its environment is reported, and killed only with ``kill_unattributed``.
Never signalled: the agent itself and its ancestors, PID 1, zombies, Slurm's own daemons.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from node_agent.config import OrphanPolicy
from node_agent.procs import ProcInfo, ProcSnapshot, ancestors
from node_agent.slurm_view import NodeJobs

PROTECTED_COMMANDS = frozenset({"slurmd", "slurmstepd", "slurmctld", "slurmdbd", "munged", "systemd", "init"})


@dataclass(frozen=True)
class OrphanCandidate:
    pid: int
    start_ticks: int
    uid: int
    comm: str
    job_id: str | None
    job_dir: str | None
    on_gpu: bool
    reason: str


@dataclass
class _Seen:
    first_at: float
    scans: int
    candidate: OrphanCandidate
    reported: bool = False


class OrphanReaper:
    def __init__(self, policy: OrphanPolicy, node: str, *, self_pid: int | None = None) -> None:
        self.policy = policy
        self.node = node
        self.self_pid = self_pid or os.getpid()
        self._seen: dict[tuple[int, int], _Seen] = {}

    def _classify(self, proc: ProcInfo, on_gpu: bool, running: set[str]) -> OrphanCandidate | None:
        job = proc.env.job_id
        if on_gpu and job is None:
            if not proc.env.readable:
                return None
            return OrphanCandidate(
                proc.pid,
                proc.start_ticks,
                proc.uid,
                proc.comm,
                None,
                None,
                True,
                f"process {proc.pid} ({proc.comm}) uses a GPU of {self.node} and belongs to no Slurm job",
            )
        if job is None or job in running:
            return None
        if not on_gpu and proc.env.node != self.node:
            return None
        where = "holds a GPU" if on_gpu else "is still running"
        return OrphanCandidate(
            proc.pid,
            proc.start_ticks,
            proc.uid,
            proc.comm,
            job,
            proc.env.job_dir,
            on_gpu,
            f"process {proc.pid} ({proc.comm}) of job {job}, which is no longer running on "
            f"{self.node}, {where}",
        )

    def scan(
        self, at: float, jobs: NodeJobs, procs: ProcSnapshot, gpu_pids: set[int]
    ) -> tuple[list[OrphanCandidate], list[OrphanCandidate]]:
        """One scan against a fresh Slurm answer: (candidates due for TERM, new reports only).

        Processes on a GPU without any Slurm job are "reports" unless ``kill_unattributed``.
        """
        protected = ancestors(self.self_pid, procs) | {1}
        running = jobs.ids
        current: dict[tuple[int, int], OrphanCandidate] = {}
        for proc in procs.procs.values():
            if proc.pid in protected or proc.state == "Z" or proc.comm in PROTECTED_COMMANDS:
                continue
            candidate = self._classify(proc, proc.pid in gpu_pids, running)
            if candidate is not None:
                current[(proc.pid, proc.start_ticks)] = candidate
        for key in [k for k in self._seen if k not in current]:
            del self._seen[key]
        due: list[OrphanCandidate] = []
        reports: list[OrphanCandidate] = []
        for key, candidate in current.items():
            seen = self._seen.get(key)
            if seen is None:
                self._seen[key] = seen = _Seen(at, 0, candidate)
            seen.scans += 1
            unattributed = candidate.job_id is None
            if unattributed and not self.policy.kill_unattributed:
                if not seen.reported:
                    seen.reported = True
                    reports.append(candidate)
                continue
            if seen.scans >= 2 and at - seen.first_at >= self.policy.grace_s:
                due.append(candidate)
        return due, reports

    def forget(self, candidate: OrphanCandidate) -> None:
        self._seen.pop((candidate.pid, candidate.start_ticks), None)
