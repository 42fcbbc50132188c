"""``hpcplat fleet``: the site's machines over SSH (check, exec, logs) and through Slurm (drain, resume).

Thin: the work is in :mod:`hpcplat.fleet`. The inventory is the Ansible one (``-i`` or
``$HPCPLAT_INVENTORY``); host keys are checked against ``--known-hosts`` (default
``~/.ssh/known_hosts``); authentication uses keys or the SSH agent, never a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hpcplat.cli.output import echo_json, table
from hpcplat.errors import UsageError

if TYPE_CHECKING:
    from hpcplat.fleet.check import FleetReport
    from hpcplat.fleet.inventory import Host, Inventory
    from hpcplat.fleet.ops import ExecOutcome, NodeChange
    from hpcplat.fleet.ssh import SshOptions

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_WORKERS = 32


@dataclass(frozen=True)
class FleetSettings:
    inventory: str | None
    known_hosts: str | None
    accept_new: bool
    identity: str | None
    use_agent: bool
    connect_timeout: float
    workers: int

    def load_inventory(self) -> Inventory:
        from hpcplat.fleet.inventory import load_inventory

        if not self.inventory:
            raise UsageError(
                "no inventory given",
                hint="pass -i PATH (an Ansible YAML inventory) or set HPCPLAT_INVENTORY; "
                "see ansible/inventory/hosts.example.yml",
            )
        return load_inventory(self.inventory)

    def ssh_options(self) -> SshOptions:
        from hpcplat.fleet.ssh import SshOptions, default_known_hosts

        return SshOptions(
            known_hosts=Path(self.known_hosts).expanduser() if self.known_hosts else default_known_hosts(),
            accept_new=self.accept_new,
            identity=self.identity,
            allow_agent=self.use_agent,
            connect_timeout=self.connect_timeout,
        )


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be more than 0, got {value:g}")
    return value


@click.group()
@click.option(
    "-i",
    "--inventory",
    envvar="HPCPLAT_INVENTORY",
    type=click.Path(dir_okay=False),
    help="Ansible YAML inventory of the site [env: HPCPLAT_INVENTORY].",
)
@click.option(
    "--known-hosts",
    envvar="HPCPLAT_KNOWN_HOSTS",
    type=click.Path(dir_okay=False),
    help="known_hosts file to verify host keys against [default: ~/.ssh/known_hosts].",
)
@click.option(
    "--accept-new",
    is_flag=True,
    help="Record the keys of hosts not yet in known_hosts (a changed key is still refused).",
)
@click.option(
    "-k",
    "--identity",
    type=click.Path(exists=True, dir_okay=False),
    help="Private key to offer (overrides ansible_ssh_private_key_file).",
)
@click.option("--no-agent", is_flag=True, help="Do not use the SSH agent's keys.")
@click.option(
    "--connect-timeout",
    type=float,
    default=DEFAULT_CONNECT_TIMEOUT_S,
    show_default=True,
    callback=_positive,
    help="Seconds to connect and log in to one host.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 512),
    default=DEFAULT_WORKERS,
    show_default=True,
    help="Hosts at once.",
)
@click.pass_context
def fleet(  # noqa: PLR0917 - click passes options positionally
    ctx: click.Context,
    inventory: str | None,
    known_hosts: str | None,
    accept_new: bool,
    identity: str | None,
    no_agent: bool,
    connect_timeout: float,
    parallel: int,
) -> None:
    """Physical machines over SSH: check, exec, drain, resume, logs.

    Hosts are named by their inventory name or a group (controller, compute, dbd, login, all).
    """
    ctx.obj = FleetSettings(
        inventory, known_hosts, accept_new, identity, not no_agent, connect_timeout, parallel
    )


def _settings(ctx: click.Context) -> FleetSettings:
    settings = ctx.find_object(FleetSettings)
    if settings is None:  # pragma: no cover - the group always sets it
        raise UsageError("run this as `hpcplat fleet ...`")
    return settings


def _slurm_client() -> Any:
    from hpcplat.slurm.client import get_client

    return get_client()


# ---------------------------------------------------------------- check

_COLUMNS = (
    "ssh",
    "munged",
    "slurmctld",
    "slurmdbd",
    "slurmd",
    "node_agent",
    "slurm",
    "gpus",
    "disk",
    "clock",
    "load",
)


def _cell(report_probe: Any) -> str:
    from hpcplat.fleet.check import Health

    probe = report_probe
    if probe is None:
        return "-"
    if probe.health is Health.SKIP:
        return "skip"
    if probe.name == "ssh" and probe.health is not Health.OK:
        return f"FAIL:{probe.value}" if probe.value else "FAIL"
    value = probe.value
    if probe.name in {"munged", "slurmctld", "slurmdbd", "slurmd", "node_agent", "ssh"}:
        text = "up" if probe.health is Health.OK else "down"
    elif probe.name.startswith("disk") and isinstance(value, float):
        text = f"{value:.0f}%free"
    elif probe.name == "clock" and isinstance(value, float):
        text = f"{value:+.3f}s"
    elif probe.name == "load" and isinstance(value, float):
        text = f"{value:.2f}"
    else:
        text = "?" if value is None else str(value)
    if probe.health is Health.FAIL:
        return f"FAIL:{text}"
    if probe.health is Health.WARN:
        return f"warn:{text}"
    return text


def render_check_table(report: FleetReport) -> str:
    from hpcplat.fleet.check import Health

    used = [c for c in _COLUMNS if any(h.probe(c) for h in report.hosts)]
    header = ["HOST", "HEALTH", *[c.upper() for c in used]]
    rows = [[h.host, h.health.value, *[_cell(h.probe(c)) for c in used]] for h in report.hosts]
    lines = table(header, rows).splitlines()
    problems = [
        f"{h.host}: {p.name}: {p.detail}"
        for h in report.hosts
        for p in h.probes
        if p.health in {Health.FAIL, Health.WARN}
    ]
    if problems:
        lines += ["", *problems]
    if report.slurm != "ok":
        lines.append(f"(Slurm's view skipped: {report.slurm})")
    for added in report.added_host_keys:
        lines.append(f"(recorded new host key: {added})")
    return "\n".join(lines)


@fleet.command()
@click.argument("targets", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--timeout",
    type=float,
    default=20.0,
    show_default=True,
    callback=_positive,
    help="Seconds per remote probe.",
)
@click.option("--strict", is_flag=True, help="Also exit non-zero on warnings (a drained node, high load...).")
@click.option("--no-slurm", is_flag=True, help="Do not ask Slurm for its view of the nodes.")
@click.pass_context
def check(  # noqa: PLR0917 - click passes options positionally
    ctx: click.Context, targets: tuple[str, ...], as_json: bool, timeout: float, strict: bool, no_slurm: bool
) -> None:
    """Check hosts (default: all) in parallel; exit 1 when one is unhealthy."""
    from hpcplat.fleet.check import check_fleet

    settings = _settings(ctx)
    hosts = settings.load_inventory().select(targets or ("all",))
    client = None if no_slurm else _slurm_client()
    report = check_fleet(
        hosts, settings.ssh_options(), client=client, timeout=timeout, workers=settings.workers
    )
    if as_json:
        data = report.to_dict()
        data["healthy"] = report.healthy(strict=strict)
        echo_json(data)
    else:
        click.echo(render_check_table(report))
    if not report.healthy(strict=strict):
        ctx.exit(1)


# ---------------------------------------------------------------- exec


def render_exec(outcomes: list[ExecOutcome]) -> str:
    blocks = []
    for o in outcomes:
        status = f"exit {o.exit_code}" if o.error is None else f"{o.error_kind}"
        head = f"==> {o.host} ({status}, {o.duration_s:.1f} s) <=="
        body = [o.stdout.rstrip("\n")] if o.stdout.strip() else []
        if o.stderr.strip():
            body.append("[stderr] " + o.stderr.rstrip("\n").replace("\n", "\n[stderr] "))
        if o.error:
            body.append(f"error: {o.error}")
        blocks.append("\n".join([head, *body]))
    failed = [o.host for o in outcomes if not o.ok]
    summary = f"{len(outcomes) - len(failed)}/{len(outcomes)} host(s) succeeded"
    if failed:
        summary += f"; failed: {', '.join(failed)}"
    return "\n\n".join([*blocks, summary])


@fleet.command(name="exec")
@click.option(
    "--on", "targets", multiple=True, required=True, help="Host or group (repeatable; `all` for every host)."
)
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, callback=_positive, help="Seconds per host."
)
@click.option("--json", "as_json", is_flag=True, help="Print per-host results as JSON.")
@click.argument("command", nargs=-1, required=True)
@click.pass_context
def exec_(
    ctx: click.Context, targets: tuple[str, ...], timeout: float, as_json: bool, command: tuple[str, ...]
) -> None:
    """Run COMMAND (after --) on hosts; exit 1 unless it succeeds on every one.

    Example: hpcplat fleet exec --on compute -- nvidia-smi -L

    A single argument is run by the remote shell as written (pipes, globs); several arguments are
    quoted one by one.
    """
    import shlex

    from hpcplat.fleet.ops import exec_fleet

    settings = _settings(ctx)
    hosts = settings.load_inventory().select(targets)
    text = command[0] if len(command) == 1 else shlex.join(command)
    outcomes = exec_fleet(hosts, text, settings.ssh_options(), timeout=timeout, workers=settings.workers)
    if as_json:
        echo_json({"command": text, "hosts": [o.to_dict() for o in outcomes]})
    else:
        click.echo(render_exec(outcomes))
    if not all(o.ok for o in outcomes):
        ctx.exit(1)


# ---------------------------------------------------------------- drain / resume


def _render_changes(changes: list[NodeChange]) -> str:
    lines = []
    for c in changes:
        if c.error:
            lines.append(f"{c.host} ({c.node}): {c.action} failed: {c.error}")
        else:
            reason = f" ({c.reason})" if c.reason else ""
            lines.append(f"{c.host} ({c.node}): {c.state or 'state unknown'}{reason}")
    return "\n".join(lines)


@fleet.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("-r", "--reason", required=True, help="Why (shown by `sinfo -R`).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def drain(ctx: click.Context, targets: tuple[str, ...], reason: str, as_json: bool) -> None:
    """Drain compute hosts in Slurm: running jobs finish, no new job starts."""
    from hpcplat.fleet import ops

    changes = ops.drain(_slurm_client(), _settings(ctx).load_inventory().select(targets), reason=reason)
    _finish_changes(ctx, changes, as_json)


@fleet.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def resume(ctx: click.Context, targets: tuple[str, ...], as_json: bool) -> None:
    """Return drained compute hosts to service in Slurm."""
    from hpcplat.fleet import ops

    changes = ops.resume(_slurm_client(), _settings(ctx).load_inventory().select(targets))
    _finish_changes(ctx, changes, as_json)


def _finish_changes(ctx: click.Context, changes: list[NodeChange], as_json: bool) -> None:
    if as_json:
        echo_json([c.to_dict() for c in changes])
    else:
        click.echo(_render_changes(changes))
    if not all(c.ok for c in changes):
        ctx.exit(1)


# ---------------------------------------------------------------- logs


@fleet.command()
@click.argument("host")
@click.option("-n", "--lines", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option(
    "--only", type=click.Choice(["agent", "slurmd"]), default=None, help="One log only (default: both)."
)
@click.option("--timeout", type=float, default=30.0, show_default=True, callback=_positive)
@click.pass_context
def logs(ctx: click.Context, host: str, lines: int, only: str | None, timeout: float) -> None:
    """Print the end of HOST's node agent and slurmd logs (paths from the inventory)."""
    from hpcplat.fleet.ops import LOG_KINDS, tail_logs

    settings = _settings(ctx)
    selected: list[Host] = settings.load_inventory().select([host])
    if len(selected) != 1:
        raise UsageError(
            f"{host!r} is a group of {len(selected)} hosts; name one host", hint="hpcplat fleet logs gpu01"
        )
    which = (only,) if only else LOG_KINDS
    result = tail_logs(selected[0], settings.ssh_options(), lines=lines, which=which, timeout=timeout)
    click.echo(result.stdout, nl=False)
    if result.stderr.strip():
        click.echo(result.stderr, err=True, nl=False)
    if result.exit_code != 0:
        ctx.exit(1)


__all__ = ["fleet"]
