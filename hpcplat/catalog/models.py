"""The catalog's tables (SQLModel).

Each record comes in variants without repeating a field: ``XBase`` holds what a caller gives,
``XPublic`` adds what the catalog sets (ids, times, states) and is what readers get, and ``X``
(the table) adds storage-only columns such as blob references. An input model ``XCreate`` exists
only where a caller sends records in (``GpuUsageCreate``, from the node agent).
States are string-valued enums stored as VARCHAR. Times are aware UTC datetimes, except the
metric ``time`` column: epoch seconds as a double, so that ingest stays cheap.

Schema changes need an Alembic migration in ``hpcplat/catalog/migrations/versions/`` and an update
of ``tests/golden/catalog/schema.txt`` (``UPDATE_GOLDEN=1``).
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from hpcplat.catalog.enums import ArtifactKind, EventKind, RunStatus
from hpcplat.catalog.types import UtcDateTime, enum_type, utcnow
from hpcplat.slurm.state import JobState

RUN_ID = 36
"""A run id is a UUID4 in its 36-character text form."""


# -- blobs --------------------------------------------------------------------------------------


class Blob(SQLModel, table=True):
    """Text stored once by its sha256: diffs, sbatch scripts, package lists, manifests."""

    __tablename__ = "blob"

    sha256: str = Field(primary_key=True, max_length=64)
    size: int
    text: str = Field(sa_type=sa.Text)
    created: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


# -- runs and attempts --------------------------------------------------------------------------


class RunBase(SQLModel):
    name: str = ""
    owner: str = Field(index=True)
    team: str = Field(default="", index=True)
    tier: str = ""
    tags: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    """``JobSpec.to_dict()``; ``hpcplat rerun`` rebuilds the job from it."""


class RunPublic(RunBase):
    id: str = Field(primary_key=True, max_length=RUN_ID)
    status: RunStatus = Field(default=RunStatus.SUBMITTING, sa_type=enum_type(RunStatus), index=True)
    status_reason: str = ""
    created: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime, index=True)
    updated: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    slurm_request: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    job_dir: str | None = None
    rerun_of: str | None = Field(default=None, foreign_key="run.id", max_length=RUN_ID)


class Run(RunPublic, table=True):
    """One logical training run: its jobs are its :class:`Attempt` rows."""

    __tablename__ = "run"

    script_sha256: str | None = Field(default=None, foreign_key="blob.sha256", max_length=64)


class AttemptBase(SQLModel):
    job_id: str = Field(index=True, max_length=64)
    """As Slurm prints it, array task included (``123_4``)."""
    restart: int = 0
    """Slurm's restart count: a requeue makes a new attempt under the same job id."""
    nodes: str = ""
    start: datetime | None = Field(default=None, sa_type=UtcDateTime)
    end: datetime | None = Field(default=None, sa_type=UtcDateTime)
    state: JobState = Field(default=JobState.PENDING, sa_type=enum_type(JobState))
    exit_code: int | None = None
    reason: str = ""


class AttemptPublic(AttemptBase):
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=RUN_ID)


class Attempt(AttemptPublic, table=True):
    __tablename__ = "attempt"
    __table_args__ = (sa.UniqueConstraint("run_id", "job_id", "restart", name="uq_attempt_run_job_restart"),)


# -- provenance ---------------------------------------------------------------------------------


class CodeSnapshotBase(SQLModel):
    vcs: str = "none"
    root: str = ""
    repo: str = ""
    commit: str | None = None
    branch: str | None = None
    dirty: bool = False
    diff_truncated: bool = False
    untracked: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    reason: str = ""


class CodeSnapshotPublic(CodeSnapshotBase):
    diff: str = ""


class CodeSnapshot(CodeSnapshotBase, table=True):
    __tablename__ = "code_snapshot"

    run_id: str = Field(primary_key=True, foreign_key="run.id", max_length=RUN_ID)
    diff_sha256: str | None = Field(default=None, foreign_key="blob.sha256", max_length=64)


class EnvSnapshotBase(SQLModel):
    hostname: str = ""
    python_version: str = ""
    python_implementation: str = ""
    python_executable: str = ""
    modules: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    modulepath: str = ""
    container_image: str | None = None
    container_digest: str | None = None
    cuda_version: str | None = None
    driver_version: str | None = None
    nccl_version: str | None = None
    torch_version: str | None = None
    env_vars: dict[str, str] = Field(default_factory=dict, sa_type=sa.JSON)


class EnvSnapshotPublic(EnvSnapshotBase):
    packages: dict[str, str] = Field(default_factory=dict)


class EnvSnapshot(EnvSnapshotBase, table=True):
    __tablename__ = "env_snapshot"

    run_id: str = Field(primary_key=True, foreign_key="run.id", max_length=RUN_ID)
    packages_sha256: str | None = Field(default=None, foreign_key="blob.sha256", max_length=64)


# -- datasets -----------------------------------------------------------------------------------


class Dataset(SQLModel, table=True):
    __tablename__ = "dataset"

    name: str = Field(primary_key=True, max_length=200)
    owner: str = ""
    created: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class DatasetVersionBase(SQLModel):
    dataset: str = Field(foreign_key="dataset.name", max_length=200, index=True)
    version: int
    location: str
    content_hash: str = Field(max_length=64)
    file_count: int = 0
    total_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    allowed_groups: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    """Unix groups whose members may use it; empty: everyone."""
    registered_by: str = ""


