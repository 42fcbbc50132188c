"""Bulk writes of metrics, params and artifacts with SQLAlchemy Core (no ORM, no SQLModel import).

The same SQL runs on SQLite (3.24+) and PostgreSQL: ``INSERT ... ON CONFLICT (run_id, name, step)
DO NOTHING`` as one ``executemany``, so a batch written twice (a retry, a spool ingested again, a
requeued job logging the same steps) never duplicates a point. Used by :mod:`hpcplat.track` in the
job and by :class:`hpcplat.catalog.Catalog`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hpcplat.catalog import spool
from hpcplat.catalog.enums import ArtifactKind
from hpcplat.catalog.types import UtcDateTime, utcnow
from hpcplat.errors import CatalogError

log = logging.getLogger(__name__)

Point = tuple[int, int, str, float | None, float]
"""(attempt, step, name, value, time); a value of ``None`` is NaN"""

_STEP_MIN, _STEP_MAX = -(2**63), 2**63 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

_POINTS = sa.text(
    "INSERT INTO metric_point (run_id, name, step, attempt, value, time) "
    "VALUES (:run_id, :name, :step, :attempt, :value, :time) "
    "ON CONFLICT (run_id, name, step) DO NOTHING"
)
_PARAMS = sa.text(
    "INSERT INTO param (run_id, name, value) VALUES (:run_id, :name, :value) "
    "ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value"
).bindparams(sa.bindparam("value", type_=sa.JSON))
_ARTIFACTS = sa.text(
    "INSERT INTO artifact (run_id, path, kind, size, sha256, attempt, created) "
    "VALUES (:run_id, :path, :kind, :size, :sha256, :attempt, :created) "
    "ON CONFLICT (run_id, path, sha256) DO NOTHING"
)


_SQLITE_POINTS = (
    "INSERT INTO metric_point (run_id, name, step, attempt, value, time) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, name, step) DO NOTHING"
)
_PG_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS hpcplat_metric_stage "
    "(run_id varchar(36), name varchar(200), step bigint, attempt integer, value double precision, "
    "time double precision)"
)
_PG_COPY = "COPY hpcplat_metric_stage (run_id, name, step, attempt, value, time) FROM STDIN"
_PG_MERGE = (
    "INSERT INTO metric_point (run_id, name, step, attempt, value, time) "
    "SELECT run_id, name, step, attempt, value, time FROM hpcplat_metric_stage "
    "ON CONFLICT (run_id, name, step) DO NOTHING"
)


def insert_points(conn: Connection, run_id: str, points: Sequence[Point]) -> int:
    """Insert points (existing (run, name, step) are left alone) in the caller's transaction;
    returns the number of valid points given.

    A point the database cannot hold (a step or attempt outside its integer column, a name longer
    than 200 characters, a value that is not a float) is skipped with a warning naming it; the
    others of the batch are written. NaN is stored as NULL (SQLite cannot store NaN), infinities
    as themselves.

    SQLite: the driver's own ``executemany`` with tuples. PostgreSQL: ``COPY`` into a temporary
    staging table, then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (psycopg's
    executemany sends one statement per row).
    """
    points = valid_points(run_id, points)
    if not points:
        return 0
    dbapi: Any = conn.dialect.loaded_dbapi
    try:
        _insert_points(conn, run_id, points)
    except dbapi.Error as exc:  # raw driver calls: give callers SQLAlchemy's exception classes
        raise sa.exc.DBAPIError.instance(
            "INSERT INTO metric_point", None, exc, dbapi.Error, dialect=conn.dialect
        ) from exc
    return len(points)


def valid_points(run_id: str, points: Sequence[Any]) -> list[Point]:
    """The points the catalog can hold, as ``Point`` with NaN as ``None``; the others are logged."""
    kept: list[Point] = []
    for point in points:
        try:
            attempt, step, name, value, at = point
            if type(step) is not int or not _STEP_MIN <= step <= _STEP_MAX:
                raise ValueError(f"step {step!r} is not a 64-bit integer")
            if type(attempt) is not int or not _INT32_MIN <= attempt <= _INT32_MAX:
                raise ValueError(f"attempt {attempt!r} is not a 32-bit integer")
            if not isinstance(name, str) or not 0 < len(name) <= 200:
                raise ValueError(f"name {name!r} is not a string of 1 to 200 characters")
            number = float(value)
            kept.append((attempt, step, name, None if math.isnan(number) else number, float(at)))
        except (TypeError, ValueError, OverflowError) as exc:
            log.warning("run %s: skipping metric point %.200r: %s", run_id, point, exc)
    return kept


def _insert_points(conn: Connection, run_id: str, points: Sequence[Point]) -> None:
    dialect = conn.dialect.name
    if dialect == "sqlite":
        raw: Any = conn.connection.driver_connection
        cursor = raw.cursor()
        try:
            cursor.executemany(_SQLITE_POINTS, [(run_id, n, s, a, v, t) for a, s, n, v, t in points])
        finally:
            cursor.close()
    elif dialect == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor:
            cursor.execute(_PG_STAGE)
            with cursor.copy(_PG_COPY) as copy:
                for a, s, n, v, t in points:
                    copy.write_row((run_id, n, s, a, v, t))
            cursor.execute(_PG_MERGE)
            cursor.execute("DELETE FROM hpcplat_metric_stage")
    else:
        rows = [
            {"run_id": run_id, "attempt": a, "step": s, "name": n, "value": v, "time": t}
            for a, s, n, v, t in points
        ]
        conn.execute(_POINTS, rows)


def upsert_params(conn: Connection, run_id: str, params: Mapping[str, Any]) -> None:
    if params:
        conn.execute(_PARAMS, [{"run_id": run_id, "name": k, "value": v} for k, v in params.items()])


def insert_artifacts(conn: Connection, run_id: str, artifacts: Iterable[Mapping[str, Any]]) -> None:
    stmt = _ARTIFACTS.bindparams(sa.bindparam("created", type_=UtcDateTime))
    rows = [
        {
            "run_id": run_id,
            "path": a["path"],
            "kind": ArtifactKind.parse(str(a.get("kind", "OTHER"))).value,
            "size": int(a.get("size", 0)),
            "sha256": str(a.get("sha256", "")),
            "attempt": int(a.get("attempt", 0)),
            "created": utcnow(),
        }
        for a in artifacts
    ]
    if rows:
        conn.execute(stmt, rows)


def dumps_sorted(value: Any) -> str:
    """Canonical JSON (sorted keys, compact): equal values give equal text, hence one blob."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data; objects JSON cannot hold become their ``str``."""
    return json.loads(json.dumps(value, default=str))


