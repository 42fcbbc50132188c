"""Record a run for a job started with plain ``sbatch``: ``python -m hpcplat.catalog.selfregister``.

The sbatch templates call it first thing in the job (``export HPCPLAT_RUN_ID=$(python -m
hpcplat.catalog.selfregister)``). It reads ``SLURM_JOB_ID`` (and the array task, restart count,
nodes, account...), records a Run with its code and environment provenance and an Attempt for
this job unless the catalog already has one for it, and prints the run id. Running it again in
the same job, or after a requeue (a new attempt is added), is safe.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from hpcplat.catalog.enums import EventKind, RunStatus
from hpcplat.catalog.models import Attempt, Event, Run
from hpcplat.catalog.snapshots import add_provenance
from hpcplat.catalog.store import Store
from hpcplat.catalog.types import utcnow
from hpcplat.errors import HpcplatError, UsageError
from hpcplat.provenance import capture
from hpcplat.slurm.state import JobState


@dataclass(frozen=True)
class JobEnvironment:
    """What a Slurm job knows about itself from its environment."""

    job_id: str
    """``123``, or ``123_4`` for task 4 of array 123."""
    restart: int = 0
    name: str = ""
    user: str = ""
    account: str = ""
    partition: str = ""
    qos: str = ""
    nodes: str = ""
    submit_dir: str = ""
    job_dir: str | None = None
    run_id: str | None = None
    """``HPCPLAT_RUN_ID`` when the job already belongs to a run."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> JobEnvironment:
        job = environ.get("SLURM_JOB_ID")
        if not job:
            raise UsageError(
                "SLURM_JOB_ID is not set: this is not running inside a Slurm job",
                hint="call `python -m hpcplat.catalog.selfregister` from an sbatch script",
            )
        array_job, array_task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
        job_id = f"{array_job}_{array_task}" if array_job and array_task else job
        try:
            restart = int(environ.get("SLURM_RESTART_COUNT", "0") or 0)
        except ValueError:
            restart = 0
        return cls(
            job_id=job_id,
            restart=restart,
            name=environ.get("SLURM_JOB_NAME", ""),
            user=environ.get("SLURM_JOB_USER") or environ.get("USER", ""),
            account=environ.get("SLURM_JOB_ACCOUNT", ""),
            partition=environ.get("SLURM_JOB_PARTITION", ""),
            qos=environ.get("SLURM_JOB_QOS", ""),
            nodes=environ.get("SLURM_JOB_NODELIST", ""),
            submit_dir=environ.get("SLURM_SUBMIT_DIR", ""),
            job_dir=environ.get("HPCPLAT_JOB_DIR") or None,
            run_id=environ.get("HPCPLAT_RUN_ID") or None,
        )


def register_job(store: Store, job: JobEnvironment, provenance: Mapping[str, Any]) -> tuple[str, bool]:
    """(run id, whether a new run was created). One transaction; concurrent calls for the same job
    are serialized (SQLite write lock, PostgreSQL advisory lock) and agree on one run."""
    with store.write() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:job))"), {"job": job.job_id})
        run_id: str | None = None
        if job.run_id is not None and s.get(Run, job.run_id) is not None:
            run_id = job.run_id
        else:
            found = s.exec(
                select(Attempt.run_id)
                .where(Attempt.job_id == job.job_id)
                .order_by(sa.desc(col(Attempt.id)))
                .limit(1)
            ).first()
            run_id = str(found) if found is not None else None
        created = run_id is None
        if run_id is None:
            run_id = str(uuid.uuid4())
            s.add(
                Run(
                    id=run_id,
                    name=job.name,
                    owner=job.user,
                    team=job.account,
                    tier=job.qos,
                    tags=["sbatch"],
                    spec={"kind": "sbatch", "job_name": job.name, "submit_dir": job.submit_dir},
                    slurm_request={"partition": job.partition, "qos": job.qos, "account": job.account},
                    job_dir=job.job_dir,
                    status=RunStatus.RUNNING,
                )
            )
            s.flush()
            add_provenance(s, run_id, provenance)
            s.add(
                Event(
                    kind=EventKind.NOTE,
                    reason=f"recorded from inside job {job.job_id} (started with plain sbatch)",
                    source="selfregister",
                    job_id=job.job_id,
                    run_id=run_id,
                )
            )
        attempt = s.exec(
            select(Attempt).where(
                Attempt.run_id == run_id, Attempt.job_id == job.job_id, Attempt.restart == job.restart
            )
        ).first()
        if attempt is None:
            s.add(
                Attempt(
                    run_id=run_id,
                    job_id=job.job_id,
                    restart=job.restart,
                    nodes=job.nodes,
                    start=utcnow(),
                    state=JobState.RUNNING,
                )
            )
        elif not attempt.state.is_terminal:
            attempt.state = JobState.RUNNING
            attempt.nodes = job.nodes or attempt.nodes
            attempt.start = attempt.start or utcnow()
        run = s.get(Run, run_id)
        if run is not None and not created and run.status in (RunStatus.QUEUED, RunStatus.REQUEUED):
            run.status = RunStatus.RUNNING
            run.updated = utcnow()
    return run_id, created


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpcplat.catalog.selfregister",
        description="Record this Slurm job in the hpcplat catalog (idempotent) and print its run id.",
    )
    parser.add_argument(
        "--catalog", help="catalog URL (default: $HPCPLAT_CATALOG_URL or the site configuration)"
    )
    parser.add_argument("--no-provenance", action="store_true", help="do not capture code and environment")
    args = parser.parse_args(argv)
    try:
        job = JobEnvironment.from_environ(os.environ)
        provenance = {} if args.no_provenance else capture(job.submit_dir or None)
        store = Store.open(args.catalog)
        try:
            run_id, _ = register_job(store, job, provenance)
        finally:
            store.close()
    except HpcplatError as exc:
        print(f"hpcplat selfregister: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
