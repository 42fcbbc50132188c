"""What Slurm says about this node: the jobs on it (with their GPU indices) and its own state.

Cost per poll: one ``squeue -w NODE`` (all jobs of the node, one RPC), plus one
``scontrol show job -d JOB`` per job the agent has not seen yet (a job's GPUs, owner, requeue and
batch flags do not change while it runs, so the answer is cached by job id and start time).

``scontrol show job -d`` is read in its multi-line form because values there may hold spaces
(``JobName``, ``StdOut``, ``Comment`` end their line); the one-line ``-o`` form cannot be split
reliably.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from hpcplat.errors import CommandError, SlurmError
from hpcplat.runner import Runner, run
from hpcplat.slurm.parse import (
    expand_hostlist,
    gres_gpu_count,
    parse_gpu_indices,
    parse_show_job,
    run_id_from_comment,
    tres_gpu_count,
)
from hpcplat.slurm.state import JobState, NodeStatus, parse_job_state, parse_node_state
from node_agent import DRAIN_REASON_PREFIX

log = logging.getLogger(__name__)

SEP = "\x1f"
_SQUEUE_FORMAT = SEP.join(["%A", "%T", "%S", "%D"])


@dataclass(frozen=True)
class JobDetail:
    """One ``scontrol show job -d`` record."""

    job_id: str
    name: str
    user: str
    uid: int | None
    state: JobState
    partition: str
    qos: str
    account: str
    nodes: tuple[str, ...]
    num_nodes: int
    requeue: bool
    batch: bool
    restarts: int
    start_time: str
    stdout_path: str
    comment: str
    gpus_by_node: Mapping[str, tuple[int, ...]]
    gpu_count: int
    """GPUs in the job's TRES (``gres/gpu=N``): with ``gpus_by_node`` empty, the indices are unknown."""

    @property
    def run_id(self) -> str | None:
        """The hpcplat run id from ``--comment=hpcplat:<run id>``."""
        return run_id_from_comment(self.comment)

    def gpus_known(self, node: str) -> bool:
        return self.gpu_count == 0 or node in self.gpus_by_node

    def is_interactive(self, names: tuple[str, ...]) -> bool:
        """No batch script (salloc, ``srun --pty``) or a name interactive sessions use."""
        return not self.batch or self.name in names


def parse_job_detail(text: str) -> JobDetail:
    """Parse the multi-line ``scontrol show job -d`` output of ONE job
    (:func:`hpcplat.slurm.parse.parse_show_job`)."""
    kv = parse_show_job(text)
    gpus = {node: tuple(indices) for node, indices in parse_gpu_indices(text).items()}
    user_field = kv.get("UserId", "")
    user_match = re.match(r"([^()]*)\((\d+)\)", user_field)
    return JobDetail(
        job_id=kv.get("JobId", ""),
        name=kv.get("JobName", ""),
        user=user_match.group(1) if user_match else user_field,
        uid=int(user_match.group(2)) if user_match else None,
        state=parse_job_state(kv.get("JobState", "UNKNOWN")),
        partition=kv.get("Partition", ""),
        qos=kv.get("QOS", ""),
        account=kv.get("Account", ""),
        nodes=tuple(expand_hostlist(kv.get("NodeList", ""))),
        num_nodes=int(kv["NumNodes"]) if kv.get("NumNodes", "").isdigit() else 0,
        requeue=kv.get("Requeue") == "1",
        batch=kv.get("BatchFlag") == "1",
        restarts=int(kv["Restarts"]) if kv.get("Restarts", "").isdigit() else 0,
        start_time=kv.get("StartTime", ""),
        stdout_path=kv.get("StdOut", ""),
        comment=kv.get("Comment", ""),
        gpus_by_node=gpus,
        gpu_count=tres_gpu_count(kv.get("TRES", "")),
    )


@dataclass(frozen=True)
class NodeJobs:
    """The jobs Slurm has on this node, from one poll."""

    node: str
    polled_at: float
    """``time.monotonic()`` of the poll."""
    jobs: Mapping[str, JobDetail] = field(default_factory=dict)

    @property
    def ids(self) -> set[str]:
        return set(self.jobs)

    def holders(self) -> dict[int, str]:
        """GRES index → job id, for jobs whose indices are known."""
        out: dict[int, str] = {}
        for job in self.jobs.values():
            for index in job.gpus_by_node.get(self.node, ()):
                out[index] = job.job_id
        return out

    def any_unknown_gpus(self) -> bool:
        return any(not job.gpus_known(self.node) for job in self.jobs.values())


@dataclass(frozen=True)
class NodeView:
    """The node as Slurm sees it: state, drain reason, configured GPUs."""

    name: str
    status: NodeStatus
    reason: str
    gpus: int

    @property
    def drained(self) -> bool:
        return self.status.drained_or_draining

    @property
    def drained_by_agent(self) -> bool:
        return self.drained and self.reason.startswith(DRAIN_REASON_PREFIX)


