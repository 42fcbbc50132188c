"""The sandbox's own MariaDB server: data directory, the slurmdbd user, readiness."""

from __future__ import annotations

import logging

from hpcplat.errors import SandboxError
from hpcplat.runner import run
from hpcplat.sandbox.layout import Layout

log = logging.getLogger(__name__)

INSTALL_TIMEOUT_S = 120.0
QUERY_TIMEOUT_S = 15.0


def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def is_initialised(layout: Layout) -> bool:
    return (layout.mariadb_datadir / "mysql").is_dir()


def initialise(layout: Layout) -> None:
    """Create the data directory with ``mariadb-install-db`` (once)."""
    log.info("creating MariaDB data directory %s", layout.mariadb_datadir)
    result = run(
        [
            "mariadb-install-db",
            f"--defaults-file={layout.mariadb_cnf}",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
        ],
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise SandboxError(
            f"mariadb-install-db failed (exit code {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-2000:]}",
            hint=f"remove {layout.mariadb_datadir} and run `hpcplat sandbox up` again",
        )


def query(layout: Layout, sql: str) -> str:
    """Run ``sql`` as the database's root user over its Unix socket."""
    result = run(
        ["mariadb", f"--defaults-file={layout.mariadb_cnf}", "-N", "-B", "-e", sql],
        timeout=QUERY_TIMEOUT_S,
    )
    return result.stdout


def answers(layout: Layout) -> bool:
    if not layout.mariadb_socket.exists():
        return False
    result = run(
        ["mariadb", f"--defaults-file={layout.mariadb_cnf}", "-N", "-B", "-e", "SELECT 1"],
        timeout=QUERY_TIMEOUT_S,
        check=False,
    )
    return result.returncode == 0


def ensure_user(layout: Layout, *, user: str, password: str, database: str) -> None:
    """The account slurmdbd logs in with (over TCP from 127.0.0.1), owning ``database``."""
    account = f"{_sql_str(user)}@'127.0.0.1'"
    query(
        layout,
        f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {_sql_str(password)};"
        f" ALTER USER {account} IDENTIFIED BY {_sql_str(password)};"
        f" CREATE DATABASE IF NOT EXISTS `{database}`;"
        f" GRANT ALL ON `{database}`.* TO {account};",
    )
