"""Metric values may be NaN: ``metric_point.value`` becomes nullable (NULL is NaN).

SQLite stores a NaN bound to a REAL column as NULL, so NULL is the one representation of NaN on
both databases; infinities are stored as such on SQLite and PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("metric_point") as batch:
        batch.alter_column("value", existing_type=sa.Double(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM metric_point WHERE value IS NULL")
    with op.batch_alter_table("metric_point") as batch:
        batch.alter_column("value", existing_type=sa.Double(), nullable=False)
