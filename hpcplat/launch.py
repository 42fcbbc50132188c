"""Start one task of a distributed job: ``srun ... python -m hpcplat.launch -- CMD ARGS...``.

In each srun task it sets the variables ``torch.distributed`` reads (``MASTER_ADDR`` = the first host
of the job, ``MASTER_PORT`` derived from the job id, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``NODE_RANK``), runs the command as a child, forwards ``SIGUSR1``, ``SIGUSR2``
and ``SIGTERM`` to it (and survives them itself, so the child has time to checkpoint), and exits
with the child's status (128+N when a signal N killed it).

Slurm may also deliver a signal to the child directly (proctrack signals every process of the task),
so a child can see the same signal twice: handlers must be idempotent, as hpcplat.checkpoint's are.
Importing this module is cheap: no torch.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from hpcplat.errors import CommandNotFound, HpcplatError, SlurmError, UsageError
from hpcplat.runner import Runner, run, spawn

PORT_BASE = 20000
PORT_SPAN = 10000
"""Ports 20000-29999: above the well-known and registered services people run on compute nodes,
below Linux's ephemeral range (32768+) so an outgoing connection never holds the port."""
DEFAULT_PORT = 29500
SCONTROL_TIMEOUT_S = 30.0
FORWARDED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


@dataclass(frozen=True)
class TaskEnv:
    """What one task of a distributed job needs to find its peers."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int

    def as_environ(self) -> dict[str, str]:
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "NODE_RANK": str(self.node_rank),
            "GROUP_RANK": str(self.node_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def _int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = environ.get(name, "").strip()
    if not text:
        if default is None:
            raise UsageError(f"${name} is not set", hint="run this inside a Slurm job step (srun)")
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise UsageError(f"${name} is not an integer: {text!r}") from exc


def master_port(job_id: str | int) -> int:
    """A port in 20000-29999 derived from the job id: the same on every node of the job, and
    different for jobs whose ids differ by less than 10,000 (array tasks have their own ids)."""
    return PORT_BASE + int(job_id) % PORT_SPAN


def expand_tasks_per_node(spec: str) -> list[int]:
    """Slurm's ``SLURM_TASKS_PER_NODE`` form (``2(x3),1``) → ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part)
        if match is None:
            raise UsageError(f"cannot read the tasks-per-node value {spec!r} (expected forms: 2, 2(x3),1)")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a Slurm host list (``n[1-3,7],gpu01``) without scontrol (fallback only)."""
    hosts: list[str] = []
    for group in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", nodelist):
        prefixes = [""]
        for literal, ranges in re.findall(r"([^\[\]]*)(?:\[([^\]]*)\])?", group):
            prefixes = [p + literal for p in prefixes]
            if ranges:
                suffixes: list[str] = []
                for item in ranges.split(","):
                    if "-" in item:
                        low, high = item.split("-", 1)
                        suffixes.extend(f"{n:0{len(low)}d}" for n in range(int(low), int(high) + 1))
                    else:
                        suffixes.append(item)
                prefixes = [p + s for p in prefixes for s in suffixes]
        hosts.extend(p for p in prefixes if p)
    return hosts


def first_host(nodelist: str, *, runner: Runner = run) -> str:
    """The first host of ``nodelist`` via ``scontrol show hostnames`` (Slurm's own expansion)."""
    try:
        result = runner(
            ["scontrol", "show", "hostnames", nodelist], timeout=SCONTROL_TIMEOUT_S, error=SlurmError
        )
        hosts = result.stdout.split()
    except CommandNotFound:
        hosts = expand_nodelist(nodelist)
    if not hosts:
        raise HpcplatError(f"the job's node list {nodelist!r} names no host")
    return hosts[0]


def task_env(environ: Mapping[str, str] | None = None, *, runner: Runner = run) -> TaskEnv:
    """The distributed environment of this task, from Slurm's variables.

    Outside Slurm (no ``$SLURM_PROCID``) it describes a single process on 127.0.0.1. The address
    and port can be forced with ``$HPCPLAT_MASTER_ADDR`` / ``$HPCPLAT_MASTER_PORT``.
    """
    env = os.environ if environ is None else environ
    if "SLURM_PROCID" not in env:
        rank, world, local_rank, local_world, node_rank = 0, 1, 0, 1, 0
        addr = env.get("HPCPLAT_MASTER_ADDR") or "127.0.0.1"
        port = _int(env, "HPCPLAT_MASTER_PORT", DEFAULT_PORT)
        return TaskEnv(rank, world, local_rank, local_world, node_rank, addr, port)
    rank = _int(env, "SLURM_PROCID")
    world = _int(env, "SLURM_NTASKS", 1)
    local_rank = _int(env, "SLURM_LOCALID", 0)
    node_rank = _int(env, "SLURM_NODEID", 0)
    local_world = 1
    for spec_name, index_name in (
        ("SLURM_STEP_TASKS_PER_NODE", "SLURM_STEP_NODEID"),
        ("SLURM_TASKS_PER_NODE", "SLURM_NODEID"),
    ):
        if env.get(spec_name):
            counts = expand_tasks_per_node(env[spec_name])
            index = _int(env, index_name, 0)
            if 0 <= index < len(counts):
                local_world = counts[index]
                break
    addr = env.get("HPCPLAT_MASTER_ADDR", "")
    if not addr:
        nodelist = (
            env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        )
        if not nodelist:
            raise UsageError("$SLURM_JOB_NODELIST is not set", hint="run this inside a Slurm job step (srun)")
        addr = first_host(nodelist, runner=runner)
    if env.get("HPCPLAT_MASTER_PORT"):
        port = _int(env, "HPCPLAT_MASTER_PORT")
    elif env.get("SLURM_JOB_ID"):
        port = master_port(_int(env, "SLURM_JOB_ID"))
    else:
        port = DEFAULT_PORT
    return TaskEnv(rank, world, local_rank, local_world, node_rank, addr, port)


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
