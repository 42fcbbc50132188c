"""``hpcplat board``: a one-time login link to the web board, for your munge-verified identity."""

from __future__ import annotations

import os

import click

from hpcplat.errors import HpcplatError, UsageError

BASE_URL_ENV = "HPCPLAT_BOARD_URL"


@click.command("board")
@click.option(
    "--base-url",
    metavar="URL",
    help=f"The server's address as your browser reaches it (an SSH tunnel, a reverse proxy with a "
    f"path prefix); default: ${BASE_URL_ENV}, else http://HOST:PORT of the site file's [server].",
)
@click.option("--open", "open_browser", is_flag=True, help="Also open the link in a browser here.")
def board(base_url: str | None, open_browser: bool) -> None:
    """Print a one-time login link to the web board (munge proves who you are; the link works once)."""
    from hpcplat.cli.common import site_config
    from hpcplat.server.client import Client, ServerError

    section = site_config().section("server")
    base = base_url or os.environ.get(BASE_URL_ENV) or _default_base(section)
    if not base.startswith(("http://", "https://")):
        raise UsageError(
            f"--base-url must start with http:// or https://, got {base!r}",
            hint="for example --base-url http://localhost:17003 or https://ood.example.org/hpcplat",
        )
    try:
        answer = Client.from_section(section).post("/board/api/links", {})
    except ServerError as exc:
        if exc.status == 404:
            raise HpcplatError(
                "the hpcplat server has no web board (it runs an older hpcplat)",
                hint="restart it with this version (`hpcplat sandbox down && hpcplat sandbox up`)",
            ) from None
        raise HpcplatError(str(exc), hint="is the server running? (`hpcplat sandbox status`)") from None
    url = f"{base.rstrip('/')}/{answer['path']}"
    click.echo(url)
    click.echo(f"(works once, within {answer['expires_in_s']} s)", err=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)


def _default_base(section: dict[str, object]) -> str:
    port = section.get("port")
    if not isinstance(port, int):
        raise UsageError(
            "the server listens on a Unix socket only, so there is no address for a browser",
            hint=f"give --base-url (or set ${BASE_URL_ENV}) to the address of a proxy or SSH tunnel",
        )
    host = section.get("host") or "127.0.0.1"
    return f"http://{host}:{port}"
