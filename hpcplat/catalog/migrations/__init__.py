"""Alembic migrations of the catalog schema (applied by ``hpcplat db upgrade``)."""
