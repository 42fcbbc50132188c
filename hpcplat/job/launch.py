"""Start one task of a distributed job: ``srun ... python -m hpcplat.launch -- CMD ARGS...``.

In each srun task it sets the variables ``torch.distributed`` reads (``MASTER_ADDR`` = the first host
of the job, ``MASTER_PORT`` derived from the job id, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``NODE_RANK``), runs the command as a child, forwards ``SIGUSR1``, ``SIGUSR2``
and ``SIGTERM`` to it (and survives them itself, so the child has time to checkpoint), and exits
with the child's status (128+N when a signal N killed it).

Slurm may also deliver a signal to the child directly (proctrack signals every process of the task),
so a child can see the same signal twice: handlers must be idempotent, as hpcplat.checkpoint's are.
The task's environment is read by :mod:`hpcplat.job.environment` (re-exported here: ``task_env``,
``TaskEnv``, ``master_port``...). Importing this module is cheap: no torch.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

from hpcplat.errors import CommandNotFound, HpcplatError, UsageError
from hpcplat.job.environment import (
    DEFAULT_PORT,
    PORT_BASE,
    PORT_SPAN,
    SCONTROL_TIMEOUT_S,
    TaskEnv,
    expand_nodelist,
    expand_tasks_per_node,
    first_host,
    master_port,
    task_env,
)
from hpcplat.runner import spawn

__all__ = [
    "DEFAULT_PORT",
    "FORWARDED",
    "PORT_BASE",
    "PORT_SPAN",
    "SCONTROL_TIMEOUT_S",
    "TaskEnv",
    "exit_status",
    "expand_nodelist",
    "expand_tasks_per_node",
    "first_host",
    "main",
    "master_port",
    "run_child",
    "task_env",
]

FORWARDED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


def exit_status(returncode: int) -> int:
    """A child's ``Popen.returncode`` as a shell would report it (-N → 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


def run_child(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the training command, forwarding the checkpoint signals, and return its exit status.

    Started with :func:`hpcplat.runner.spawn`, not :func:`hpcplat.runner.run`: it is the job itself,
    so it has no deadline but Slurm's time limit, and its output goes straight to the job's log.
    """
    try:
        child = spawn(argv, env=env)
    except CommandNotFound as exc:
        raise UsageError(
            f"{argv[0]}: command not found", hint="check the command after '--' and $PATH"
        ) from exc
    except PermissionError as exc:
        raise UsageError(f"{argv[0]}: permission denied", hint="is the file executable?") from exc

    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while True:
            try:
                return exit_status(child.wait())
            except InterruptedError:  # pragma: no cover - PEP 475 retries wait() itself
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpcplat.launch",
        description="Set MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK from Slurm and run CMD "
        "(one srun task each), forwarding SIGUSR1/SIGUSR2/SIGTERM to it.",
        usage="python -m hpcplat.launch [--master-port PORT] -- CMD [ARGS...]",
    )
    parser.add_argument(
        "--master-port", type=int, help="force MASTER_PORT (default: derived from $SLURM_JOB_ID)"
    )
    parser.add_argument("--print-env", action="store_true", help="print the variables set, then run CMD")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    try:
        if not command:
            raise UsageError(
                "no command to run", hint="usage: srun python -m hpcplat.launch -- python train.py --epochs 3"
            )
        environ = dict(os.environ)
        if args.master_port is not None:
            environ["HPCPLAT_MASTER_PORT"] = str(args.master_port)
        values = task_env(environ).as_environ()
        environ.update(values)
        if args.print_env:
            print(" ".join(f"{k}={v}" for k, v in sorted(values.items())), file=sys.stderr, flush=True)
        return run_child(command, environ)
    except HpcplatError as exc:
        print(f"hpcplat.launch: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
