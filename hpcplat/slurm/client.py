"""The interface every Slurm backend implements, and the choice of backend.

Two backends: :mod:`hpcplat.slurm.cli_backend` runs Slurm's own commands (sbatch, squeue, sacct,
scontrol, sacctmgr) with fixed, parsable output formats; it works with any Slurm and is the one the
test suite exercises. :mod:`hpcplat.slurm.pyslurm_backend` talks to ``libslurm`` through
``pyslurm`` and is chosen automatically when ``pyslurm`` imports and was built for the running
Slurm's major release.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from hpcplat.slurm.models import (
    Association,
    JobInfo,
    NodeInfo,
    PartitionInfo,
    QosInfo,
    SubmitResult,
    UsageRecord,
)


@runtime_checkable
class SlurmClient(Protocol):
    """What hpcplat needs from Slurm. Every method has a deadline and raises ``SlurmError``."""

    backend_name: str

    def submit(
        self,
        script: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        test_only: bool = False,
    ) -> SubmitResult:
        """Submit a batch script (``#SBATCH`` lines in it) with extra ``sbatch`` arguments."""
        ...

    def jobs(self, job_ids: Iterable[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        """Jobs Slurm's controller still knows (pending, running, recently ended), in ONE call.

        ``job_ids=None`` lists all (or ``user``'s); unknown ids are simply absent from the answer.
        """
        ...

    def history(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        user: str | None = None,
        since: datetime | None = None,
        all_attempts: bool = False,
    ) -> list[JobInfo]:
        """Jobs from accounting (``sacct -X``), in ONE call, including long-finished ones.

        ``all_attempts`` adds one record per requeued attempt (``sacct --duplicates``), in order,
        with ``restarts`` numbering them."""
        ...

    def cancel(
        self,
        job_ids: Sequence[str],
        *,
        signal: str | None = None,
        batch_only: bool = False,
        full: bool = False,
    ) -> None:
        """``scancel``; with ``signal`` only signals (``full``: the batch shell and every step)."""
        ...

    def requeue(self, job_ids: Sequence[str], *, hold: bool = False) -> None: ...

    def signal(self, job_id: str, signal: str, *, batch_only: bool = False, full: bool = False) -> None: ...

    def job_details(self, job_id: str) -> dict[str, str]:
        """Every field Slurm's controller holds for one job (Requeue, Restarts, BatchFlag...)."""
        ...

    def job_paths(self, job_id: str) -> dict[str, str]:
        """``WorkDir``, ``StdOut``, ``StdErr``, ``StdIn`` of a job the controller still holds
        (patterns expanded); ``{}`` when it no longer does."""
        ...

    def nodes(self) -> list[NodeInfo]: ...

    def update_node(self, node: str, *, state: str, reason: str | None = None) -> None:
        """``scontrol update nodename=... state=drain|resume reason=...``"""
        ...

    def partitions(self) -> list[PartitionInfo]: ...

    def qos(self) -> list[QosInfo]: ...

    def associations(self, *, user: str | None = None, accounts: Sequence[str] = ()) -> list[Association]:
        """Associations (``sacctmgr show associations``): ``user``'s only, or those of ``accounts``
        (each account's own, with an empty ``user``, and its users')."""
        ...

    def usage(
        self,
        *,
        since: datetime,
        until: datetime | None = None,
        accounts: Sequence[str] = (),
        users: Sequence[str] = (),
    ) -> list[UsageRecord]: ...

    def config(self) -> dict[str, str]:
        """``scontrol show config`` as a dict (MaxArraySize, SLURM_VERSION, ...)."""
        ...

    def job_gpu_indices(self, job_id: str) -> dict[str, list[int]]:
        """Which GPU indices (GRES ``IDX``) the job holds on each of its nodes."""
        ...


BACKENDS = ("auto", "cli", "pyslurm")
"""The values ``HPCPLAT_SLURM_BACKEND`` (or ``get_client(backend=...)``) may take."""


def get_client(*, backend: str | None = None) -> SlurmClient:
    """The backend named by ``backend`` or ``HPCPLAT_SLURM_BACKEND`` (``cli``/``pyslurm``), else
    pyslurm when it imports and matches the running Slurm, else the CLI backend."""
    choice = backend or os.environ.get("HPCPLAT_SLURM_BACKEND") or "auto"
    if choice not in BACKENDS:
        from hpcplat.errors import UsageError

        named = f"backend {choice!r}" if backend else f"HPCPLAT_SLURM_BACKEND={choice!r}"
        raise UsageError(
            f"unknown Slurm backend: {named}; allowed: {', '.join(BACKENDS)}",
            hint="set HPCPLAT_SLURM_BACKEND to cli or pyslurm, or unset it to choose automatically",
        )
    if choice in ("auto", "pyslurm"):
        from hpcplat.slurm import pyslurm_backend

        reason = pyslurm_backend.unavailable_reason()
        if reason is None:
            return pyslurm_backend.PyslurmBackend()
        if choice == "pyslurm":
            from hpcplat.errors import UsageError

            raise UsageError(
                f"the pyslurm backend was asked for but cannot be used: {reason}",
                hint="unset HPCPLAT_SLURM_BACKEND to use the Slurm command-line backend",
            )
    from hpcplat.slurm.cli_backend import CliBackend

    return CliBackend()
