"""Entry point of the ``hpcplat`` command.

Each command group lives in its own module and is imported only when it is run, so ``hpcplat
--help`` costs little more than starting Python and importing click. Errors that hpcplat raises on
purpose (:class:`hpcplat.errors.HpcplatError`) become a message on stderr and their exit code:
2 for bad input, 1 otherwise. No traceback for user mistakes.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from hpcplat.errors import HpcplatError

# command name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sandbox": (
        "hpcplat.cli.sandbox",
        "sandbox",
        "A real Slurm cluster on this machine: up, down, status, env.",
    ),
    "submit": ("hpcplat.cli.jobs", "submit", "Submit a training job (command after --, or -f spec.yaml)."),
    "jobs": ("hpcplat.cli.jobs", "jobs", "List your jobs."),
    "show": ("hpcplat.cli.jobs", "show", "Show one job."),
    "logs": ("hpcplat.cli.jobs", "logs", "Print (or follow) a job's output."),
    "cancel": ("hpcplat.cli.jobs", "cancel", "Cancel jobs."),
    "wait": ("hpcplat.cli.jobs", "wait", "Wait for jobs to finish, with live progress."),
    "sweep": ("hpcplat.cli.sweep", "sweep", "Hyperparameter sweeps as Slurm job arrays."),
    "template": ("hpcplat.cli.template", "template", "sbatch templates for power users: list, show, render."),
    "runs": ("hpcplat.cli.runs", "runs", "List and compare runs in the catalog."),
    "run": ("hpcplat.cli.runs", "run", "Show or plot one run from the catalog."),
    "rerun": ("hpcplat.cli.runs", "rerun", "Rebuild a run from the catalog and submit it again."),
    "data": ("hpcplat.cli.data", "data", "Register and list dataset versions."),
    "db": ("hpcplat.cli.db", "db", "Catalog database: upgrade, current revision."),
    "reconcile": (
        "hpcplat.cli.runs",
        "reconcile",
        "Bring catalog attempts in line with Slurm (one batched query).",
    ),
    "usage": (
        "hpcplat.cli.usage",
        "usage",
        "GPU-hours per team and user, with quotas, from Slurm accounting.",
    ),
    "fleet": ("hpcplat.cli.fleet", "fleet", "Physical machines over SSH: check, exec, drain, resume, logs."),
    "demo": ("hpcplat.cli.demo", "demo", "Bring the sandbox up and run the end-to-end story."),
    "server": ("hpcplat.cli.server", "server", "The hpcplat server: the catalog as a service (API v1)."),
    "whoami": ("hpcplat.cli.server", "whoami", "Ask the hpcplat server who you are (munge)."),
    "board": ("hpcplat.cli.board", "board", "Print a one-time login link to the web board."),
    "doctor": (
        "hpcplat.cli.doctor",
        "doctor",
        "Check the cluster for what hpcplat needs: ok / degraded / missing, with fixes.",
    ),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:  # registered directly (plugins, tests)
            return self.commands[cmd_name]
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        module = importlib.import_module(module_name)
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attr} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="hpcplat")
def cli(verbose: int) -> None:
    """hpcplat: a training platform for bare-metal Slurm GPU clusters."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="hpcplat", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HpcplatError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    finally:
        if os.environ.get("HPCPLAT_PROFILE_IMPORTS"):
            click.echo(f"modules loaded: {len(sys.modules)}", err=True)
