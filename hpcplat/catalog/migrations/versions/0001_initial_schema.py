"""Initial catalog schema: runs, attempts, provenance, datasets, metrics, events, usage.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from hpcplat.catalog.types import UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "dataset",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "dataset_version",
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("location", sa.String(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("allowed_groups", sa.JSON(), nullable=False),
        sa.Column("registered_by", sa.String(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset"],
            ["dataset.name"],
        ),
        sa.ForeignKeyConstraint(
            ["manifest_sha256"],
            ["blob.sha256"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset", "version", name="uq_dataset_version"),
    )
    op.create_index("ix_dataset_version_dataset", "dataset_version", ["dataset"], unique=False)

    op.create_table(
        "run",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("team", sa.String(), nullable=False),
        sa.Column("tier", sa.String(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "SUBMITTING",
                "NOT_SUBMITTED",
                "QUEUED",
                "RUNNING",
                "REQUEUED",
                "COMPLETED",
                "FAILED",
                "CANCELLED",
                name="runstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("status_reason", sa.String(), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.Column("updated", UtcDateTime(), nullable=False),
        sa.Column("slurm_request", sa.JSON(), nullable=False),
        sa.Column("job_dir", sa.String(), nullable=True),
        sa.Column("rerun_of", sa.String(length=36), nullable=True),
        sa.Column("script_sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["rerun_of"],
            ["run.id"],
        ),
        sa.ForeignKeyConstraint(
            ["script_sha256"],
            ["blob.sha256"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_run_created", "run", ["created"], unique=False)
    op.create_index("ix_run_owner", "run", ["owner"], unique=False)
    op.create_index("ix_run_status", "run", ["status"], unique=False)
    op.create_index("ix_run_team", "run", ["team"], unique=False)

    op.create_table(
        "artifact",
        sa.Column("path", sa.String(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "CHECKPOINT",
                "MODEL",
                "LOG",
                "PLOT",
                "OTHER",
                name="artifactkind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "path", "sha256", name="uq_artifact_run_path_sha"),
    )
    op.create_index("ix_artifact_run_id", "artifact", ["run_id"], unique=False)

    op.create_table(
        "attempt",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("restart", sa.Integer(), nullable=False),
        sa.Column("nodes", sa.String(), nullable=False),
        sa.Column("start", UtcDateTime(), nullable=True),
        sa.Column("end", UtcDateTime(), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "PENDING",
                "CONFIGURING",
                "RUNNING",
                "COMPLETING",
                "SUSPENDED",
                "REQUEUED",
                "REQUEUE_HOLD",
                "REQUEUE_FED",
                "RESIZING",
                "SIGNALING",
                "STAGE_OUT",
                "STOPPED",
                "RESV_DEL_HOLD",
                "SPECIAL_EXIT",
                "PREEMPTED",
                "COMPLETED",
                "CANCELLED",
                "FAILED",
                "TIMEOUT",
                "NODE_FAIL",
                "OUT_OF_MEMORY",
                "BOOT_FAIL",
                "DEADLINE",
                "REVOKED",
                "UNKNOWN",
                name="jobstate",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "job_id", "restart", name="uq_attempt_run_job_restart"),
    )
    op.create_index("ix_attempt_job_id", "attempt", ["job_id"], unique=False)
    op.create_index("ix_attempt_run_id", "attempt", ["run_id"], unique=False)

    op.create_table(
        "code_snapshot",
        sa.Column("vcs", sa.String(), nullable=False),
        sa.Column("root", sa.String(), nullable=False),
        sa.Column("repo", sa.String(), nullable=False),
        sa.Column("commit", sa.String(), nullable=True),
        sa.Column("branch", sa.String(), nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("diff_truncated", sa.Boolean(), nullable=False),
        sa.Column("untracked", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("diff_sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["diff_sha256"],
            ["blob.sha256"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_table(
        "env_snapshot",
        sa.Column("hostname", sa.String(), nullable=False),
        sa.Column("python_version", sa.String(), nullable=False),
        sa.Column("python_implementation", sa.String(), nullable=False),
        sa.Column("python_executable", sa.String(), nullable=False),
        sa.Column("modules", sa.JSON(), nullable=False),
        sa.Column("modulepath", sa.String(), nullable=False),
        sa.Column("container_image", sa.String(), nullable=True),
        sa.Column("container_digest", sa.String(), nullable=True),
        sa.Column("cuda_version", sa.String(), nullable=True),
        sa.Column("driver_version", sa.String(), nullable=True),
        sa.Column("nccl_version", sa.String(), nullable=True),
        sa.Column("torch_version", sa.String(), nullable=True),
        sa.Column("env_vars", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("packages_sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["packages_sha256"],
            ["blob.sha256"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_table(
        "event",
        sa.Column(
            "kind",
            sa.Enum(
                "SUBMITTED",
                "SUBMIT_FAILED",
                "STATE",
                "REQUEUED",
                "PREEMPTED",
                "CHECKPOINT",
                "IDLE_WARNING",
                "IDLE_RECLAIM",
                "POLICY",
                "NODE",
                "RECONCILE",
                "NOTE",
                name="eventkind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_event_at", "event", ["at"], unique=False)
    op.create_index("ix_event_job_id", "event", ["job_id"], unique=False)
    op.create_index("ix_event_run_id", "event", ["run_id"], unique=False)

    op.create_table(
        "gpu_usage",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("gpu_uuid", sa.String(), nullable=False),
        sa.Column("start", UtcDateTime(), nullable=False),
        sa.Column("end", UtcDateTime(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("busy_samples", sa.Integer(), nullable=False),
        sa.Column("mean_util", sa.Double(), nullable=False),
        sa.Column("max_mem_mb", sa.Double(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "node", "gpu_uuid", "start", name="uq_gpu_usage_window"),
    )
    op.create_index("ix_gpu_usage_job_id", "gpu_usage", ["job_id"], unique=False)
    op.create_index("ix_gpu_usage_run_id", "gpu_usage", ["run_id"], unique=False)

    op.create_table(
        "metric_point",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("run_id", "name", "step"),
    )
    op.create_table(
        "param",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("run_id", "name"),
    )
    op.create_table(
        "run_dataset",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("dataset_version_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_version.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("run_id", "dataset_version_id"),
    )
    op.create_table(
        "usage",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("elapsed_s", sa.Integer(), nullable=False),
        sa.Column("alloc_tres", sa.JSON(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("gpu_hours", sa.Double(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("updated", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["attempt.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("attempt_id"),
    )
    op.create_index("ix_usage_run_id", "usage", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_usage_run_id", table_name="usage")

    op.drop_table("usage")
    op.drop_table("run_dataset")
    op.drop_table("param")
    op.drop_table("metric_point")
    op.drop_index("ix_gpu_usage_run_id", table_name="gpu_usage")
    op.drop_index("ix_gpu_usage_job_id", table_name="gpu_usage")

    op.drop_table("gpu_usage")
    op.drop_index("ix_event_run_id", table_name="event")
    op.drop_index("ix_event_job_id", table_name="event")
    op.drop_index("ix_event_at", table_name="event")

    op.drop_table("event")
    op.drop_table("env_snapshot")
    op.drop_table("code_snapshot")
    op.drop_index("ix_attempt_run_id", table_name="attempt")
    op.drop_index("ix_attempt_job_id", table_name="attempt")

    op.drop_table("attempt")
    op.drop_index("ix_artifact_run_id", table_name="artifact")

    op.drop_table("artifact")
    op.drop_index("ix_run_team", table_name="run")
    op.drop_index("ix_run_status", table_name="run")
    op.drop_index("ix_run_owner", table_name="run")
    op.drop_index("ix_run_created", table_name="run")

    op.drop_table("run")
    op.drop_index("ix_dataset_version_dataset", table_name="dataset_version")

    op.drop_table("dataset_version")
    op.drop_table("dataset")
    op.drop_table("blob")
