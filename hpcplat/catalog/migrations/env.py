"""Alembic environment: runs on the connection :func:`hpcplat.catalog.schema.upgrade` passes in."""

from alembic import context
from sqlmodel import SQLModel

from hpcplat.catalog import models

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `hpcplat db upgrade` (hpcplat.catalog.schema.upgrade)")


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    if type_ == "table":
        return name in models.CATALOG_TABLES or name == "alembic_version"
    return True


context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,
    compare_type=True,
    include_object=include_object,
)
with context.begin_transaction():
    context.run_migrations()
