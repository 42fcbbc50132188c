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

Slurm's own count comes first (:mod:`node_agent.membership`): a process Slurm counts in a job
running on the node is never a candidate, whatever its environment says, and one Slurm counts in
a job that is not running here is a candidate of that job.

Never signalled: the agent itself and its ancestors, PID 1, zombies, and the daemons of Slurm,
munge and systemd. A daemon is recognised by what its user cannot forge (:class:`Daemons`), never
by its command name (``comm``, which any process can set): its executable (``/proc/<pid>/exe``
resolved) is one of those daemons' installed, root-owned binaries, and all its uids are root's or
the ``slurm`` / ``munge`` users'. A copy of a program named ``slurmd`` is not protected.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from node_agent.config import OrphanPolicy
from node_agent.procs import ProcInfo, ProcSnapshot, ancestors, identity
from node_agent.slurm_view import NodeJobs

log = logging.getLogger(__name__)

DAEMON_NAMES = ("slurmd", "slurmstepd", "slurmctld", "slurmdbd", "munged", "systemd", "init")
"""The protected daemons, looked up by these names in :data:`SYSTEM_DIRS` and Slurm's own prefix."""
SYSTEM_DIRS = (
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/lib/systemd",
    "/usr/lib/systemd",
)
DAEMON_USERS = ("slurm", "munge")


def _trusted_binary(path: str) -> str | None:
    """``path`` resolved, if it is a root-owned regular file nobody else can write to."""
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
        parent = os.stat(os.path.dirname(real))
    except OSError:
        return None
    writable_by_others = stat.S_IWGRP | stat.S_IWOTH
    if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_mode & writable_by_others:
        return None
    if parent.st_uid != 0 or parent.st_mode & writable_by_others:
        return None
    return real


def daemon_binaries(dirs: Iterable[str] | None = None) -> frozenset[str]:
    """The resolved paths of the installed daemon binaries: the system directories, and the
    ``bin`` / ``sbin`` of the Slurm installation whose ``scontrol`` the agent runs."""
    where = list(SYSTEM_DIRS if dirs is None else dirs)
    if dirs is None:
        scontrol = shutil.which("scontrol")
        if scontrol:
            prefix = os.path.dirname(os.path.dirname(os.path.realpath(scontrol)))
            where += [os.path.join(prefix, "sbin"), os.path.join(prefix, "bin")]
    found = set()
    for directory in where:
        for name in DAEMON_NAMES:
            real = _trusted_binary(os.path.join(directory, name))
            if real is not None:
                found.add(real)
    return frozenset(found)


def daemon_uids() -> frozenset[int]:
    uids = {0}
    for name in DAEMON_USERS:
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            continue
    return frozenset(uids)


class Daemons:
    """Recognises the system's daemons by executable and uids (see the module documentation)."""

    def __init__(
        self,
        binaries: frozenset[str] | None = None,
        uids: frozenset[int] | None = None,
        *,
        identity: Callable[[int], tuple[str, tuple[int, ...]] | None] = identity,
    ) -> None:
        self.binaries = daemon_binaries() if binaries is None else binaries
        self.uids = daemon_uids() if uids is None else uids
        self._identity = identity

    def identity(self, pid: int) -> tuple[str, tuple[int, ...]] | None:
        return self._identity(pid)

    def is_daemon(self, pid: int) -> bool:
        """True for a daemon; False otherwise, and when the process is gone or unreadable."""
        found = self._identity(pid)
        if found is None:
            return False
        exe, uids = found
        return exe in self.binaries and bool(uids) and all(uid in self.uids for uid in uids)


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
    def __init__(
        self, policy: OrphanPolicy, node: str, *, self_pid: int | None = None, daemons: Daemons | None = None
    ) -> None:
        self.policy = policy
        self.node = node
        self.self_pid = self_pid or os.getpid()
        self.daemons = daemons or Daemons()
        self._seen: dict[tuple[int, int], _Seen] = {}

    def _classify(
        self, proc: ProcInfo, on_gpu: bool, running: set[str], counted: str | None
    ) -> OrphanCandidate | None:
        if counted is not None and counted in running:
            return None  # Slurm counts it in a job running here, whatever its environment says
        job = counted or proc.env.job_id
        if counted is None and job is not None and job in running:
            # It claims a running job that Slurm does not count it in: not that job's, and not a
            # leftover either (membership reports the false claim); on a GPU, it is unattributed.
            job = None
            if not on_gpu:
                return None
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
        if not on_gpu and counted is None and proc.env.node != self.node:
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
        if procs.slurm_jobs is None:
            return [], []  # without Slurm's count of the node's processes nothing is certain
        protected = ancestors(self.self_pid, procs) | {1}
        running = jobs.ids
        current: dict[tuple[int, int], OrphanCandidate] = {}
        for proc in procs.procs.values():
            if proc.pid in protected or proc.state == "Z":
                continue
            candidate = self._classify(proc, proc.pid in gpu_pids, running, procs.job_of(proc.pid))
            if candidate is not None and not self.daemons.is_daemon(proc.pid):
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
