"""The catalog's store: one database (engine by URL scheme) and its transaction scopes.

Everything in :mod:`hpcplat.catalog` that reads or writes tables takes a :class:`Store`: the
:class:`~hpcplat.catalog.service.Catalog`, :mod:`~hpcplat.catalog.reconcile`,
:mod:`~hpcplat.catalog.selfregister`, :mod:`~hpcplat.catalog.queries` and
:mod:`~hpcplat.catalog.listing`. Each scope is one transaction:

- :meth:`Store.write` — an ORM session; committed at the end of the block, rolled back on an
  exception (SQLite: ``BEGIN IMMEDIATE``, so concurrent writers wait their turn);
- :meth:`Store.write_conn` — the same without the ORM, for the statements run at every submit;
- :meth:`Store.read` / :meth:`Store.read_conn` — read only (no write lock taken on SQLite).

A database refusing a write (locked, read-only, disk full) is a :class:`CatalogError` saying that
nothing was written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hpcplat.catalog import schema
from hpcplat.catalog.engine import DEFAULT_CONNECT_TIMEOUT_S, READ
from hpcplat.catalog.location import catalog_url
from hpcplat.errors import CatalogError

if TYPE_CHECKING:
    from sqlmodel import Session

_REFUSED_HINT = "nothing was written; try again (another writer may hold the database for long)"


class Store:
    """A catalog database: its engine, the URL it was opened with, and its transaction scopes."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        check_schema: bool = True,
    ) -> Store:
        """Connect to the catalog at ``url`` (default: ``$HPCPLAT_CATALOG_URL`` or the site
        configuration; ``sqlite:`` or ``postgresql:``) and check the schema revision.

        A new (empty) SQLite catalog is created on first use; any other catalog whose schema is
        missing or old raises :class:`CatalogError` naming ``hpcplat db upgrade``.
        """
        resolved = catalog_url(url)
        engine = schema.open_engine(resolved, connect_timeout_s=connect_timeout_s, check=check_schema)
        return cls(engine, resolved)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction with an ORM session (objects stay usable after the commit)."""
        # sqlmodel (and pydantic) are imported only when an ORM session is asked for: the plain
        # SQL paths (``hpcplat runs``: :meth:`read_conn`) stay clear of them.
        from sqlmodel import Session

        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except sa.exc.OperationalError as exc:
            raise _refused(exc) from exc

    @contextmanager
    def write_conn(self) -> Iterator[Connection]:
        """:meth:`write` without an ORM session."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise _refused(exc) from exc

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only ORM session."""
        from sqlmodel import Session  # see write()

        with self.read_conn() as conn, Session(bind=conn) as session:
            yield session

    @contextmanager
    def read_conn(self) -> Iterator[Connection]:
        """A read-only connection."""
        with self.engine.connect() as conn:
            conn.execution_options(**READ)
            yield conn


def _refused(exc: sa.exc.OperationalError) -> CatalogError:
    return CatalogError(
        f"the catalog refused a write: {str(exc.orig).strip().splitlines()[0]}", hint=_REFUSED_HINT
    )