def ingest_spool(engine: Engine, path: str | Path) -> int:
    """Write a tracking spool file's records to the database; returns how many metric points.

    Only complete lines past the offset already ingested are read (the job may still be
    appending); the new offset is saved next to the file after the transaction commits. Ingesting
    the same file again writes nothing twice. A damaged record or point (a step out of range, a
    value that is not a number) is skipped with a warning and the rest is ingested: the file is
    never blocked. A record of a run this catalog does not have is a :class:`CatalogError`
    (nothing of the file is written).
    """
    try:
        return _ingest_spool(engine, Path(path))
    except sa.exc.IntegrityError as exc:
        raise CatalogError(
            f"spool {path} refers to a run this catalog does not have: {str(exc.orig).splitlines()[0]}",
            hint="ingest it into the catalog the job was submitted to (HPCPLAT_CATALOG_URL of the job)",
        ) from exc


def _ingest_spool(engine: Engine, path: Path) -> int:
    offset = spool.read_offset(path)
    records, new_offset = spool.read_records(path, offset)
    if not records:
        return 0
    points = 0
    with engine.begin() as conn:
        for record in records:
            try:
                points += _ingest_record(conn, path, record)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("%s: skipping a damaged spool record (%s): %.200r", path, exc, record)
    spool.write_offset(path, new_offset)
    return points


def _ingest_record(conn: Connection, path: Path, record: dict[str, Any]) -> int:
    kind = record.get("t")
    run_id = str(record.get("r", ""))
    if kind == "m":
        attempt = record.get("a", 0)
        pts = record["pts"]
        batch = [(attempt, *p) if isinstance(p, list) and len(p) == 4 else p for p in pts]
        return insert_points(conn, run_id, batch)
    if kind == "p":
        upsert_params(conn, run_id, record["params"])
    elif kind == "a":
        insert_artifacts(conn, run_id, record["artifacts"])
    else:
        log.warning("%s: skipping a spool record of unknown type %r", path, kind)
    return 0


def spool_files(job_dir: str | os.PathLike[str]) -> list[Path]:
    directory = Path(job_dir) / spool.SPOOL_DIR
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{spool.SUFFIX}"))
