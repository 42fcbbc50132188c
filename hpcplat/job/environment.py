"""Who this task is: rank, world size, local rank and node, from torchrun's or Slurm's variables.

The ONE place in hpcplat that reads them. Two sources, in this order of trust:

* the variables ``hpcplat.launch`` (and torchrun) set: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``, ``NODE_RANK``/``GROUP_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
* Slurm's own, in every ``srun`` task: ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``,
  ``SLURM_NODEID``, ``SLURM_(STEP_)TASKS_PER_NODE``, the node list and the job id.

Importing this module is cheap (no torch, no catalog).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpcplat.errors import CommandNotFound, HpcplatError, SlurmError, UsageError
from hpcplat.runner import Runner, run
from hpcplat.slurm.parse import expand_hostlist

PORT_BASE = 20000
PORT_SPAN = 10000
"""Ports 20000-29999: above the well-known and registered services people run on compute nodes,
below Linux's ephemeral range (32768+) so an outgoing connection never holds the port."""
DEFAULT_PORT = 29500
SCONTROL_TIMEOUT_S = 30.0


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


# -- single values -------------------------------------------------------------------------------------


def env_int(environ: Mapping[str, str], names: Sequence[str], default: int, *, strict: bool = True) -> int:
    """The first of ``names`` set in ``environ``, as an integer, else ``default``.

    ``strict``: a value that is not an integer is an error (``UsageError``); otherwise it is skipped
    as if unset (code that must never stop the training, such as metric tracking)."""
    for name in names:
        text = environ.get(name, "").strip()
        if text:
            try:
                return int(text)
            except ValueError as exc:
                if strict:
                    raise UsageError(f"${name} is not an integer: {text!r}") from exc
    return default


def rank(environ: Mapping[str, str] | None = None, *, strict: bool = True) -> int:
    """This task's global rank: ``$RANK`` (set by hpcplat.launch), else ``$SLURM_PROCID``, else 0."""
    return env_int(os.environ if environ is None else environ, ("RANK", "SLURM_PROCID"), 0, strict=strict)


def world_size(environ: Mapping[str, str] | None = None) -> int:
    """Number of tasks: ``$WORLD_SIZE``, else ``$SLURM_NTASKS``, else 1."""
    return env_int(os.environ if environ is None else environ, ("WORLD_SIZE", "SLURM_NTASKS"), 1)


# -- the whole task environment --------------------------------------------------------------------------


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
    """Expand a Slurm host list (``n[1-3,7],gpu01``) without scontrol (fallback only); bad input
    raises ``ValueError`` (:func:`hpcplat.slurm.parse.expand_hostlist`)."""
    return expand_hostlist(nodelist)


def first_host(nodelist: str, *, runner: Runner = run) -> str:
    """The first host of ``nodelist`` via ``scontrol show hostnames`` (Slurm's own expansion)."""
    try:
        result = runner(
            ["scontrol", "show", "hostnames", nodelist], timeout=SCONTROL_TIMEOUT_S, error=SlurmError
        )
        hosts = result.stdout.split()
    except CommandNotFound:
        try:
            hosts = expand_hostlist(nodelist)
        except ValueError as exc:
            raise HpcplatError(f"the job's node list cannot be read: {exc}") from exc
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
        addr = env.get("HPCPLAT_MASTER_ADDR") or "127.0.0.1"
        port = _int(env, "HPCPLAT_MASTER_PORT", DEFAULT_PORT)
        return TaskEnv(0, 1, 0, 1, 0, addr, port)
    global_rank = _int(env, "SLURM_PROCID")
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
    return TaskEnv(global_rank, world, local_rank, local_world, node_rank, addr, port)


def environment(environ: Mapping[str, str] | None = None) -> TaskEnv:
    """This task's rank, world size, local rank and master address.

    From ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``... when set (hpcplat.launch, torchrun), else from
    Slurm's variables (asking ``scontrol`` for the first host, :func:`task_env`), else a single
    local process.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        try:
            global_rank = int(env["RANK"])
            world = int(env["WORLD_SIZE"])
            local_rank = int(env.get("LOCAL_RANK", "0"))
            local_world = int(env.get("LOCAL_WORLD_SIZE", "1"))
            node_rank = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")))
            port = int(env.get("MASTER_PORT", "29500"))
        except ValueError as exc:
            raise UsageError(f"a distributed variable is not an integer: {exc}") from exc
        return TaskEnv(
            global_rank, world, local_rank, local_world, node_rank, env.get("MASTER_ADDR", "127.0.0.1"), port
        )
    return task_env(env)
