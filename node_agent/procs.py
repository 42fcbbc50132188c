"""The node's processes as the agent needs them: CPU time, RSS and the Slurm job each belongs to.

Read straight from ``/proc`` (no psutil): ``/proc/<pid>/stat`` for CPU ticks, RSS and start time,
``/proc/<pid>/environ`` for ``SLURM_JOB_ID``, ``SLURMD_NODENAME`` and ``HPCPLAT_JOB_DIR``. A
process's initial environment never changes, so it is read once per (pid, start time) and cached;
each scan costs one ``stat`` read per process.

``SLURMD_NODENAME`` tells which Slurm node a job process belongs to: on a real cluster there is one
node per host, but the sandbox runs several slurmd on one host, and the agent of node ``n1`` must
not take ``n2``'s processes for its own.

The environment is the process's own word, which its user controls: it is a *claim*. Which job a
process really belongs to is Slurm's own accounting (:attr:`ProcSnapshot.slurm_jobs`, filled by
:mod:`node_agent.membership` from the job's cgroup or ``scontrol listpids``); the claims serve
only as a last resort, for jobs Slurm no longer tracks (what a finished job left behind).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_ENV_KEYS = (b"SLURM_JOB_ID", b"SLURMD_NODENAME", b"HPCPLAT_JOB_DIR")


@dataclass(frozen=True)
class ProcEnv:
    job_id: str | None
    node: str | None
    job_dir: str | None
    readable: bool
    """False when the environment could not be read (not root): the job is then unknown."""


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    start_ticks: int
    """Start time in clock ticks after boot: (pid, start_ticks) names a process uniquely."""
    uid: int
    comm: str
    state: str
    cpu_ticks: int
    """utime + stime."""
    rss_kb: int
    env: ProcEnv
    cgroup_job: str | None = None
    """The Slurm job whose cgroup holds the process (``/proc/<pid>/cgroup``), when Slurm uses cgroups."""

    @property
    def job_id(self) -> str | None:
        """The job the process's environment claims (``SLURM_JOB_ID``): not proof of anything."""
        return self.env.job_id

    def on_node(self, node: str) -> bool:
        """The environment claims a Slurm job of ``node`` (by its ``SLURMD_NODENAME``)."""
        return self.env.job_id is not None and self.env.node == node


@dataclass(frozen=True)
class ProcSnapshot:
    at: float
    """``CLOCK_BOOTTIME`` seconds of the scan: comparable with a process's start time."""
    procs: dict[int, ProcInfo]
    slurm_jobs: Mapping[int, str] | None = None
    """pid → job id of this node's job processes by Slurm's own accounting (the job's cgroup or
    ``scontrol listpids``); ``None`` when Slurm's view could not be had."""

    def job_of(self, pid: int) -> str | None:
        """The job Slurm counts ``pid`` in, or ``None`` (not a job process, or not known)."""
        return self.slurm_jobs.get(pid) if self.slurm_jobs is not None else None

    def of_job(self, job_id: str) -> list[ProcInfo]:
        """The job's processes on this node, by Slurm's accounting."""
        jobs = self.slurm_jobs or {}
        return [p for p in self.procs.values() if jobs.get(p.pid) == job_id]

    def jobs(self) -> set[str]:
        """The jobs with at least one process on this node, by Slurm's accounting."""
        return {job for pid, job in (self.slurm_jobs or {}).items() if pid in self.procs}

    def claiming(self, job_id: str, node: str) -> list[ProcInfo]:
        """The processes whose environment claims ``job_id`` on ``node`` (a user can lie)."""
        return [p for p in self.procs.values() if p.env.job_id == job_id and p.env.node == node]

    def claimed_jobs(self, node: str) -> set[str]:
        """The jobs claimed by the environments of processes on ``node`` (a user can lie)."""
        return {p.env.job_id for p in self.procs.values() if p.env.job_id is not None and p.env.node == node}

    def get(self, pid: int) -> ProcInfo | None:
        return self.procs.get(pid)


def parse_stat(text: str) -> tuple[str, str, int, int, int, int]:
    """``(comm, state, ppid, cpu_ticks, start_ticks, rss_pages)`` from ``/proc/<pid>/stat``.

    The command name sits in parentheses and may itself hold spaces and parentheses, so the
    fields are split after the last ``)``.
    """
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    state = rest[0]
    ppid = int(rest[1])
    utime, stime = int(rest[11]), int(rest[12])
    start = int(rest[19])
    rss = int(rest[21])
    return comm, state, ppid, utime + stime, start, rss


_CGROUP_V1 = re.compile(r"^/slurm(?:_(?P<node>[^/]+))?/uid_\d+/job_(?P<job>\d+)(?:/|$)")
_CGROUP_V2 = re.compile(r"^/system\.slice/(?:(?P<node>[^/]+)_)?slurmstepd\.scope/job_(?P<job>\d+)(?:/|$)")


def parse_cgroup(text: str, node: str) -> str | None:
    """The Slurm job whose cgroup holds a process, from ``/proc/<pid>/cgroup``, or ``None``.

    Only Slurm's own hierarchies count, which only root can place a process in: cgroup v1
    ``/slurm[_NODE]/uid_U/job_J/...`` and cgroup v2 ``/system.slice/[NODE_]slurmstepd.scope/job_J/...``
    (a user's delegated cgroup v2 subtree lives under ``/user.slice`` and can be named anything).
    A hierarchy named after another node (several slurmd on one host) is not this node's.
    """
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        match = _CGROUP_V1.match(path) or _CGROUP_V2.match(path)
        if match is None:
            continue
        owner = match.group("node")
        if owner is not None and owner != node:
            return None
        return match.group("job")
    return None


