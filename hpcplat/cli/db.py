"""``hpcplat db upgrade | current``: the catalog's schema revision."""

from __future__ import annotations

import click

from hpcplat.cli.common import catalog_option


@click.group()
def db() -> None:
    """Catalog database: upgrade, current revision."""


@db.command("upgrade")
@catalog_option
def upgrade(catalog_url: str | None) -> None:
    """Apply the schema migrations this hpcplat ships (safe to run again)."""
    from hpcplat.catalog import schema
    from hpcplat.catalog.engine import redact_url

    engine = schema.open_engine(catalog_url, check=False)
    try:
        before, after = schema.upgrade(engine)
    finally:
        engine.dispose()
    where = redact_url(engine.url.render_as_string())
    if before == after:
        click.echo(f"catalog {where} is at revision {after} (the newest); nothing to do")
    else:
        click.echo(f"catalog {where} upgraded: {before or 'empty'} -> {after}")


@db.command("current")
@catalog_option
def current(catalog_url: str | None) -> None:
    """Print the catalog's schema revision and whether it is the newest."""
    from hpcplat.catalog import schema
    from hpcplat.catalog.engine import redact_url

    engine = schema.open_engine(catalog_url, check=False)
    try:
        revision = schema.current_revision(engine)
    finally:
        engine.dispose()
    where = redact_url(engine.url.render_as_string())
    if revision == schema.HEAD:
        click.echo(f"{where}: revision {revision} (newest)")
    elif revision is None:
        click.echo(f"{where}: no schema; run `hpcplat db upgrade`")
    else:
        click.echo(f"{where}: revision {revision}; newest is {schema.HEAD}: run `hpcplat db upgrade`")
