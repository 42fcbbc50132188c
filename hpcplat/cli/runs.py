"""``hpcplat runs``, ``hpcplat run show|plot``, ``hpcplat rerun`` and ``hpcplat reconcile``.

Thin commands over :class:`hpcplat.catalog.Catalog`. ``hpcplat runs`` (the list) uses SQLAlchemy Core
only, so it stays fast; nothing here imports the catalog before a command runs. When the site file
has a ``[server]`` section, ``runs`` and ``run show`` ask the hpcplat server (whose catalog its live
loop keeps in step with Slurm) and import neither SQLAlchemy nor SQLModel; a server that does not
answer is said on stderr and the catalog is read directly.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hpcplat.cli import output
from hpcplat.cli.common import catalog_option, from_server, open_catalog
from hpcplat.cli.output import echo_json
from hpcplat.errors import HpcplatError, UsageError

if TYPE_CHECKING:
    from hpcplat.catalog.listing import RunRow
    from hpcplat.catalog.queries import RunDetails
    from hpcplat.catalog.service import Catalog
    from hpcplat.server.client import Client as ServerClient


def _when(value: datetime | str | None) -> str:
    """A time as local wall-clock text; ``value`` may be ISO 8601 text (JSON from the catalog)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


SERVER_PAGE = 1000
"""Runs per request to the server (its ``MAX_LIMIT``)."""


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return str(value)
    return json.dumps(value, sort_keys=True)


