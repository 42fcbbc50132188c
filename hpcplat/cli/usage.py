"""``hpcplat usage``: GPU-hours per team and user, from Slurm accounting."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import click

from hpcplat.cli.output import echo_json, echo_table
from hpcplat.errors import UsageError

_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``2w`` back from now, or an ISO date (``2026-11-01``)."""
    now = now or datetime.now()
    text = text.strip()
    if text and text[-1] in _UNITS and re.fullmatch(r"[0-9]{1,6}", text[:-1]):
        return now - timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a duration nor a date",
            hint="use e.g. 12h, 7d, 2w or 2026-11-01",
        ) from None


@click.command("usage")
@click.option("--since", default="7d", show_default=True, help="Period start: 12h, 7d, 2w or a date.")
@click.option("-A", "--account", "accounts", multiple=True, help="Only this team (repeatable).")
@click.option("-u", "--user", "users", multiple=True, help="Only this user (repeatable).")
@click.option("--by-team", is_flag=True, help="One row per team instead of per team and user.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def usage(
    since: str, accounts: tuple[str, ...], users: tuple[str, ...], by_team: bool, as_json: bool
) -> None:
    """GPU-hours per team (Slurm account) and user, with team quotas, from Slurm accounting."""
    from hpcplat.slurm import get_client
    from hpcplat.slurm.accounting import gpu_usage

    report = gpu_usage(
        get_client(), since=parse_since(since), accounts=accounts, users=users, by_user=not by_team
    )
    if as_json:
        echo_json(
            {
                "since": report.since.isoformat(timespec="seconds"),
                "total_gpu_hours": report.total_gpu_hours,
                "quotas": report.quotas,
                "rows": [
                    {
                        "account": r.account,
                        "user": r.user,
                        "jobs": r.jobs,
                        "gpu_hours": r.gpu_hours,
                        "cpu_hours": r.cpu_hours,
                        "states": r.states,
                    }
                    for r in report.rows
                ],
            }
        )
        return
    click.echo(f"GPU usage since {report.since:%Y-%m-%d %H:%M} (Slurm accounting)")
    rows: list[list[object]] = [
        [
            r.account,
            r.user or "*",
            r.jobs,
            f"{r.gpu_hours:.3f}",
            f"{r.cpu_hours:.3f}",
            report.quotas.get(r.account),
        ]
        for r in report.rows
    ]
    rows.append(["total", "", sum(r.jobs for r in report.rows), f"{report.total_gpu_hours:.3f}", "", ""])
    echo_table(
        ["TEAM", "USER", "JOBS", "GPU-HOURS", "CPU-HOURS", "QUOTA"],
        rows,
        right={"JOBS", "GPU-HOURS", "CPU-HOURS"},
    )
