"""Helpers for training code running as several tasks of a Slurm job.

:func:`init_process_group` starts ``torch.distributed`` from the variables ``hpcplat.launch`` sets
(``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or from Slurm's own
(``SLURM_PROCID``...) when the code was started by plain ``srun``. It picks ``nccl`` when CUDA is
available and ``gloo`` otherwise. The other helpers work the same whether or not a process group
exists (a single process is a world of one), so the same script runs on a laptop and on 16 GPUs.
torch is imported only when a function needs it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any, NoReturn

from hpcplat.errors import HpcplatError
from hpcplat.job import environment as job_environment
from hpcplat.job.environment import TaskEnv

DEFAULT_TIMEOUT_S = 600.0


def environment(environ: Mapping[str, str] | None = None) -> TaskEnv:
    """This task's rank, world size, local rank and master address.

    From ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``... when set (hpcplat.launch, torchrun), else from
    Slurm's variables (asking ``scontrol`` for the first host), else a single local process
    (:func:`hpcplat.job.environment.environment`).
    """
    return job_environment.environment(environ)


def _dist() -> Any:
    """``torch.distributed`` when torch is importable, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    return dist if dist.is_available() else None


def is_initialized() -> bool:
    if "torch" not in sys.modules:
        return False
    dist = _dist()
    return bool(dist is not None and dist.is_initialized())


def rank() -> int:
    """Global rank (0 when not distributed)."""
    if is_initialized():
        return int(_dist().get_rank())
    return environment().rank


def world_size() -> int:
    if is_initialized():
        return int(_dist().get_world_size())
    return environment().world_size


def local_rank() -> int:
    return environment().local_rank


def is_main() -> bool:
    """True on global rank 0: the rank that prints, logs and writes shared files."""
    return rank() == 0


def default_backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "gloo"


def init_process_group(
    backend: str | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    environ: Mapping[str, str] | None = None,
) -> TaskEnv:
    """Join the job's process group (``env://``) and return this task's environment.

    Does nothing but return the environment for a world of one, or when already initialized.
    With ``nccl`` the task's GPU (``LOCAL_RANK`` among the visible ones) becomes the current device.
    """
    env = environment(environ)
    if env.world_size == 1 or is_initialized():
        return env
    import torch
    import torch.distributed as dist

    chosen = backend or default_backend()
    os.environ.update(
        {
            "MASTER_ADDR": env.master_addr,
            "MASTER_PORT": str(env.master_port),
            "RANK": str(env.rank),
            "WORLD_SIZE": str(env.world_size),
            "LOCAL_RANK": str(env.local_rank),
        }
    )
    if chosen == "nccl":
        torch.cuda.set_device(env.local_rank % max(1, torch.cuda.device_count()))
    try:
        dist.init_process_group(
            backend=chosen,
            init_method="env://",
            rank=env.rank,
            world_size=env.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    except (RuntimeError, ValueError) as exc:
        raise HpcplatError(
            f"rank {env.rank}/{env.world_size} could not join the process group at "
            f"{env.master_addr}:{env.master_port} ({chosen}): {exc}",
            hint="check that every node resolves MASTER_ADDR and that the port is free; "
            "force one with HPCPLAT_MASTER_PORT",
        ) from exc
    _pin(dist.distributed_c10d._get_default_group())
    return env


def _pin(group: Any) -> None:
    """Keep ``group``'s C++ object alive until the process exits: never run its destructor.

    gloo's worker thread drops the tensors of a finished collective after the collective has
    returned, and needs the GIL for it. The group's destructor joins that thread, and it runs with
    the GIL held wherever the last Python reference goes: when the DDP model (its Reducer) is
    freed as ``main()`` returns, or at interpreter exit. If the worker is still dropping the last
    collective's tensors then, the two wait for each other forever (seen here under load: the job
    printed its result and never ended). A barrier first makes that unlikely, not impossible.
    Holding one extra reference that is never released means the destructor never runs; the
    process is ending anyway, and the operating system reclaims its sockets and threads.
    """
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(group))  # never released, not even at exit


def destroy_process_group() -> None:
    """Leave the process group cleanly: a barrier (every rank is done), then unregister it.

    The group's C++ object itself stays alive until the process exits (see :func:`_pin`), so
    neither this call nor the end of the program can deadlock in gloo's destructor.
    """
    if is_initialized():
        dist = _dist()
        dist.barrier()
        dist.destroy_process_group()


def hard_exit(code: int) -> NoReturn:
    """Exit now without tearing down the interpreter's objects (atexit handlers still run).

    For a stop request in the middle of training: a live gloo/NCCL process group can deadlock in
    its destructors at interpreter exit (see :func:`destroy_process_group`), and other ranks may
    already be gone, so no collective (barrier) is safe either.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def barrier() -> None:
    """Wait for every rank (nothing to wait for when not distributed)."""
    if is_initialized():
        _dist().barrier()


def any_true(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (a one-element all-reduce)."""
    if not is_initialized():
        return flag
    import torch

    dist = _dist()
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def min_int(value: int) -> int:
    """The smallest ``value`` over all ranks (say, the step every rank can resume from)."""
    if not is_initialized():
        return value
    import torch

    dist = _dist()
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (picklable objects)."""
    if not is_initialized():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (download or preprocess once)."""
    if not is_initialized():
        yield
        return
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()
