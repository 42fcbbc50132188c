"""Which Slurm job each process of the node belongs to, by Slurm's own accounting.

A process's ``SLURM_JOB_ID`` is its user's word: anyone can export another job's id. The agent
attributes a process to a job only as Slurm counts it:

1. the job's cgroup (``/proc/<pid>/cgroup``, under Slurm's own hierarchy), where Slurm uses
   cgroups (``proctrack/cgroup``);
2. otherwise ``scontrol listpids '*' NODE``: the processes each slurmstepd of the node tracks
   (with ``proctrack/linuxproc`` these are the descendants of the step), asked at every Slurm poll
   and again when a process that is not yet known claims a job of the node;
3. a process started since the last ``listpids`` whose parent is counted in job J is J's too
   (how both Slurm's cgroups and its process tracking count children).

Every process whose claim contradicts Slurm's count is reported once (:class:`Mismatch`): one that
Slurm counts in another job, and one that claims a job running on the node that Slurm does not
count it in (with ``proctrack/linuxproc``: a process that left the job's process tree, which Slurm
will not clean up either). Neither is attributed to the job it claims. A process Slurm does not
count whose claimed job is *not* running here any more is left to the orphan policy: for a finished
job the environment is all there is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from node_agent.procs import ProcInfo, ProcSnapshot, still_running
from node_agent.slurm_view import SlurmView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mismatch:
    """A process whose ``SLURM_JOB_ID`` contradicts Slurm's count."""

    pid: int
    start_ticks: int
    uid: int
    comm: str
    claimed: str
    actual: str | None
    """The job Slurm counts the process in; ``None``: in no job."""

    @property
    def reason(self) -> str:
        where = f"Slurm counts it in job {self.actual}" if self.actual else "Slurm does not count it there"
        return (
            f"process {self.pid} ({self.comm}, uid {self.uid}) claims job {self.claimed} in its "
            f"environment, but {where}: not attributed to job {self.claimed}"
        )


class Membership:
    """Keeps Slurm's count of the node's job processes and applies it to each scan."""

    def __init__(
        self, node: str, view: SlurmView, *, alive: Callable[[int, int], bool] = still_running
    ) -> None:
        self.node = node
        self.view = view
        self._alive = alive
        self._tracked: dict[tuple[int, int], str] = {}
        """(pid, start ticks) → job, from the last ``listpids`` and inherited by children since."""
        self._known: set[tuple[int, int]] = set()
        """Every process that existed when ``listpids`` last answered, counted or not."""
        self._ok = False
        self._reported: set[tuple[int, int]] = set()
        self.calls = 0

    def _refresh(self, procs: ProcSnapshot, running: set[str]) -> None:
        self.calls += 1
        pids = self.view.listpids()
        if pids is None:
            self._ok = False
            return
        self._ok = True
        self._tracked = {}
        for pid, job in pids.items():
            info = procs.get(pid)
            if info is not None:
                self._tracked[(pid, info.start_ticks)] = job
        # A process of the scan that ``listpids`` did not list is known to be outside Slurm's count
        # only if it was still there after ``listpids`` answered (a short-lived one may have exited).
        self._known = set()
        for info in procs.procs.values():
            key = (info.pid, info.start_ticks)
            if key in self._tracked or not self._claims(info, running) or self._alive(*key):
                self._known.add(key)

    def _claims(self, info: ProcInfo, running: set[str]) -> bool:
        """Its environment claims a job running on this node."""
        return info.on_node(self.node) and info.env.job_id in running

    def _inherit(self, procs: ProcSnapshot) -> list[ProcInfo]:
        """Count new children of counted processes; return the new processes still unknown."""
        live = {(p.pid, p.start_ticks) for p in procs.procs.values()}
        self._tracked = {k: v for k, v in self._tracked.items() if k in live}
        self._known &= live
        self._reported &= live
        unknown: list[ProcInfo] = []
        for info in sorted(procs.procs.values(), key=lambda p: p.start_ticks):
            key = (info.pid, info.start_ticks)
            if key in self._tracked or key in self._known:
                continue
            parent = procs.get(info.ppid)
            job = self._tracked.get((parent.pid, parent.start_ticks)) if parent is not None else None
            if job is not None and parent is not None and parent.start_ticks <= info.start_ticks:
                self._tracked[key] = job
                self._known.add(key)
            else:
                unknown.append(info)
        return unknown

    def apply(
        self, procs: ProcSnapshot, running: set[str] | None, *, refresh: bool
    ) -> tuple[ProcSnapshot, list[Mismatch]]:
        """``procs`` with Slurm's count (:attr:`ProcSnapshot.slurm_jobs`), and new mismatches.

        ``running``: the jobs Slurm has on the node (``None`` when Slurm did not answer: then
        nothing is counted). ``refresh``: ask ``listpids`` again (at each Slurm poll).
        """
        if running is None:
            return replace(procs, slurm_jobs=None), []
        unknown = self._inherit(procs) if self._ok else []
        claims_unknown = any(p.cgroup_job is None and self._claims(p, running) for p in unknown)
        if refresh or not self._ok or claims_unknown:
            self._refresh(procs, running)
        if not self._ok:
            return replace(procs, slurm_jobs=None), []
        counted: dict[int, str] = {}
        mismatches: list[Mismatch] = []
        for info in procs.procs.values():
            key = (info.pid, info.start_ticks)
            job = info.cgroup_job or self._tracked.get(key)
            if job is not None:
                counted[info.pid] = job
            claim = info.env.job_id
            if claim is None or claim == job or key in self._reported:
                continue
            if job is None and not (info.env.node == self.node and claim in running):
                continue  # a finished job's leftover, or another node's process: the orphan policy's
            if job is None and key not in self._known and info.cgroup_job is None:
                continue  # too new to tell (started after this cycle's listpids)
            self._reported.add(key)
            mismatches.append(Mismatch(info.pid, info.start_ticks, info.uid, info.comm, claim, job))
        return replace(procs, slurm_jobs=counted), mismatches
