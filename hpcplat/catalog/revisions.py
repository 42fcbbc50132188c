"""The schema revisions this hpcplat ships (pure stdlib; Alembic migrations in ``migrations/``)."""

from __future__ import annotations

REVISIONS: tuple[str, ...] = ("0001", "0002")
"""Every migration in order; the last is the revision this hpcplat expects."""
HEAD = REVISIONS[-1]
