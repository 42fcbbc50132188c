"""Slurm job and node states as enums, with tolerant parsers.

Slurm prints states in several dialects: ``squeue`` says ``RUNNING``, ``sacct`` may say
``CANCELLED by 0`` or ``CANCELLED+`` (truncated), ``OUT_OF_MEMORY``, and a node may be ``mixed*``
or ``drained~``. The parsers accept all of them and map anything unknown to ``UNKNOWN`` with a
warning instead of guessing.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)


class JobState(enum.Enum):
    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    REQUEUED = "REQUEUED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    REQUEUE_FED = "REQUEUE_FED"
    RESIZING = "RESIZING"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    STOPPED = "STOPPED"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    PREEMPTED = "PREEMPTED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    REVOKED = "REVOKED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        """True when the job will not run again by itself.

        ``PREEMPTED`` is not terminal: a requeueable job preempted by a higher tier goes back to
        the queue under the same id (submitit counted it finished until its #1788).
        """
        return self in _TERMINAL

    @property
    def is_failure(self) -> bool:
        return self in _FAILURE

    @property
    def is_active(self) -> bool:
        """Pending, running, or on its way back to the queue."""
        return not self.is_terminal and self is not JobState.UNKNOWN


_TERMINAL = frozenset(
    {
        JobState.COMPLETED,
        JobState.CANCELLED,
        JobState.FAILED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.OUT_OF_MEMORY,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
        JobState.REVOKED,
    }
)
_FAILURE = _TERMINAL - {JobState.COMPLETED}

# sacct truncates long states to the column width and marks it with "+".
_PREFIXES = sorted((s.value for s in JobState), key=len, reverse=True)


def parse_job_state(text: str) -> JobState:
    """Parse any Slurm rendering of a job state; unknown text gives ``UNKNOWN`` and a warning."""
    raw = text.strip()
    word = raw.split(" ", 1)[0].rstrip("+").upper()
    if not word:
        log.warning("empty Slurm job state")
        return JobState.UNKNOWN
    try:
        return JobState(word)
    except ValueError:
        pass
    if raw.endswith("+"):
        for value in _PREFIXES:
            if value.startswith(word):
                return JobState(value)
    log.warning("unknown Slurm job state %r; treating it as UNKNOWN", text)
    return JobState.UNKNOWN


class NodeState(enum.Enum):
    IDLE = "IDLE"
    MIXED = "MIXED"
    ALLOCATED = "ALLOCATED"
    COMPLETING = "COMPLETING"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"
    DOWN = "DOWN"
    FAIL = "FAIL"
    FAILING = "FAILING"
    FUTURE = "FUTURE"
    INVAL = "INVAL"
    MAINT = "MAINT"
    RESERVED = "RESERVED"
    PLANNED = "PLANNED"
    POWERED_DOWN = "POWERED_DOWN"
    UNKNOWN = "UNKNOWN"

    @property
    def usable(self) -> bool:
        return self in {NodeState.IDLE, NodeState.MIXED, NodeState.ALLOCATED, NodeState.COMPLETING}


_QUEUE_REASONS = frozenset(
    {"BeginTime", "Priority", "Resources", "Dependency", "JobHeldUser", "JobHeldAdmin", "Reservation"}
)
_QUEUE_REASON_PREFIXES = ("QOS", "Assoc", "ReqNodeNotAvail", "Partition", "JobArrayTask", "Nodes_required")


def parse_job_reason(text: str, state: JobState, *, has_nodes: bool) -> str:
    """Slurm's reason for a job's present state, "" when there is none.

    ``None`` and ``(null)`` are no reason. Slurm keeps the last scheduling reason on a job that has
    since run ("BeginTime" after a requeue, "Dependency", "JobArrayTaskLimit": recorded on finished
    jobs of the sandbox), which would read as the reason it completed or failed; once the job has
    been given nodes such a queue reason is dropped. A job that ended without ever running keeps
    it (cancelled while waiting on ``AssocGrpGRES``: why it never ran), and so does any other
    reason (``NonZeroExitCode``, ``TimeLimit``, ``NodeDown``).
    """
    reason = text.strip()
    if reason in {"None", "(null)"}:
        return ""
    if state is JobState.PENDING or not has_nodes:
        return reason
    if reason in _QUEUE_REASONS or reason.startswith(_QUEUE_REASON_PREFIXES):
        return ""
    return reason


_NODE_ALIASES = {
    "ALLOC": NodeState.ALLOCATED,
    "DRAIN": NodeState.DRAINED,
    "DRNG": NodeState.DRAINING,
    "DRAINING": NodeState.DRAINING,
    "COMP": NodeState.COMPLETING,
    "MIX": NodeState.MIXED,
    "RESV": NodeState.RESERVED,
    "UNK": NodeState.UNKNOWN,
    "POWER_DOWN": NodeState.POWERED_DOWN,
}


@dataclass(frozen=True)
class NodeStatus:
    """A node's base state plus the flags Slurm adds (``DRAIN``, ``NOT_RESPONDING``...)."""

    state: NodeState
    flags: frozenset[str]

    @property
    def drained_or_draining(self) -> bool:
        return self.state in {NodeState.DRAINED, NodeState.DRAINING} or "DRAIN" in self.flags

    @property
    def not_responding(self) -> bool:
        return "NOT_RESPONDING" in self.flags


def parse_node_state(text: str) -> NodeStatus:
    """Parse ``sinfo``/``scontrol`` node states: ``mixed*``, ``IDLE+DRAIN``, ``drained~``..."""
    raw = text.strip().upper()
    flags: set[str] = set()
    while raw and raw[-1] in "*~#!%$@^-":
        flags.add(
            {
                "*": "NOT_RESPONDING",
                "~": "POWERED_DOWN",
                "#": "POWERING_UP",
                "%": "POWERING_DOWN",
                "$": "MAINT",
                "@": "REBOOT_REQUESTED",
                "^": "REBOOT_ISSUED",
                "!": "POWER_DOWN_PENDING",
                "-": "PLANNED",
            }[raw[-1]]
        )
        raw = raw[:-1]
    parts = [p for p in raw.split("+") if p]
    if not parts:
        return NodeStatus(NodeState.UNKNOWN, frozenset(flags))
    base, rest = parts[0], parts[1:]
    flags.update(rest)
    state = _NODE_ALIASES.get(base)
    if state is None:
        try:
            state = NodeState(base)
        except ValueError:
            log.warning("unknown Slurm node state %r; treating it as UNKNOWN", text)
            state = NodeState.UNKNOWN
    if state is NodeState.IDLE and "DRAIN" in flags:
        state = NodeState.DRAINED
    elif state in {NodeState.MIXED, NodeState.ALLOCATED} and "DRAIN" in flags:
        state = NodeState.DRAINING
    return NodeStatus(state, frozenset(flags))


@dataclass(frozen=True)
class JobId:
    """A Slurm job id as printed: ``123``, ``123_4`` (array task), ``123_[3-5%2]`` (pending tasks),
    ``123+1`` (heterogeneous component) or ``123.batch`` / ``123.0`` (a step)."""

    job: int
    array_task: int | None = None
    array_pending: str | None = None
    het_offset: int | None = None
    step: str | None = None

    def __str__(self) -> str:
        text = str(self.job)
        if self.array_task is not None:
            text += f"_{self.array_task}"
        elif self.array_pending is not None:
            text += f"_[{self.array_pending}]"
        if self.het_offset is not None:
            text += f"+{self.het_offset}"
        if self.step is not None:
            text += f".{self.step}"
        return text

    @property
    def is_step(self) -> bool:
        return self.step is not None

    @property
    def array_range(self) -> list[int]:
        """The task ids of a pending array record such as ``12_[3-5,9%2]``."""
        if self.array_pending is None:
            return [] if self.array_task is None else [self.array_task]
        spec = self.array_pending.split("%", 1)[0]
        tasks: list[int] = []
        for part in spec.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                step = 1
                if ":" in hi:
                    hi, step_text = hi.split(":", 1)
                    step = int(step_text)
                tasks.extend(range(int(lo), int(hi) + 1, step))
            elif part:
                tasks.append(int(part))
        return tasks


_JOB_ID = re.compile(  # [0-9], not \d (any script's digits); \Z, not $ (a trailing newline)
    r"(?P<job>[0-9]{1,18})"
    r"(?:_(?:(?P<task>[0-9]{1,9})|\[(?P<pending>[0-9,\-:%]+)\]))?"
    r"(?:\+(?P<het>[0-9]{1,9}))?"
    r"(?:\.(?P<step>[A-Za-z0-9_]+))?\Z"
)


def parse_job_id(text: str) -> JobId:
    """Parse a Slurm job id; raises ``ValueError`` naming the text when it is not one."""
    match = _JOB_ID.match(text.strip())
    if match is None:
        raise ValueError(f"not a Slurm job id: {text!r} (expected forms: 123, 123_4, 123_[1-5%2], 123.batch)")
    task = match.group("task")
    het = match.group("het")
    return JobId(
        job=int(match.group("job")),
        array_task=int(task) if task is not None else None,
        array_pending=match.group("pending"),
        het_offset=int(het) if het is not None else None,
        step=match.group("step"),
    )
