"""``hpcplat runs``: the run list, with plain SQL (no SQLModel/pydantic import; for a SQLite
catalog not even SQLAlchemy), so the command stays fast on a catalog of many thousands of runs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcplat.catalog.enums import RunStatus
from hpcplat.catalog.location import catalog_url
from hpcplat.catalog.revisions import HEAD
from hpcplat.errors import CatalogError, UsageError

if TYPE_CHECKING:
    from hpcplat.catalog.store import Store

DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class RunRow:
    id: str
    name: str
    owner: str
    team: str
    tier: str
    status: RunStatus
    tags: list[str]
    created: datetime
    job_id: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["created"] = self.created.isoformat()
        return data


def parse_statuses(text: str | None) -> list[RunStatus]:
    if not text:
        return []
    statuses = []
    for word in text.split(","):
        try:
            statuses.append(RunStatus(word.strip().upper()))
        except ValueError:
            allowed = ", ".join(s.value.lower() for s in RunStatus)
            raise UsageError(f"unknown run status {word.strip()!r}", hint=f"use one of: {allowed}") from None
    return statuses


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def build_query(
    *,
    user: str | None = None,
    team: str | None = None,
    tag: str | None = None,
    status: str | list[RunStatus] | None = None,
    limit: int | None = DEFAULT_LIMIT,
    offset: int = 0,
) -> tuple[str, dict[str, Any]]:
    """The SQL (``:name`` parameters, valid on SQLite and PostgreSQL) and its parameters;
    ``offset`` skips that many runs of the order (paging, with ``limit``)."""
    where: list[str] = []
    binds: dict[str, Any] = {}
    if user:
        where.append("r.owner = :user")
        binds["user"] = user
    if team:
        where.append("r.team = :team")
        binds["team"] = team
    if tag:
        where.append("CAST(r.tags AS TEXT) LIKE :tag ESCAPE '\\'")
        binds["tag"] = f"%{_like_literal(json.dumps(tag))}%"
    statuses = parse_statuses(status) if isinstance(status, str) or status is None else status
    if statuses:
        names = [f":s{i}" for i in range(len(statuses))]
        where.append(f"r.status IN ({', '.join(names)})")
        binds.update({f"s{i}": s.value for i, s in enumerate(statuses)})
    sql = (
        "SELECT r.id, r.name, r.owner, r.team, r.tier, r.status, r.tags, r.created, "
        "(SELECT a.job_id FROM attempt a WHERE a.run_id = r.id ORDER BY a.id DESC LIMIT 1) AS job_id "
        "FROM run r"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY r.created DESC, r.id"
    if limit is not None:
        if limit < 1:
            raise UsageError(
                f"--limit must be at least 1, got {limit}", hint="or leave it out for the default"
            )
        sql += " LIMIT :limit"
        binds["limit"] = limit
    if offset:
        if offset < 0 or limit is None:
            raise UsageError(f"offset must be at least 0 and come with a limit, got {offset}")
        sql += " OFFSET :offset"
        binds["offset"] = offset
    return sql, binds


def _row(values: Sequence[Any]) -> RunRow:
    run_id, name, owner, team, tier, status, tags, created, job_id = values
    if isinstance(tags, str):
        tags = json.loads(tags)
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
    return RunRow(
        id=run_id,
        name=name,
        owner=owner,
        team=team,
        tier=tier,
        status=RunStatus(status),
        tags=list(tags or []),
        created=created,
        job_id=job_id,
    )


def list_runs(store: Store, **filters: Any) -> list[RunRow]:
    """Newest first. ``status`` is a comma-separated list or a list of statuses; ``limit=None``: all."""
    # Imported here, not above: the SQLite fast path of list_runs_at never needs SQLAlchemy.
    import sqlalchemy as sa

    sql, binds = build_query(**filters)
    with store.read_conn() as conn:
        rows = conn.execute(sa.text(sql), binds).all()
    return [_row(tuple(r)) for r in rows]


def list_runs_at(url: str | None = None, **filters: Any) -> list[RunRow]:
    """:func:`list_runs` on the catalog at ``url``. An existing SQLite catalog at the current schema
    is read with the standard library's sqlite3 (no SQLAlchemy import: ``hpcplat runs`` answers in
    about the time Python takes to start); anything else goes through :func:`open_engine`, which
    also gives the errors (unreachable, old schema) their messages."""
    resolved = catalog_url(url)
    sql, binds = build_query(**filters)
    path = _sqlite_file(resolved)
    if path is not None:
        rows = _read_sqlite(path, sql, binds)
        if rows is not None:
            return [_row(r) for r in rows]
    # The general path: SQLAlchemy (not SQLModel: only Store.read/write import it) from here on.
    from hpcplat.catalog.store import Store

    store = Store.open(resolved)
    try:
        return list_runs(store, **filters)
    finally:
        store.close()


def _sqlite_file(url: str) -> Path | None:
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            rest = url[len(prefix) :].split("?", 1)[0]
            path = Path(rest)
            return path if rest and rest != ":memory:" and path.is_file() else None
    return None


def _read_sqlite(path: Path, sql: str, binds: dict[str, Any]) -> list[tuple[Any, ...]] | None:
    """Rows, or None when the file is not a catalog at the current revision (the caller then takes
    the general path, which explains what is wrong)."""
    try:
        conn = sqlite3.connect(str(path), timeout=30.0)
    except sqlite3.Error:
        return None
    try:
        try:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            return None
        if revision is None or revision[0] != HEAD:
            return None
        try:
            return list(conn.execute(sql, binds).fetchall())
        except sqlite3.Error as exc:
            raise CatalogError(
                f"cannot read the catalog {path}: {exc}", hint="check the file (`hpcplat db current`)"
            ) from exc
    finally:
        conn.close()
