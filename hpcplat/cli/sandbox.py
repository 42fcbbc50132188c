"""``hpcplat sandbox``: a real Slurm cluster on this machine (up, down, status, env)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from hpcplat.cli.output import echo_json, echo_table
from hpcplat.errors import UsageError


def _state_dir_option(f: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="State directory [default: $HPCPLAT_SANDBOX_DIR or ~/.local/state/hpcplat/sandbox].",
    )(f)


@click.group()
def sandbox() -> None:
    """A real Slurm cluster on this machine: munge, MariaDB, slurmdbd, slurmctld, N slurmd nodes."""


@sandbox.command()
@click.option("--nodes", type=int, default=4, show_default=True, help="Number of slurmd nodes.")
@click.option("--gpus-per-node", type=int, default=4, show_default=True, help="Emulated GPUs per node.")
@click.option("--port-base", type=int, default=None, help="First port used [default: 17000].")
@_state_dir_option
def up(nodes: int, gpus_per_node: int, port_base: int | None, state_dir: Path | None) -> None:
    """Start the sandbox (or report that it is already running)."""
    from hpcplat.sandbox import Sandbox, SandboxConfig
    from hpcplat.sandbox.config import DEFAULT_PORT_BASE, default_state_dir

    if nodes < 1:
        raise UsageError(f"--nodes must be at least 1, got {nodes}", hint="e.g. --nodes 4")
    config = SandboxConfig(
        state_dir=state_dir or default_state_dir(),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        port_base=DEFAULT_PORT_BASE if port_base is None else port_base,
    )
    config.validate()
    status = Sandbox(config).up()
    verb = "started" if status.started else "already running"
    click.echo(f"sandbox {status.name} {verb} in {status.took_s:.1f} s ({len(status.nodes)} nodes)")
    click.echo(f'use it with: eval "$(hpcplat sandbox env{_dir_arg(state_dir)})"')


@sandbox.command()
@_state_dir_option
def down(state_dir: Path | None) -> None:
    """Cancel the sandbox's jobs and stop every daemon it started."""
    from hpcplat.sandbox import Sandbox

    stopped = Sandbox.at(state_dir).down()
    click.echo(f"sandbox stopped ({len(stopped)} processes)" if stopped else "sandbox was not running")


@sandbox.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_state_dir_option
def status(as_json: bool, state_dir: Path | None) -> None:
    """Each daemon (pid, alive) and each node's Slurm state; exit code 1 when not fully up."""
    from hpcplat.sandbox import Sandbox

    report = Sandbox.at(state_dir).status()
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"sandbox {report.name} in {report.state_dir}: {'up' if report.running else 'NOT up'}")
        echo_table(
            ["DAEMON", "PID", "ALIVE", "PORT", "LOG"],
            [[d.name, d.pid, "yes" if d.alive else "no", d.port, d.log_file] for d in report.daemons],
            right={"PID", "PORT"},
        )
        echo_table(
            ["NODE", "ADDRESS", "PORT", "STATE"],
            [[n.name, n.addr, n.port, n.state] for n in report.nodes],
            right={"PORT"},
        )
    if not report.running:
        raise click.exceptions.Exit(1)


@sandbox.command()
@_state_dir_option
def env(state_dir: Path | None) -> None:
    """Print `export K=V` lines: eval "$(hpcplat sandbox env)"."""
    from hpcplat.sandbox import Sandbox

    for key, value in Sandbox.at(state_dir).env().items():
        click.echo(f"export {key}={shlex.quote(value)}")


def _dir_arg(state_dir: Path | None) -> str:
    return "" if state_dir is None else f" --state-dir {shlex.quote(str(state_dir))}"
