"""``hpcplat data register | ls | show``: dataset versions in the catalog."""

from __future__ import annotations

from pathlib import Path

import click

from hpcplat.cli.common import catalog_option, open_catalog
from hpcplat.cli.output import echo_json, echo_table


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@click.group()
def data() -> None:
    """Register and list dataset versions."""


@data.command("register")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--groups", default="", help="Unix groups allowed to use it, comma-separated (default: everyone)."
)
@catalog_option
def register(name: str, path: Path, groups: str, catalog_url: str | None) -> None:
    """Hash every file under PATH and record it as a new version of dataset NAME."""
    with open_catalog(catalog_url) as catalog:
        version, created = catalog.register_dataset(
            name, path, groups=[g for g in groups.split(",") if g.strip()]
        )
    summary = f"{version.file_count} files, {_size(version.total_bytes)}, content {version.content_hash[:16]}"
    if created:
        click.echo(f"registered {version.ref} ({summary}) at {version.location}")
    else:
        click.echo(
            f"{version.ref} already has this content, location and groups ({summary}); nothing registered"
        )


@data.command("ls")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@catalog_option
def ls(as_json: bool, catalog_url: str | None) -> None:
    """The latest version of every dataset."""
    with open_catalog(catalog_url) as catalog:
        versions = catalog.datasets()
    if as_json:
        echo_json([v.model_dump(mode="json") for v in versions])
        return
    if not versions:
        click.echo("no datasets registered (hpcplat data register NAME PATH)")
        return
    rows = [
        [
            v.dataset,
            str(v.version),
            str(v.file_count),
            _size(v.total_bytes),
            v.content_hash[:16],
            ",".join(v.allowed_groups) or "everyone",
            v.location,
        ]
        for v in versions
    ]
    echo_table(["NAME", "VERSION", "FILES", "SIZE", "HASH", "GROUPS", "LOCATION"], rows)


@data.command("show")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("--files", "all_files", is_flag=True, help="List every file (default: the first 20).")
@click.option("--verify", is_flag=True, help="Check that the files are unchanged since registration.")
@catalog_option
def show(ref: str, all_files: bool, verify: bool, catalog_url: str | None) -> None:
    """One dataset version: location, hash, groups, files; and the list of its versions."""
    from hpcplat.catalog.datasets import parse_ref

    name, version = parse_ref(ref)
    with open_catalog(catalog_url) as catalog:
        found = catalog.resolve_dataset(name, version, verify=verify)
        manifest = catalog.dataset_manifest(name, found.version)
        versions = catalog.dataset_versions(name)
    click.echo(f"dataset {found.ref}")
    click.echo(f"  location  {found.location}")
    click.echo(f"  content   {found.content_hash}")
    click.echo(f"  files     {found.file_count} ({_size(found.total_bytes)})")
    click.echo(f"  groups    {','.join(found.allowed_groups) or 'everyone'}")
    click.echo(f"  by        {found.registered_by} at {found.created.astimezone():%Y-%m-%d %H:%M:%S}")
    if verify:
        click.echo("  verified  the files are unchanged since registration")
    click.echo("files")
    shown = manifest.files if all_files else manifest.files[:20]
    for entry in shown:
        click.echo(f"  {entry.sha256[:12]}  {entry.size:>12}  {entry.path}")
    if len(shown) < len(manifest.files):
        click.echo(f"  ... and {len(manifest.files) - len(shown)} more (--files)")
    click.echo("versions")
    for v in versions:
        mark = "*" if v.version == found.version else " "
        click.echo(f" {mark}{v.version:>4}  {v.content_hash[:16]}  {v.file_count} files  {v.location}")
