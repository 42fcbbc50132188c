"""What the submission layer hands the catalog before it runs ``sbatch`` (pure stdlib)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunIntent:
    """Everything recorded about a run at submit time, in one transaction.

    ``datasets`` holds ``(name, version)`` pairs (version ``"latest"`` or ``""`` picks the newest);
    ``provenance`` is what :func:`hpcplat.provenance.capture` returned; ``slurm_request`` is the
    resolved request (partition, qos, account, gres, time, ...; a ``job_dir`` key, when present,
    tells reconciliation where the job's metric spool lives).
    """

    name: str
    owner: str
    team: str
    tier: str = ""
    tags: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    datasets: list[tuple[str, str]] = field(default_factory=list)
    sbatch_script: str = ""
    slurm_request: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    """The run's id when the submitter chose it (a UUID), so that ``sbatch_script`` can carry it;
    ``None``: the catalog assigns one."""
