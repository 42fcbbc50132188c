"""Schema revisions: the Alembic migrations shipped in ``hpcplat/catalog/migrations``.

``hpcplat db upgrade`` applies them. Opening a catalog checks the revision with one cheap query
(Alembic itself is only imported to upgrade).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hpcplat.catalog.engine import DEFAULT_CONNECT_TIMEOUT_S, READ, check_reachable, make_engine, redact_url
from hpcplat.catalog.location import catalog_url
from hpcplat.catalog.revisions import HEAD, REVISIONS
from hpcplat.errors import CatalogError
from hpcplat.private import FILE_MODE

if TYPE_CHECKING:
    from alembic.config import Config


__all__ = ["HEAD", "REVISIONS", "current_revision", "open_engine", "require_current", "upgrade"]
UPGRADE_HINT = "run `hpcplat db upgrade` (with the same catalog URL) and try again"


def current_revision(engine: Engine) -> str | None:
    """The applied revision, or None when the database has no hpcplat schema yet."""
    with engine.connect() as conn:
        conn = conn.execution_options(**READ)
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return None if row is None else str(row[0])


def is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        return not sa.inspect(conn.execution_options(**READ)).get_table_names()


def require_current(engine: Engine, revision: str | None) -> None:
    where = redact_url(engine.url.render_as_string())
    if revision == HEAD:
        return
    if revision is None:
        raise CatalogError(f"the catalog database at {where} has no hpcplat schema", hint=UPGRADE_HINT)
    if revision in REVISIONS:
        raise CatalogError(
            f"the catalog database at {where} has an old schema "
            f"(revision {revision}; this hpcplat needs {HEAD})",
            hint=UPGRADE_HINT,
        )
    raise CatalogError(
        f"the catalog database at {where} has schema revision {revision}, unknown to this hpcplat "
        f"(newest known: {HEAD})",
        hint="a newer hpcplat upgraded it: upgrade hpcplat on this machine",
    )


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Apply the migrations up to ``revision`` in one transaction; returns (before, after).

    Concurrent upgrades are serialized (SQLite: a lock file beside the database, then the write
    lock taken by BEGIN IMMEDIATE; PostgreSQL: an advisory lock), and the second one finds nothing
    left to do.
    """
    with _file_lock(engine):
        return _upgrade(engine, revision)


@contextlib.contextmanager
def _file_lock(engine: Engine, timeout_s: float = 60.0) -> Iterator[None]:
    """An exclusive ``flock`` on ``<database>.lock`` for SQLite files (other engines: nothing).

    Creating a new SQLite database (switching it to WAL, then the DDL) from several processes at
    once can fail with "database is locked" before SQLite's busy handler applies.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl
    import os
    import time

    fd = os.open(f"{database}.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    with os.fdopen(fd, "a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CatalogError(
                        f"another process has held {database}.lock for over {timeout_s:.0f} s",
                        hint="wait for the other `hpcplat db upgrade` to finish, then try again",
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _upgrade(engine: Engine, revision: str) -> tuple[str | None, str]:
    from alembic import command

    before = current_revision(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(72727001)")
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return before, current_revision(engine) or ""


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "hpcplat.catalog:migrations")
    return config


def open_engine(
    url: str | None = None, *, connect_timeout_s: float | None = None, check: bool = True
) -> Engine:
    """An engine on the catalog at ``url`` (see :func:`hpcplat.catalog.location.catalog_url`),
    reachable and at the expected schema revision.

    A new (empty) SQLite catalog gets the schema on first use; any other catalog whose schema is
    missing or old raises :class:`CatalogError` naming ``hpcplat db upgrade``.
    """
    import logging

    resolved = catalog_url(url)
    engine = make_engine(resolved, connect_timeout_s=connect_timeout_s or DEFAULT_CONNECT_TIMEOUT_S)
    try:
        check_reachable(engine)
        if check:
            revision = current_revision(engine)
            if revision is None and engine.dialect.name == "sqlite" and is_empty(engine):
                logging.getLogger(__name__).info("creating the catalog schema in %s", redact_url(resolved))
                upgrade(engine)
            else:
                require_current(engine, revision)
    except BaseException:
        engine.dispose()
        raise
    return engine