# -- hpcplat runs -------------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--user", help="Only runs of this user.")
@click.option("--team", help="Only runs of this team (Slurm account).")
@click.option("--tag", help="Only runs with this tag.")
@click.option("--status", help="Only runs in these states, comma-separated (e.g. running,requeued).")
@click.option(
    "--limit", type=int, default=50, show_default=True, help="At most this many runs, newest first."
)
@click.option("--json", "as_json", is_flag=True, help="JSON output (one array).")
@catalog_option
@click.pass_context
def runs(
    ctx: click.Context,
    *,
    user: str | None,
    team: str | None,
    tag: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
    catalog_url: str | None,
) -> None:
    """List runs in the catalog (newest first), or compare runs (`hpcplat runs compare A B`)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"catalog_url": catalog_url}
        return
    from hpcplat.catalog.listing import build_query, list_runs_at

    filters: dict[str, Any] = {"user": user, "team": team, "tag": tag, "status": status, "limit": limit}
    build_query(**filters)  # bad filters are the same clear error with or without the server
    rows = from_server(catalog_url, lambda client: _server_rows(client, filters))
    if rows is None:
        rows = list_runs_at(catalog_url, **filters)
    if as_json:
        echo_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("no runs match" if any((user, team, tag, status)) else "no runs in the catalog yet")
        return
    table = [
        [
            r.id[:8],
            r.name,
            r.owner,
            r.team,
            r.status.value,
            r.job_id or None,
            _when(r.created),
            ",".join(r.tags),
        ]
        for r in rows
    ]
    output.echo_table(["RUN", "NAME", "OWNER", "TEAM", "STATUS", "JOB", "CREATED", "TAGS"], table)


def _server_rows(client: ServerClient, filters: dict[str, Any]) -> list[RunRow]:
    """The runs the server lists (``GET /api/v1/runs``), page by page up to ``limit``."""
    from urllib.parse import urlencode

    from hpcplat.catalog.enums import RunStatus
    from hpcplat.catalog.listing import RunRow

    wanted: int = filters["limit"]
    query = {k: v for k, v in filters.items() if k != "limit" and v}
    rows: list[RunRow] = []
    offset: int | None = 0
    while offset is not None and len(rows) < wanted:
        page = min(SERVER_PAGE, wanted - len(rows))
        answer = client.get(f"/api/v1/runs?{urlencode({**query, 'limit': page, 'offset': offset})}")
        for r in answer["runs"]:
            created = datetime.fromisoformat(r["created"]).astimezone(UTC)
            rows.append(RunRow(**{**r, "status": RunStatus(r["status"]), "created": created}))
        offset = answer["next_offset"]
    return rows


@runs.command("compare")
@click.argument("refs", nargs=-1, required=True)
@click.option(
    "--all", "show_all", is_flag=True, help="Show equal rows too (default: differences and key rows)."
)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@catalog_option
@click.pass_context
def compare(
    ctx: click.Context, refs: tuple[str, ...], show_all: bool, as_json: bool, catalog_url: str | None
) -> None:
    """Params, final metrics and provenance of runs side by side; differences are highlighted."""
    if len(refs) < 2:
        raise UsageError(
            "compare needs at least two runs", hint="hpcplat runs compare RUN_A RUN_B [RUN_C ...]"
        )
    url = catalog_url or (ctx.obj or {}).get("catalog_url")
    with open_catalog(url) as catalog:
        result = catalog.compare(list(refs))
    if as_json:
        echo_json(result.to_dict())
        return
    headers = [
        "",
        "SECTION",
        "KEY",
        *[f"{rid[:8]} {name}".strip() for rid, name in zip(result.run_ids, result.names, strict=True)],
    ]
    shown = [r for r in result.rows if show_all or r.differs or r.section in ("run", "metrics")]
    table = [
        [
            "*" if r.differs else "",
            r.section,
            r.key,
            *[v if len(v) <= 40 else v[:37] + "..." for v in r.values],
        ]
        for r in shown
    ]
    text = output.table(headers, table).splitlines()
    click.echo(text[0])
    for line, row in zip(text[1:], shown, strict=True):
        click.echo(click.style(line, fg="yellow", bold=True) if row.differs else line)
    click.echo(f"\n{len(result.differences)} differences (marked *) across {len(result.rows)} rows")


# -- hpcplat run show / plot --------------------------------------------------------------------


@click.group()
def run() -> None:
    """Show or plot one run from the catalog."""


@run.command("show")
@click.argument("ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Everything as JSON.")
@click.option("--diff", "show_diff", is_flag=True, help="Print the recorded uncommitted diff.")
@click.option("--script", "show_script", is_flag=True, help="Print the recorded sbatch script.")
@catalog_option
def show(ref: str, as_json: bool, show_diff: bool, show_script: bool, catalog_url: str | None) -> None:
    """Provenance, params, latest metrics, attempts, events and GPU-hours of one run."""
    query = "?script=true" if show_script else ""
    data = from_server(catalog_url, lambda client: _server_details(client, ref, query))
    if data is None:
        with open_catalog(catalog_url) as catalog:
            details = catalog.details(ref)
            data = details.to_dict()
            if show_script:
                data["script"] = catalog.sbatch_script(details.run.id)
    script = data.pop("script", "")
    if as_json:
        echo_json(data)
        return
    if show_diff:
        diff = (data["provenance"]["code"] or {}).get("diff")
        click.echo(diff or "(no uncommitted diff recorded)")
        return
    if show_script:
        click.echo(script or "(no sbatch script recorded)")
        return
    click.echo(render_details(data))


def _server_details(client: ServerClient, ref: str, query: str) -> dict[str, Any]:
    from urllib.parse import quote

    answer: dict[str, Any] = client.get(f"/api/v1/runs/{quote(ref.strip(), safe='')}/details{query}")
    return answer


def render_details(data: RunDetails | dict[str, Any]) -> str:
    """``run show``'s text, from :meth:`RunDetails.to_dict` (the server's answer is that dict)."""
    d = data.to_dict() if not isinstance(data, dict) else data
    r = d["run"]
    out = [
        f"run {r['id']}  {r['name']}",
        f"  status   {r['status']}" + (f" ({r['status_reason']})" if r["status_reason"] else ""),
    ]
    out.append(
        f"  owner    {r['owner']}  team {r['team'] or '-'}  tier {r['tier'] or '-'}  "
        f"tags {','.join(r['tags']) or '-'}"
    )
    out.append(f"  created  {_when(r['created'])}  updated {_when(r['updated'])}")
    if r["rerun_of"]:
        out.append(f"  rerun of {r['rerun_of']}")
    out += _render_code(d["provenance"]["code"] or None)
    out += _render_env(d["provenance"]["env"] or None)
    out.append("datasets")
    out += [
        f"  {v['dataset']}@{v['version']}  {v['content_hash'][:16]}  {v['file_count']} files  {v['location']}"
        for v in d["datasets"]
    ] or ["  -"]
    out.append("params")
    out += [f"  {k} = {_value(v)}" for k, v in d["params"].items()] or ["  -"]
    out.append("metrics (latest)")
    out += [
        f"  {m['name']} = {m['value']:.6g} at step {m['step']}  "
        f"({m['count']} points, min {m['minimum']:.4g}, max {m['maximum']:.4g})"
        for m in d["metrics"]
    ] or ["  -"]
    out += _render_attempts(d["attempts"])
    hours = d["gpu_hours"]
    out.append(
        f"GPU-hours  allocated {hours['allocated']:.2f} (Slurm)  used {hours['used']:.2f}  "
        f"idle {hours['idle']:.2f} (node agent)"
    )
    if d["artifacts"]:
        out.append("artifacts")
        out += [
            f"  {a['kind'].lower():<10} {a['path']}  {a['size']} bytes  {a['sha256'][:12]}"
            for a in d["artifacts"]
        ]
    out.append("events")
    out += [
        f"  {_when(e['at'])}  {e['kind']:<13} {e['source'] or '-':<12} {e['job_id'] or '-':<10} {e['reason']}"
        for e in d["events"]
    ] or ["  -"]
    return "\n".join(out)


def _render_code(c: dict[str, Any] | None) -> list[str]:
    out = ["code"]
    if c is None:
        out.append("  (not recorded)")
    elif c["vcs"] != "git":
        out.append(f"  not under git: {c['reason']}")
    else:
        out.append(
            f"  {c['repo'] or c['root']} @ {c['commit'] or '(no commit)'} ({c['branch'] or 'detached'})"
        )
        state = "dirty" if c["dirty"] else "clean"
        if c["dirty"]:
            state += (
                f", diff of {len(c['diff'].splitlines())} lines recorded"
                if c["diff"]
                else ", diff too large to record"
            )
        if c["untracked"]:
            state += f", {len(c['untracked'])} untracked files not recorded"
        out.append(f"  {state}")
    return out


def _render_env(e: dict[str, Any] | None) -> list[str]:
    out = ["environment"]
    if e is None:
        out.append("  (not recorded)")
        return out
    out.append(f"  python {e['python_version']} on {e['hostname']}, {len(e['packages'])} packages")
    out.append(f"  modules {' '.join(e['modules']) or '-'}")
    extras = [
        f"{label} {e[key]}"
        for label, key in (
            ("container", "container_image"),
            ("digest", "container_digest"),
            ("cuda", "cuda_version"),
            ("driver", "driver_version"),
            ("nccl", "nccl_version"),
            ("torch", "torch_version"),
        )
        if e[key]
    ]
    if extras:
        out.append("  " + ", ".join(extras))
    return out


def _render_attempts(attempts: list[dict[str, Any]]) -> list[str]:
    if not attempts:
        return ["attempts", "  -"]
    rows = [
        [
            a["job_id"],
            str(a["restart"]),
            a["state"],
            a["nodes"] or None,
            _when(a["start"]),
            _when(a["end"]),
            a["exit_code"],
            a["reason"] or "",
        ]
        for a in attempts
    ]
    table = output.table(["JOB", "RESTART", "STATE", "NODES", "START", "END", "EXIT", "REASON"], rows)
    return ["attempts", *("  " + line for line in table.splitlines())]


@run.command("plot")
@click.argument("ref", metavar="RUN")
@click.option("--metric", required=True, help="The metric to plot (e.g. loss).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), help="PNG path.")
@click.option("--no-png", is_flag=True, help="Only the terminal plot.")
@click.option("--width", type=int, default=72, show_default=True)
@click.option("--height", type=int, default=16, show_default=True)
@catalog_option
def plot(
    *,
    ref: str,
    metric: str,
    out_path: Path | None,
    no_png: bool,
    width: int,
    height: int,
    catalog_url: str | None,
) -> None:
    """Plot one metric of a run: in the terminal, and as a PNG."""
    from hpcplat.plot import png_plot, text_plot

    with open_catalog(catalog_url) as catalog:
        details = catalog.details(ref)
        series = catalog.metric_series(details.run.id, metric)
    if not series:
        names = ", ".join(m.name for m in details.metrics) or "none"
        raise UsageError(
            f"run {details.run.id[:8]} has no metric {metric!r} (metrics: {names})", hint="pick one of them"
        )
    title = f"{metric} - run {details.run.id[:8]} {details.run.name}".rstrip()
    click.echo(text_plot(series, width=width, height=height, title=title))
    if not no_png:
        target = out_path or Path(f"{details.run.id[:8]}-{metric}.png")
        png_plot({metric: series}, target, title=title, ylabel=metric)
        click.echo(f"PNG: {target}")


# -- hpcplat rerun ------------------------------------------------------------------------------


@click.command()
@click.argument("ref", metavar="RUN")
@click.option("--allow-drift", is_flag=True, help="Submit even when code, data, modules or packages differ.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the rerun to finish and compare its metrics.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds to wait with --wait.")
@catalog_option
def rerun(ref: str, allow_drift: bool, wait_: bool, timeout: float, catalog_url: str | None) -> None:
    """Rebuild a run's job from the catalog, check for drift, and submit it again."""
    with open_catalog(catalog_url) as catalog:
        original = catalog.details(ref)
        if original.run.spec.get("kind") == "sbatch" or not original.run.spec:
            raise UsageError(
                f"run {original.run.id[:8]} was started with plain sbatch: the catalog has its script, "
                "not a job spec",
                hint=f"resubmit the script (`hpcplat run show {original.run.id[:8]} --script`) with sbatch",
            )
        report = catalog.drift(original.run.id)
        if report.blocking and not allow_drift:
            lines = "\n".join(f"  - {d}" for d in report.differences)
            raise UsageError(
                f"run {original.run.id[:8]} cannot be rerun as recorded; what differs now:\n{lines}",
                hint="restore what differs (for code: git checkout the commit and apply "
                f"`hpcplat run show {original.run.id[:8]} --diff`), or pass --allow-drift",
            )
        for difference in report.differences:
            click.echo(f"drift: {difference}", err=True)
        from hpcplat.spec import JobSpec
        from hpcplat.submission import submit

        spec = JobSpec.from_dict(original.run.spec)
        submission = submit(spec)
        new_id = str(submission.run_id)
        catalog.set_rerun_of(new_id, original.run.id)
        note = f"rerun of {original.run.id}"
        if report.differences:
            note += "; drift: " + "; ".join(report.lines())
        catalog.add_event(kind="NOTE", reason=note, run_id=new_id, source="rerun")
        click.echo(f"submitted run {new_id} (job {submission.job_id}), a rerun of {original.run.id}")
        if wait_:
            _wait_and_compare(catalog, original, new_id, timeout)


