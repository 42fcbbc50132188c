"""Schema: the Alembic migrations build exactly the models' tables, on SQLite and PostgreSQL.

The golden file lists every table, column, index and constraint of a migrated SQLite catalog;
regenerate it with ``UPDATE_GOLDEN=1 pytest tests/unit/test_catalog_schema.py`` after adding a
migration.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hpcplat.catalog import schema
from hpcplat.catalog.engine import make_engine
from hpcplat.cli.main import cli

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "catalog" / "schema.txt"


def describe(engine: sa.Engine) -> str:
    """Tables, columns (type, nullability), primary keys, foreign keys, unique constraints, indexes."""
    inspector = sa.inspect(engine)
    lines: list[str] = []
    for table in sorted(inspector.get_table_names()):
        lines.append(f"table {table}")
        for column in inspector.get_columns(table):
            null = "NULL" if column["nullable"] else "NOT NULL"
            lines.append(f"  column {column['name']} {column['type']} {null}")
        pk = inspector.get_pk_constraint(table)["constrained_columns"]
        lines.append(f"  primary key ({', '.join(pk)})")
        for fk in sorted(inspector.get_foreign_keys(table), key=lambda f: f["constrained_columns"]):
            target = f"{fk['referred_table']}({', '.join(fk['referred_columns'])})"
            lines.append(f"  foreign key ({', '.join(fk['constrained_columns'])}) -> {target}")
        for uq in sorted(inspector.get_unique_constraints(table), key=lambda u: str(u["name"])):
            lines.append(f"  unique {uq['name']} ({', '.join(uq['column_names'])})")
        for index in sorted(inspector.get_indexes(table), key=lambda i: str(i["name"])):
            cols = ", ".join(str(c) for c in index["column_names"])
            lines.append(f"  index {index['name']} ({cols}){' unique' if index['unique'] else ''}")
    return "\n".join(lines) + "\n"


def test_schema_snapshot(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    schema.upgrade(engine)
    text = describe(engine)
    engine.dispose()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "schema changed: add a migration, then UPDATE_GOLDEN=1 to accept"


def test_migrations_match_the_models(catalog_url: str) -> None:
    """Alembic's autogenerate finds nothing to do: models and migrations agree (on both engines)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from hpcplat.catalog import models

    engine = make_engine(catalog_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    type_ != "table" or name in models.CATALOG_TABLES
                ),
            },
        )
        diffs = compare_metadata(context, SQLModel.metadata)
    engine.dispose()
    assert diffs == []


def test_revision_list_matches_the_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(schema.alembic_config())
    ordered = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    assert tuple(ordered) == schema.REVISIONS
    assert scripts.get_current_head() == schema.HEAD


@pytest.mark.postgres
def test_states_are_plain_varchar_on_postgres(
    postgres_server: object, _postgres_catalog_template: str
) -> None:
    """Enum columns are VARCHAR: no PostgreSQL enum types to migrate when a state is added."""
    engine = make_engine(postgres_server.url(_postgres_catalog_template))  # type: ignore[attr-defined]
    with engine.connect() as conn:
        enums = conn.exec_driver_sql("SELECT typname FROM pg_type WHERE typtype = 'e'").all()
        kind = conn.exec_driver_sql(
            "SELECT data_type FROM information_schema.columns WHERE table_name='run' AND column_name='status'"
        ).scalar()
    engine.dispose()
    assert enums == []
    assert kind == "character varying"


def test_db_upgrade_and_current_commands(empty_catalog_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "current", "--catalog", empty_catalog_url])
    assert result.exit_code == 0, result.output
    assert "no schema; run `hpcplat db upgrade`" in result.output
    result = runner.invoke(cli, ["db", "upgrade", "--catalog", empty_catalog_url])
    assert result.exit_code == 0, result.output
    assert f"empty -> {schema.HEAD}" in result.output
    result = runner.invoke(cli, ["db", "upgrade", "--catalog", empty_catalog_url])
    assert "nothing to do" in result.output
    result = runner.invoke(cli, ["db", "current", "--catalog", empty_catalog_url])
    assert f"revision {schema.HEAD} (newest)" in result.output


def test_concurrent_upgrades_of_one_new_database(empty_catalog_url: str) -> None:
    """Two processes opening a brand-new catalog at once: both succeed, the schema is built once."""
    import threading

    errors: list[BaseException] = []

    def upgrade() -> None:
        engine = make_engine(empty_catalog_url)
        try:
            schema.upgrade(engine)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = make_engine(empty_catalog_url)
    assert schema.current_revision(engine) == schema.HEAD
    engine.dispose()
