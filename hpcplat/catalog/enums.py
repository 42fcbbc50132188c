"""States and kinds stored in the catalog, as string-valued enums (pure stdlib, cheap import)."""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    """Where a run stands. ``SUBMITTING`` is written before ``sbatch`` runs; ``confirm_submission``
    moves it to ``QUEUED``, ``abandon_intent`` to ``NOT_SUBMITTED``; reconciliation follows Slurm."""

    SUBMITTING = "SUBMITTING"
    NOT_SUBMITTED = "NOT_SUBMITTED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    REQUEUED = "REQUEUED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_RUN

    @property
    def is_active(self) -> bool:
        """Has (or may still get) a Slurm job that is not finished."""
        return self in {RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.REQUEUED}


_TERMINAL_RUN = frozenset(
    {RunStatus.NOT_SUBMITTED, RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
)


class EventKind(enum.StrEnum):
    """What an :class:`~hpcplat.catalog.models.Event` records."""

    SUBMITTED = "SUBMITTED"
    SUBMIT_FAILED = "SUBMIT_FAILED"
    STATE = "STATE"
    REQUEUED = "REQUEUED"
    PREEMPTED = "PREEMPTED"
    CHECKPOINT = "CHECKPOINT"
    IDLE_WARNING = "IDLE_WARNING"
    IDLE_RECLAIM = "IDLE_RECLAIM"
    POLICY = "POLICY"
    NODE = "NODE"
    RECONCILE = "RECONCILE"
    NOTE = "NOTE"

    @classmethod
    def parse(cls, value: EventKind | str) -> EventKind:
        if isinstance(value, EventKind):
            return value
        try:
            return cls(value.strip().upper())
        except ValueError:
            allowed = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown event kind {value!r}; allowed: {allowed}") from None


class ArtifactKind(enum.StrEnum):
    CHECKPOINT = "CHECKPOINT"
    MODEL = "MODEL"
    LOG = "LOG"
    PLOT = "PLOT"
    OTHER = "OTHER"

    @classmethod
    def parse(cls, value: ArtifactKind | str) -> ArtifactKind:
        if isinstance(value, ArtifactKind):
            return value
        try:
            return cls(value.strip().upper())
        except ValueError:
            allowed = ", ".join(k.value.lower() for k in cls)
            raise ValueError(f"unknown artifact kind {value!r}; allowed: {allowed}") from None
