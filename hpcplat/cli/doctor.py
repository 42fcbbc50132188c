"""``hpcplat doctor``: check that the cluster has what hpcplat relies on. It never changes anything."""

from __future__ import annotations

import sys

import click

from hpcplat.cli.output import echo_json, echo_table


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checklist as JSON.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1, max=600),
    default=15.0,
    show_default=True,
    help="Seconds each Slurm, munge or server call may take.",
)
def doctor(as_json: bool, timeout: float) -> None:
    """Check Slurm, munge, the site file, the server and the node agents for what hpcplat needs.

    Each item is ok, degraded (hpcplat works, something it offers does not), missing (something it
    relies on is absent) or skipped (not measurable here, with the reason); the ones that are not ok
    name the setting to change and why. Exit code: 0 all ok, 1 degraded, 2 broken (something
    missing, or an unreadable site file). Run it on a login node, as an admin or a user.
    """
    from hpcplat.cli.common import site_config
    from hpcplat.doctor import diagnose, exit_code, overall

    checks = diagnose(site_config(), timeout=timeout)
    verdict = overall(checks).value
    code = exit_code(checks)
    if as_json:
        echo_json({"status": verdict, "exit_code": code, "checks": [c.as_dict() for c in checks]})
        sys.exit(code)
    echo_table(["ITEM", "STATUS", "FINDING"], [(c.title, c.status.value, c.detail) for c in checks])
    todo = [c for c in checks if c.fix]
    for check in todo:
        click.echo(f"\n{check.title} ({check.status.value}):\n  fix: {check.fix}")
        if check.why:
            click.echo(f"  why: {check.why}")
    word = {0: "ok", 1: "degraded", 2: "broken"}[code]
    click.echo(f"\n{word}: {len(todo)} item(s) to fix" if todo else "\nok: nothing to fix")
    sys.exit(code)
