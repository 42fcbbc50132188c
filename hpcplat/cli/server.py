"""``hpcplat server``: run the server (the catalog as a service); ``hpcplat server whoami``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hpcplat.cli.output import echo_json
from hpcplat.errors import HpcplatError


@click.group("server", invoke_without_command=True)
@click.option(
    "--pid-file", type=click.Path(dir_okay=False, path_type=Path), help="Write this process's pid here."
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append stdout and stderr here (for running in the background).",
)
@click.pass_context
def server(ctx: click.Context, pid_file: Path | None, log_file: Path | None) -> None:
    """Serve the catalog's API on the site file's [server] socket and/or port (until SIGTERM)."""
    if ctx.invoked_subcommand is not None:
        return
    if log_file is not None:
        _redirect_output(log_file)
    from hpcplat.cli.common import site_config
    from hpcplat.server.app import ServerSettings, serve

    settings = ServerSettings.from_site(site_config())
    serve(settings, pid_file=pid_file)


def _redirect_output(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


@server.command("whoami")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--no-munge", is_flag=True, help="Send no munge credential (the Unix socket's peer credentials only)."
)
def whoami(as_json: bool, no_munge: bool) -> None:
    """Ask the server who you are (a munge credential proves it)."""
    from hpcplat.cli.common import site_config
    from hpcplat.server.client import Client, ServerError

    try:
        client = Client.from_section(site_config().section("server"), use_munge=not no_munge)
        answer = client.whoami()
    except ServerError as exc:
        raise HpcplatError(str(exc), hint="is the server running? (`hpcplat sandbox status`)") from None
    if as_json:
        echo_json(answer)
        return
    groups = ", ".join(answer["groups"])
    admin = " (admin)" if answer["admin"] else ""
    click.echo(
        f"{answer['user']}{admin} uid={answer['uid']} gid={answer['gid']} groups={groups} via {answer['via']}"
    )