def _wait_and_compare(catalog: Catalog, original: RunDetails, new_id: str, timeout: float) -> None:
    from hpcplat.catalog.agreement import agreement
    from hpcplat.slurm.client import get_client

    client = get_client()
    deadline = time.monotonic() + timeout
    delay = 2.0
    while True:
        catalog.reconcile(client)
        status = catalog.run(new_id).status
        if status.is_terminal:
            break
        if time.monotonic() > deadline:
            raise HpcplatError(
                f"run {new_id[:8]} is still {status.value} after {timeout:g} s",
                hint=f"check later with `hpcplat run show {new_id[:8]}`",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 30.0)
    click.echo(f"rerun {new_id[:8]} finished: {status.value}")
    names = [m.name for m in original.metrics]
    before = {n: catalog.metric_series(original.run.id, n) for n in names}
    after = {n: catalog.metric_series(new_id, n) for n in names}
    results = agreement(before, after)
    for result in results:
        click.echo(f"  {result}")
    if results and all(r.bit_exact for r in results):
        click.echo("metrics agree bit-exactly with the original run")


# -- hpcplat reconcile --------------------------------------------------------------------------


@click.command()
@click.option(
    "--grace",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds before a stuck submission is resolved.",
)
@click.option(
    "--spool",
    "spools",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Also ingest this spool file.",
)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@catalog_option
def reconcile(grace: float, spools: tuple[Path, ...], as_json: bool, catalog_url: str | None) -> None:
    """Bring attempts, run states and usage in line with Slurm (one squeue + one sacct)."""
    from dataclasses import asdict

    from hpcplat.slurm.client import get_client

    with open_catalog(catalog_url) as catalog:
        report = catalog.reconcile(get_client(), grace_s=grace)
        for path in spools:
            report.spool_points += catalog.ingest_spool(path)
    if as_json:
        echo_json(asdict(report))
        return
    click.echo(report.summary())
    for run_id, old, new in report.runs_changed:
        click.echo(f"  {run_id[:8]}  {old} -> {new}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