class JobGone:
    """``scontrol show job`` says the job does not exist (any more)."""


JOB_GONE = JobGone()


class SlurmView:
    """Polls Slurm for one node; every failure is logged once and answered with ``None``."""

    def __init__(
        self,
        node: str,
        *,
        runner: Runner = run,
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.node = node
        self._run = runner
        self.timeout = timeout
        self.env = dict(env) if env is not None else None
        self._details: dict[tuple[str, str], JobDetail] = {}
        self._failing = False
        self.calls = 0

    def _call(self, argv: list[str]) -> str:
        self.calls += 1
        result = self._run(argv, timeout=self.timeout, env=self.env, error=SlurmError)
        return result.stdout

    def _failed(self, what: str, exc: CommandError) -> None:
        if not self._failing:
            log.error(
                "Slurm unreachable (%s): %s; sampling goes on, no job is attributed or acted on "
                "until it answers",
                what,
                exc.message,
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.warning("Slurm answers again")
        self._failing = False

    def poll(self) -> NodeJobs | None:
        """The jobs on this node, or ``None`` when Slurm could not be asked."""
        argv = [
            "squeue",
            "-h",
            "-w",
            self.node,
            "-t",
            "RUNNING,COMPLETING,SUSPENDED,CONFIGURING",
            "-o",
            _SQUEUE_FORMAT,
        ]
        try:
            text = self._call(argv)
        except CommandError as exc:
            self._failed("squeue", exc)
            return None
        jobs: dict[str, JobDetail] = {}
        live_keys: set[tuple[str, str]] = set()
        for line in text.splitlines():
            parts = line.split(SEP)
            if len(parts) < 4 or not parts[0].strip():
                continue
            job_id, start = parts[0].strip(), parts[2].strip()
            key = (job_id, start)
            live_keys.add(key)
            detail = self._details.get(key)
            if detail is None:
                found = self.job(job_id)
                if found is None:
                    return None
                if isinstance(found, JobGone):
                    continue  # ended between the two calls
                detail = found
                self._details[key] = detail
            jobs[job_id] = detail
        for key in [k for k in self._details if k not in live_keys]:
            del self._details[key]
        self._recovered()
        return NodeJobs(node=self.node, polled_at=time.monotonic(), jobs=jobs)

    def job(self, job_id: str) -> JobDetail | JobGone | None:
        """A fresh ``scontrol show job -d``: the job, :data:`JOB_GONE`, or ``None`` (no answer)."""
        try:
            text = self._call(["scontrol", "show", "job", "-d", job_id])
        except CommandError as exc:
            if "Invalid job id" in (exc.stderr or "") or "Invalid job id" in exc.message:
                return JOB_GONE
            self._failed("scontrol show job", exc)
            return None
        if not text.strip().startswith("JobId="):
            return JOB_GONE
        return parse_job_detail(text)

    def listpids(self) -> dict[int, str] | None:
        """pid → job id of every process slurmstepd tracks for this node's jobs, or ``None``.

        ``scontrol listpids '*' NODE`` asks the node's slurmstepds over their local sockets
        (no slurmctld RPC); the node name matters where several slurmd share one host.
        """
        try:
            text = self._call(["scontrol", "listpids", "*", self.node])
        except CommandError as exc:
            if "No job steps exist on this node" in f"{exc.stderr or ''} {exc.message}":
                return {}
            self._failed("scontrol listpids", exc)
            return None
        return parse_listpids(text)

    def node_view(self) -> NodeView | None:
        try:
            text = self._call(["scontrol", "-o", "show", "node", self.node])
        except CommandError as exc:
            self._failed("scontrol show node", exc)
            return None
        return parse_node_line(text, self.node)


def parse_listpids(text: str) -> dict[int, str]:
    """``scontrol listpids`` output (``PID JOBID STEPID LOCALID GLOBALID``) as pid → job id.

    An array task is listed under its own job id; a heterogeneous job component as ``J+C``,
    counted as job ``J``.
    """
    out: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue  # the header, or anything unexpected
        job = parts[1].split("+", 1)[0].split("_", 1)[0]
        if job.isdigit():
            out[int(parts[0])] = job
    return out


def parse_node_line(text: str, node: str) -> NodeView | None:
    """One ``scontrol -o show node NODE`` line (``Reason=`` is the last field and may hold spaces)."""
    line = next((ln for ln in text.splitlines() if ln.startswith(f"NodeName={node} ")), None)
    if line is None:
        return None
    reason = ""
    if " Reason=" in line:
        line, reason = line.split(" Reason=", 1)
        reason = re.sub(r"\s*\[[^\]]*@[^\]]*\]\s*$", "", reason.strip())
    kv: dict[str, str] = {m.group(1): m.group(2) for m in re.finditer(r"(\S+?)=(\S*)", line)}
    gpus = gres_gpu_count(kv.get("Gres", ""))
    return NodeView(name=node, status=parse_node_state(kv.get("State", "UNKNOWN")), reason=reason, gpus=gpus)
