"""What several command modules share: the Slurm client and site config, job id checks and
lookups, a job's record as a dict, and the catalog option. Command modules import from here (and
from :mod:`hpcplat.cli.output` and :mod:`hpcplat.cli.specflags`), never from each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hpcplat.errors import HpcplatError, SlurmError, UsageError
from hpcplat.slurm.parse import run_id_from_comment
from hpcplat.slurm.state import JobState, parse_job_id

if TYPE_CHECKING:
    from hpcplat.catalog.service import Catalog
    from hpcplat.server.client import Client as ServerClient
    from hpcplat.siteconfig import SiteConfig
    from hpcplat.slurm.client import SlurmClient
    from hpcplat.slurm.models import JobInfo
    from hpcplat.slurm.output import OutputLocation


# -- Slurm jobs -----------------------------------------------------------------------------------


def slurm_client() -> SlurmClient:
    from hpcplat.slurm import get_client

    return get_client()


def site_config() -> SiteConfig:
    from hpcplat.siteconfig import load

    return load()


def check_ids(job_ids: Sequence[str]) -> list[str]:
    """The job ids, stripped; :class:`UsageError` for one that is not a Slurm job id."""
    out = []
    for job_id in job_ids:
        try:
            parse_job_id(job_id)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        out.append(job_id.strip())
    return out


def find_jobs(client: SlurmClient, job_ids: Sequence[str]) -> dict[str, JobInfo]:
    """Records of the given jobs: one squeue call, plus one sacct call for those squeue lacks.
    Raises :class:`UsageError` naming the ids neither knows."""
    from hpcplat.slurm.watcher import _expand, _lookup

    live = _expand(client.jobs(list(job_ids)))
    found = {j: r for j in job_ids if (r := _lookup(j, live)) is not None}
    missing = [j for j in job_ids if j not in found]
    if missing:
        try:
            history = _expand(client.history(missing))
        except SlurmError:
            history = {}
        for j in missing:
            record = _lookup(j, history)
            if record is not None:
                found[j] = record
    unknown = [j for j in job_ids if j not in found]
    if unknown:
        word, pronoun = ("job", "it") if len(unknown) == 1 else ("jobs", "them")
        raise UsageError(
            f"no such {word}: {', '.join(unknown)} (neither squeue nor sacct knows {pronoun})",
            hint="`hpcplat jobs` lists your jobs",
        )
    return found


def run_id_of(info: JobInfo) -> str:
    return run_id_from_comment(info.comment) or ""


def elapsed(info: JobInfo) -> str | None:
    """H:MM:SS the job has run (so far, while it runs), or None when unknown."""
    seconds = info.elapsed_s
    if (
        seconds is None
        and info.start_time is not None
        and info.state in (JobState.RUNNING, JobState.COMPLETING)
    ):
        seconds = max(0, int(time.time() - info.start_time.timestamp()))
    if seconds is None:
        return None
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def info_dict(info: JobInfo) -> dict[str, Any]:
    """A job's record as JSON (``jobs --json``, ``show --json``)."""
    return {
        "job_id": info.job_id,
        "name": info.name,
        "user": info.user,
        "state": info.state.value,
        "reason": info.reason,
        "partition": info.partition,
        "account": info.account,
        "qos": info.qos,
        "nodes": info.nodes,
        "num_nodes": info.num_nodes,
        "gpus": info.gpus,  # the whole job's, queued, running or in accounting
        "gpus_per_node": info.gpus_per_node,
        "exit_code": info.exit_code,
        "restarts": info.restarts,
        "submit_time": info.submit_time.isoformat() if info.submit_time else None,
        "start_time": info.start_time.isoformat() if info.start_time else None,
        "end_time": info.end_time.isoformat() if info.end_time else None,
        "elapsed_s": info.elapsed_s,
        "time_limit": info.time_limit,
        "run_id": run_id_of(info) or None,
        "work_dir": info.work_dir,
    }


def output_path(client: SlurmClient, info: JobInfo, job_id: str, config: SiteConfig) -> OutputLocation:
    """Where a job's output is: Slurm's answer (``StdOut``) while it has one, else a guess that
    says so (:mod:`hpcplat.slurm.output`)."""
    from hpcplat.slurm.output import output_location

    return output_location(client, info, job_id, job_root=config.job_root_path())


# -- the catalog ----------------------------------------------------------------------------------

catalog_option = click.option(
    "--catalog",
    "catalog_url",
    metavar="URL",
    default=None,
    help="Catalog database URL (default: $HPCPLAT_CATALOG_URL, then [catalog] url of the site config).",
)


def open_catalog(url: str | None) -> Catalog:
    from hpcplat.catalog.service import Catalog

    return Catalog.open(url)


# -- the hpcplat server ---------------------------------------------------------------------------

T = TypeVar("T")
SERVER_READ_TIMEOUT_S = 10.0


def catalog_server(catalog_url: str | None) -> ServerClient | None:
    """The client of the hpcplat server when catalog reads go through it: the site file has a
    ``[server]`` section and no catalog was named (``--catalog`` or ``$HPCPLAT_CATALOG_URL``, which
    mean "read this database"). On the server's Unix socket the kernel says who the caller is (no
    munge call); over TCP each request carries a munge credential."""
    import os

    if catalog_url or os.environ.get("HPCPLAT_CATALOG_URL"):
        return None
    section = site_config().section("server")
    if not section:
        return None
    from hpcplat.server.client import Client, ServerError

    try:
        client = Client.from_section(section, timeout=SERVER_READ_TIMEOUT_S)
    except ServerError:
        return None
    if client.socket:
        client.use_munge = False
    return client


def from_server(catalog_url: str | None, ask: Callable[[ServerClient], T]) -> T | None:
    """``ask(client)`` of the hpcplat server, or ``None`` when reads go to the catalog directly:
    no server configured, or the server does not answer (said in one line on stderr). A refusal
    (bad reference, no permission) is an error, as it would be without the server."""
    client = catalog_server(catalog_url)
    if client is None:
        return None
    from hpcplat.server.client import ServerError

    try:
        return ask(client)
    except ServerError as exc:
        if exc.status == 0 or exc.status >= 500:
            click.echo(f"warning: {exc}; reading the catalog directly", err=True)
            return None
        if exc.status in (400, 404, 422):
            raise UsageError(exc.detail) from None  # the server's words, its hint included
        raise HpcplatError(f"the hpcplat server refused: {exc.detail}") from None
