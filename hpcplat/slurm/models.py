"""Plain records of what Slurm reports. Backends fill them; nothing here talks to Slurm."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hpcplat.slurm.state import JobState, NodeStatus


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    """``"123"`` for a job or the array's base id for an array."""
    cluster: str | None = None


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    """As Slurm prints it: ``123``, ``123_4``, ``123_[5-9%2]``."""
    name: str
    user: str
    state: JobState
    reason: str = ""
    partition: str = ""
    account: str = ""
    qos: str = ""
    nodes: str = ""
    """The node list (``n[1-2]``); empty while pending."""
    num_nodes: int = 0
    exit_code: int | None = None
    signal: int | None = None
    restarts: int = 0
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    elapsed_s: int | None = None
    time_limit: str = ""
    tres: dict[str, str] = field(default_factory=dict)
    """TRES of the WHOLE job, allocated (or requested, while none is allocated), as sacct's
    ``AllocTRES``: ``{"cpu": "4", "gres/gpu": "8", ...}``. Backends turn per-node counts (squeue's)
    into totals, so a number here means the same whether the job is queued, running or finished."""
    work_dir: str = ""
    stdout_path: str = ""
    stderr_path: str = ""
    comment: str = ""
    """``hpcplat:<run id>`` for jobs hpcplat submitted."""
    raw_state: str = ""

    @property
    def gpus(self) -> int:
        """GPUs of the whole job (all its nodes together)."""
        text = self.tres.get("gres/gpu", "0")
        try:
            return int(text)
        except ValueError:
            return 0

    @property
    def gpus_per_node(self) -> int:
        """GPUs on each of its nodes (``gpus`` shared evenly over ``num_nodes``)."""
        return self.gpus // self.num_nodes if self.num_nodes > 1 else self.gpus


@dataclass(frozen=True)
class NodeInfo:
    name: str
    status: NodeStatus
    cpus: int
    memory_mb: int
    gpus: int
    gpus_used: int = 0
    partitions: tuple[str, ...] = ()
    reason: str = ""
    address: str = ""


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    nodes: str
    max_time_minutes: int | None
    """``None`` means UNLIMITED."""
    default: bool = False
    state: str = "UP"
    allowed_qos: tuple[str, ...] = ()
    """Empty means every QOS is allowed."""
    priority_tier: int = 1
    max_gpus_per_node: int = 0


@dataclass(frozen=True)
class QosInfo:
    name: str
    priority: int
    preempt: tuple[str, ...] = ()
    preempt_mode: str = ""
    grp_tres: str = ""
    max_wall_minutes: int | None = None
    max_tres: str = ""
    """``MaxTRES``: the most one job may hold (``gres/gpu=4,cpu=32``); empty when unlimited."""
    max_tres_per_node: str = ""
    max_tres_per_user: str = ""
    """``MaxTRESPU``: the most all of one user's running jobs in the QOS may hold together."""
    max_tres_per_account: str = ""


@dataclass(frozen=True)
class Association:
    account: str
    user: str
    """Empty for the account's own association."""
    qos: tuple[str, ...] = ()
    default_qos: str = ""
    grp_tres: str = ""
    parent: str = ""
    max_tres: str = ""
    """``MaxTRES``: the most one job may hold; empty when unlimited."""
    max_tres_per_node: str = ""
    max_wall_minutes: int | None = None


@dataclass(frozen=True)
class UsageRecord:
    """One finished or running job's accounting, from ``sacct``."""

    job_id: str
    user: str
    account: str
    qos: str
    state: JobState
    elapsed_s: int
    alloc_tres: dict[str, str]
    start_time: datetime | None = None
    end_time: datetime | None = None

    @property
    def gpus(self) -> int:
        try:
            return int(self.alloc_tres.get("gres/gpu", "0"))
        except ValueError:
            return 0

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.elapsed_s / 3600.0
