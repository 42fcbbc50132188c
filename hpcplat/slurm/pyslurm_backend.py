"""The pyslurm backend: Slurm's C API through ``pyslurm`` (its new ``pyslurm.Job``/``Jobs`` API).

pyslurm builds only against one Slurm major release (PyPI's 25.11.x against Slurm 25.11). It is
chosen automatically by :func:`hpcplat.slurm.client.get_client` when it imports AND its major
release equals the running Slurm's (``scontrol --version``); otherwise hpcplat uses the CLI backend.

Where it is tested: nowhere in this repository's CI. Debian 12 ships Slurm 22.05, which PyPI's
pyslurm refuses to build against, so the suite exercises the CLI backend only and does not fake
pyslurm. Queries pyslurm answers in-process (jobs, nodes, signals, requeue) use it; everything else
(submission, accounting) goes through the CLI backend so behaviour stays the same.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from hpcplat.errors import CommandError, SlurmError
from hpcplat.runner import run
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.state import parse_job_reason, parse_job_state


def _slurm_major() -> str | None:
    try:
        text = run(["scontrol", "--version"], timeout=10).stdout.split()
    except CommandError:
        return None
    return ".".join(text[-1].split(".")[:2]) if text else None


def unavailable_reason() -> str | None:
    """None when pyslurm can be used here, else why not (in words)."""
    try:
        pyslurm = importlib.import_module("pyslurm")
    except ImportError as exc:
        return f"pyslurm is not installed ({exc})"
    version = str(getattr(pyslurm, "__version__", "") or getattr(pyslurm, "version", lambda: "")())
    slurm = _slurm_major()
    if slurm is None:
        return "the running Slurm's version could not be read (scontrol --version)"
    if ".".join(version.split(".")[:2]) != slurm:
        return f"pyslurm {version} was built for another Slurm release than the running {slurm}"
    return None


def _ts(value: Any) -> datetime | None:
    if value in (None, 0):
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromtimestamp(int(value))
    except (TypeError, ValueError, OSError):
        return None


class PyslurmBackend(CliBackend):
    """:class:`~hpcplat.slurm.client.SlurmClient` through pyslurm, CLI for the rest."""

    backend_name = "pyslurm"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pyslurm: Any = importlib.import_module("pyslurm")

    def _rpc(self, what: str, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except self._pyslurm.RPCError as exc:
            raise SlurmError(
                f"pyslurm {what} failed: {exc}", argv=("pyslurm", what), returncode=None, stderr=str(exc)
            ) from exc

    def jobs(self, job_ids: Iterable[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        loaded = self._rpc("Jobs.load", self._pyslurm.Jobs.load)
        wanted = None if job_ids is None else {str(j) for j in job_ids}
        result = []
        for job in loaded.values():
            task = getattr(job, "array_task_id", None)
            base = getattr(job, "array_id", None)
            job_id = f"{base}_{task}" if base and task is not None else str(job.id)
            if wanted is not None and job_id not in wanted and str(job.id) not in wanted:
                continue
            if user and job.user_name != user:
                continue
            state = parse_job_state(str(job.state))
            result.append(
                JobInfo(
                    job_id=job_id,
                    name=job.name or "",
                    user=job.user_name or "",
                    state=state,
                    raw_state=str(job.state),
                    reason=parse_job_reason(
                        str(job.state_reason or ""), state, has_nodes=bool(job.allocated_nodes)
                    ),
                    partition=job.partition or "",
                    account=job.account or "",
                    qos=job.qos or "",
                    nodes=job.allocated_nodes or "",
                    num_nodes=int(job.num_nodes or 0),
                    submit_time=_ts(job.submit_time),
                    start_time=_ts(job.start_time),
                    end_time=_ts(job.end_time),
                    work_dir=job.working_directory or "",
                    stdout_path=getattr(job, "standard_output", None) or "",
                    comment=job.comment or "",
                )
            )
        return result

    def cancel(
        self,
        job_ids: Sequence[str],
        *,
        signal: str | None = None,
        batch_only: bool = False,
        full: bool = False,
    ) -> None:
        for job_id in job_ids:
            job = self._pyslurm.Job(int(str(job_id).split("_")[0]))
            if signal:
                self._rpc("Job.send_signal", job.send_signal, signal)
            else:
                self._rpc("Job.cancel", job.cancel)

    def requeue(self, job_ids: Sequence[str], *, hold: bool = False) -> None:
        for job_id in job_ids:
            job = self._pyslurm.Job(int(str(job_id).split("_")[0]))
            self._rpc("Job.requeue", job.requeue, hold)

    def submit_env(self) -> Mapping[str, str] | None:
        return self.env