class DatasetVersionPublic(DatasetVersionBase):
    id: int | None = Field(default=None, primary_key=True)
    created: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.version}"


class DatasetVersion(DatasetVersionPublic, table=True):
    __tablename__ = "dataset_version"
    __table_args__ = (sa.UniqueConstraint("dataset", "version", name="uq_dataset_version"),)

    manifest_sha256: str = Field(foreign_key="blob.sha256", max_length=64)


class RunDataset(SQLModel, table=True):
    __tablename__ = "run_dataset"

    run_id: str = Field(primary_key=True, foreign_key="run.id", max_length=RUN_ID)
    dataset_version_id: int = Field(primary_key=True, foreign_key="dataset_version.id")


# -- params, metrics, artifacts -----------------------------------------------------------------


class Param(SQLModel, table=True):
    __tablename__ = "param"

    run_id: str = Field(primary_key=True, foreign_key="run.id", max_length=RUN_ID)
    name: str = Field(primary_key=True, max_length=200)
    value: Any = Field(default=None, sa_type=sa.JSON)


class MetricPoint(SQLModel, table=True):
    """One value of one metric at one step. The primary key (run, name, step) makes re-logging
    after a requeue a no-op: the first value written for a step wins."""

    __tablename__ = "metric_point"

    run_id: str = Field(primary_key=True, foreign_key="run.id", max_length=RUN_ID)
    name: str = Field(primary_key=True, max_length=200)
    step: int = Field(primary_key=True, sa_type=sa.BigInteger)
    attempt: int = 0
    """Slurm restart count of the attempt that logged it."""
    value: float | None = Field(default=None, sa_type=sa.Double, nullable=True)
    """NULL is NaN (SQLite cannot store NaN; PostgreSQL could, but one rule for both); infinities
    are stored as such on both."""
    time: float = Field(sa_type=sa.Double)
    """Epoch seconds."""


class ArtifactBase(SQLModel):
    path: str
    kind: ArtifactKind = Field(default=ArtifactKind.OTHER, sa_type=enum_type(ArtifactKind))
    size: int = Field(default=0, sa_type=sa.BigInteger)
    sha256: str = Field(default="", max_length=64)
    attempt: int = 0


class ArtifactPublic(ArtifactBase):
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=RUN_ID)
    created: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Artifact(ArtifactPublic, table=True):
    __tablename__ = "artifact"
    __table_args__ = (sa.UniqueConstraint("run_id", "path", "sha256", name="uq_artifact_run_path_sha"),)


# -- events and usage ---------------------------------------------------------------------------


class EventBase(SQLModel):
    kind: EventKind = Field(sa_type=enum_type(EventKind))
    reason: str = ""
    source: str = ""
    """Who recorded it: ``submit``, ``reconcile``, ``node-agent@n1``..."""
    job_id: str | None = Field(default=None, index=True, max_length=64)
    run_id: str | None = Field(default=None, foreign_key="run.id", index=True, max_length=RUN_ID)
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime, index=True)


class EventPublic(EventBase):
    id: int | None = Field(default=None, primary_key=True)


class Event(EventPublic, table=True):
    __tablename__ = "event"


class UsageBase(SQLModel):
    job_id: str = Field(max_length=64)
    elapsed_s: int = 0
    alloc_tres: dict[str, str] = Field(default_factory=dict, sa_type=sa.JSON)
    gpus: int = 0
    gpu_hours: float = Field(default=0.0, sa_type=sa.Double)


class UsagePublic(UsageBase):
    attempt_id: int = Field(primary_key=True, foreign_key="attempt.id")
    run_id: str = Field(foreign_key="run.id", index=True, max_length=RUN_ID)
    updated: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Usage(UsagePublic, table=True):
    """Slurm accounting of one attempt (``sacct``: elapsed, AllocTRES)."""

    __tablename__ = "usage"


class GpuUsageBase(SQLModel):
    """One GPU of one job over one sampling window, as the node agent measured it."""

    job_id: str = Field(index=True, max_length=64)
    node: str
    gpu_uuid: str
    start: datetime = Field(sa_type=UtcDateTime)
    end: datetime = Field(sa_type=UtcDateTime)
    samples: int = 0
    busy_samples: int = 0
    mean_util: float = Field(default=0.0, sa_type=sa.Double)
    max_mem_mb: float = Field(default=0.0, sa_type=sa.Double)
    run_id: str | None = Field(default=None, foreign_key="run.id", index=True, max_length=RUN_ID)
    """Filled by the catalog from the job id when not given."""

    @property
    def hours(self) -> float:
        return max((self.end - self.start).total_seconds(), 0.0) / 3600.0

    @property
    def busy_hours(self) -> float:
        return self.hours * (self.busy_samples / self.samples) if self.samples else 0.0


class GpuUsageCreate(GpuUsageBase):
    pass


class GpuUsage(GpuUsageBase, table=True):
    __tablename__ = "gpu_usage"
    __table_args__ = (sa.UniqueConstraint("job_id", "node", "gpu_uuid", "start", name="uq_gpu_usage_window"),)

    id: int | None = Field(default=None, primary_key=True)


CATALOG_TABLES: tuple[str, ...] = (
    "blob",
    "run",
    "attempt",
    "code_snapshot",
    "env_snapshot",
    "dataset",
    "dataset_version",
    "run_dataset",
    "param",
    "metric_point",
    "artifact",
    "event",
    "usage",
    "gpu_usage",
)