def parse_environ(data: bytes) -> ProcEnv:
    found: dict[bytes, str] = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key in _ENV_KEYS:
            found[key] = value.decode("utf-8", "replace")
    return ProcEnv(
        job_id=found.get(b"SLURM_JOB_ID") or None,
        node=found.get(b"SLURMD_NODENAME") or None,
        job_dir=found.get(b"HPCPLAT_JOB_DIR") or None,
        readable=True,
    )


class ProcessTable:
    """Scans ``/proc``; keeps each process's parsed environment until the process goes."""

    def __init__(self, root: str = "/proc", *, node: str = "") -> None:
        self.root = root
        self.node = node
        """This Slurm node's name: a cgroup of another node's slurmd is not this node's job."""
        self._env: dict[tuple[int, int], ProcEnv] = {}
        self._uid: dict[tuple[int, int], int] = {}
        self._cgroup: dict[tuple[int, int], str | None] = {}

    def _pids(self) -> Iterator[int]:
        try:
            names = os.listdir(self.root)
        except OSError as exc:
            log.error("cannot list %s: %s", self.root, exc)
            return
        for name in names:
            if name.isdigit():
                yield int(name)

    def _read_env(self, pid: int) -> ProcEnv:
        try:
            with open(f"{self.root}/{pid}/environ", "rb") as handle:
                return parse_environ(handle.read())
        except PermissionError:
            return ProcEnv(None, None, None, readable=False)
        except OSError:
            return ProcEnv(None, None, None, readable=False)

    def _read_cgroup(self, pid: int) -> str | None:
        try:
            with open(f"{self.root}/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
                return parse_cgroup(handle.read(), self.node)
        except OSError:
            return None

    def read(self, pid: int) -> ProcInfo | None:
        """One process, or ``None`` when it is gone (or is a kernel thread without a stat)."""
        try:
            with open(f"{self.root}/{pid}/stat", encoding="utf-8", errors="replace") as handle:
                comm, state, ppid, cpu, start, rss = parse_stat(handle.read())
        except (OSError, ValueError, IndexError):
            return None
        key = (pid, start)
        env = self._env.get(key)
        if env is None:
            env = self._read_env(pid)
            self._env[key] = env
        uid = self._uid.get(key)
        if uid is None:
            try:
                uid = os.stat(f"{self.root}/{pid}").st_uid
            except OSError:
                return None
            self._uid[key] = uid
        if key in self._cgroup:
            cgroup_job = self._cgroup[key]
        else:
            cgroup_job = self._cgroup[key] = self._read_cgroup(pid)
        return ProcInfo(pid, ppid, start, uid, comm, state, cpu, rss * PAGE_KB, env, cgroup_job)

    def scan(self) -> ProcSnapshot:
        now = boot_time()
        procs: dict[int, ProcInfo] = {}
        for pid in self._pids():
            info = self.read(pid)
            if info is not None:
                procs[pid] = info
        live = {(p.pid, p.start_ticks) for p in procs.values()}
        for key in [k for k in self._env if k not in live]:
            del self._env[key]
            self._uid.pop(key, None)
            self._cgroup.pop(key, None)
        return ProcSnapshot(at=now, procs=procs)

    def holders_of(self, paths: Iterable[str], pids: Iterable[int]) -> dict[str, set[int]]:
        """Which of ``pids`` hold one of ``paths`` open (``/proc/<pid>/fd`` links)."""
        wanted = {os.path.realpath(p): p for p in paths}
        found: dict[str, set[int]] = {p: set() for p in wanted.values()}
        for pid in pids:
            fd_dir = f"{self.root}/{pid}/fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if target in wanted:
                    found[wanted[target]].add(pid)
        return found


def boot_time() -> float:
    """Seconds since boot (``CLOCK_BOOTTIME``), the clock of ``/proc/<pid>/stat`` start times."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def identity(pid: int, root: str = "/proc") -> tuple[str, tuple[int, ...]] | None:
    """``(executable, uids)`` of a process, read now; ``None`` when it is gone or unreadable.

    The executable is ``/proc/<pid>/exe`` resolved (a path only whoever could write there chose;
    `` (deleted)`` is dropped, as after a package upgrade); the uids are the real, effective,
    saved and filesystem uids of ``/proc/<pid>/status`` (the owner of ``/proc/<pid>`` is not used:
    a process can make it root by turning itself non-dumpable).
    """
    try:
        exe = os.readlink(f"{root}/{pid}/exe")
        with open(f"{root}/{pid}/status", encoding="utf-8", errors="replace") as handle:
            status = handle.read()
    except OSError:
        return None
    exe = exe.removesuffix(" (deleted)")
    for line in status.splitlines():
        if line.startswith("Uid:"):
            try:
                return exe, tuple(int(v) for v in line.split()[1:])
            except ValueError:
                return None
    return None


def still_running(pid: int, start_ticks: int, root: str = "/proc") -> bool:
    """The process ``(pid, start_ticks)`` has not exited (and its pid was not reused)."""
    try:
        with open(f"{root}/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            _comm, state, _ppid, _cpu, start, _rss = parse_stat(handle.read())
    except (OSError, ValueError, IndexError):
        return False
    return start == start_ticks and state not in ("Z", "X")


def ancestors(pid: int, snapshot: ProcSnapshot) -> set[int]:
    """``pid`` and its ancestors: processes the agent must never signal."""
    seen: set[int] = set()
    current: int | None = pid
    while current and current not in seen:
        seen.add(current)
        info = snapshot.get(current)
        current = info.ppid if info is not None else None
    return seen
