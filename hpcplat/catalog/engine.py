"""Database engines for the catalog: SQLite (default) and PostgreSQL (psycopg 3) by URL.

SQLite runs in WAL mode with foreign keys on and a busy timeout, and every write transaction
starts with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing halfway
(a deferred transaction that later wants to write can fail at once with "database is locked").
PostgreSQL connections have a connect timeout, so an unreachable server is a clear error, not a hang.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from hpcplat.errors import CatalogError, UsageError
from hpcplat.private import make_private_dir, touch_private
from hpcplat.redact import redact_url as _redact_url

BUSY_TIMEOUT_MS = 30_000
DEFAULT_CONNECT_TIMEOUT_S = 10.0
READ = {"sqlite_begin": "DEFERRED"}
"""Execution options of a read-only connection (no write lock taken on SQLite)."""


def redact_url(url: str) -> str:
    """The URL with its credentials hidden, for messages (:func:`hpcplat.redact.redact_url`)."""
    return _redact_url(url)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def dialect_of(url: str) -> str:
    scheme = url.split(":", 1)[0]
    if scheme.startswith("sqlite"):
        return "sqlite"
    if scheme.startswith("postgresql"):
        return "postgresql"
    raise UsageError(
        f"unsupported catalog URL {redact_url(url)!r}",
        hint="use sqlite:////absolute/path/catalog.db or postgresql+psycopg://user@host:5432/dbname",
    )


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (the driver hpcplat ships with)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for an in-memory database)."""
    parsed = sa.engine.make_url(url)
    if not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def make_engine(url: str, *, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> Engine:
    url = normalize_url(url)
    kind = dialect_of(url)
    if kind == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            try:
                make_private_dir(path.parent)
                touch_private(path)  # before SQLite creates it 0644 (its -wal/-shm files follow)
            except OSError as exc:
                raise CatalogError(
                    f"cannot create the catalog database {path}: {exc.strerror}",
                    hint="set [catalog] url in the site configuration to a writable local path",
                ) from exc
        engine = sa.create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            json_serializer=_dumps,
        )
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(
        url,
        connect_args={"connect_timeout": max(1, math.ceil(connect_timeout_s))},
        json_serializer=_dumps,
        pool_pre_ping=True,
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: WAL switch may wait
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def check_reachable(engine: Engine) -> None:
    """Open one connection, or raise :class:`CatalogError` saying why and what to check."""
    try:
        with engine.connect() as conn:
            conn.execution_options(**READ).exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        where = redact_url(engine.url.render_as_string())
        raise CatalogError(
            f"cannot reach the catalog database at {where}: {detail}",
            hint="check that the server is up and the URL ([catalog] url in $HPCPLAT_CONFIG, or "
            "$HPCPLAT_CATALOG_URL) is right",
        ) from exc
