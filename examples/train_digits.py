"""Train a small network on scikit-learn's bundled digits with PyTorch DDP (gloo on CPU).

Deterministic for a given seed and number of tasks: seeded initialisation, deterministic
algorithms, one thread, and a fixed data order per epoch (``DistributedSampler`` with seed+epoch).
It checkpoints through :mod:`hpcplat.checkpoint` at step boundaries, on ALL ranks, and resumes from
the latest complete checkpoint after a requeue, so a run preempted half-way ends with the same final
loss, to the last bit, as one that never stopped.

Two nodes, one task each (what ``hpcplat submit --nodes 2`` renders)::

    srun --nodes 2 --ntasks-per-node 1 --kill-on-bad-exit=1 \\
        python -m hpcplat.launch -- python examples/train_digits.py --epochs 8 --result result.json

On a laptop: ``python examples/train_digits.py --checkpoint-dir /tmp/ckpt``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="per task")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument(
        "--step-sleep",
        type=float,
        default=float(os.environ.get("DIGITS_STEP_SLEEP", "0")),
        help="seconds to sleep after each step, to make the run long enough to interrupt "
        "(default $DIGITS_STEP_SLEEP or 0)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=10, help="steps between checkpoints (0: only on signal)"
    )
    parser.add_argument(
        "--checkpoint-dir",
        default=os.environ.get("HPCPLAT_CHECKPOINT_DIR") or None,
        help="default $HPCPLAT_CHECKPOINT_DIR; without one the run does not checkpoint",
    )
    parser.add_argument("--result", help="JSON file rank 0 writes the final loss to")
    parser.add_argument(
        "--data",
        help="an .npz file with arrays `data` (pixel values 0-16) and `target` (a registered dataset "
        "version, say); default: the copy bundled with scikit-learn",
    )
    return parser.parse_args(argv)


def _optional_track() -> Any:
    """``hpcplat.track`` when this hpcplat has it (metrics go to the run's catalog entry)."""
    try:
        return importlib.import_module("hpcplat.track")
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hpcplat import checkpoint, distributed
    from hpcplat.files import atomic_write

    checkpoint.install_signal_handlers()  # before the slow imports: an uncaught USR1 would kill us

    import torch
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    track = _optional_track()

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    env = distributed.init_process_group()
    rank, world = env.rank, env.world_size
    node = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
    print(
        f"task rank={rank} world_size={world} local_rank={env.local_rank} node={node} "
        f"master={env.master_addr}:{env.master_port} backend="
        f"{torch.distributed.get_backend() if distributed.is_initialized() else 'none'}",
        flush=True,
    )

    features, labels = _load_data(args.data)
    dataset = TensorDataset(features, labels)
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True
    )
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)

    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    ckpt = (
        checkpoint.Checkpointer(args.checkpoint_dir, rank=rank, world_size=world)
        if args.checkpoint_dir
        else None
    )
    step, history = _restore(ckpt, model, optimizer, rank=rank)
    trained: nn.Module = DistributedDataParallel(model) if distributed.is_initialized() else model

    def snapshot(saved_on: str, at_step: int) -> dict[str, Any]:
        return {
            "saved_on": saved_on,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "step": at_step,
            "resumed_from": history,
        }

    if track is not None and rank == 0 and step == 0:
        track.log_params(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, world_size=world
        )

    done = _train(
        args,
        loader=loader,
        sampler=sampler,
        trained=trained,
        optimizer=optimizer,
        ckpt=ckpt,
        track=track,
        rank=rank,
        step=step,
        snapshot=snapshot,
    )
    if done is None:
        return 1
    final_loss = _final_loss(model, features, labels)
    tasks = _gather_tasks(
        {"rank": rank, "world_size": world, "local_rank": env.local_rank, "node": node}, world
    )
    if rank == 0:
        print(f"final_loss={final_loss!r} steps={done} resumed_from={history}", flush=True)
        if args.result:
            result = {
                "final_loss": final_loss,
                "final_loss_hex": final_loss.hex(),
                "steps": done,
                "world_size": world,
                "resumed_from": history,
                "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                "tasks": tasks,
            }
            atomic_write(Path(args.result), json.dumps(result, indent=2), mode=0o644)
    if track is not None and rank == 0:
        track.log_metric(step=done, final_loss=final_loss)
    distributed.destroy_process_group()
    return 0


def _load_data(path: str | None) -> tuple[Any, Any]:
    """(features scaled to 0..1, labels) from ``path`` (an .npz) or scikit-learn's bundled copy."""
    import torch
    from sklearn.datasets import load_digits

    if path:
        import numpy as np

        with np.load(path) as arrays:
            pixels, targets = arrays["data"], arrays["target"]
    else:
        digits = load_digits()
        pixels, targets = digits.data, digits.target
    return torch.tensor(pixels, dtype=torch.float32) / 16.0, torch.tensor(targets, dtype=torch.int64)


def _restore(ckpt: Any, model: Any, optimizer: Any, *, rank: int) -> tuple[int, list[dict[str, Any]]]:
    """Load the latest complete checkpoint into ``model`` and ``optimizer``; returns (the step it was
    saved at, the history of resumes), or (0, []) when there is none."""
    import torch

    restored = ckpt.load_latest() if ckpt is not None else None
    if restored is None:
        return 0, []
    state = restored.state
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    step = int(state["step"])
    history = [*state["resumed_from"], {"step": step, "saved_on": state["saved_on"]}]
    print(f"rank {rank}: resumed from step {step} ({restored.checkpoint.path})", flush=True)
    return step, history


def _train(
    args: argparse.Namespace,
    *,
    loader: Any,
    sampler: Any,
    trained: Any,
    optimizer: Any,
    ckpt: Any,
    track: Any,
    rank: int,
    step: int,
    snapshot: Callable[[str, int], dict[str, Any]],
) -> int | None:
    """Train from ``step`` to the last epoch, checkpointing on schedule and on a stop signal;
    returns the final step, or None when told to stop without a checkpoint directory."""
    import torch.nn.functional as F

    from hpcplat import checkpoint

    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * args.epochs
    for epoch in range(step // steps_per_epoch, args.epochs):
        sampler.set_epoch(epoch)
        for index, (x, y) in enumerate(loader):
            if epoch * steps_per_epoch + index < step:
                continue  # already done before the requeue: same order, skipped
            optimizer.zero_grad()
            loss = F.cross_entropy(trained(x), y)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            step += 1
            if track is not None and rank == 0:
                track.log_metric(step=step, loss=float(loss.item()))
            if ckpt is not None:
                if ckpt.sync_should_stop():
                    ckpt.save(snapshot("signal", step), step)
                    ckpt.requeue_or_exit()
                if args.checkpoint_every and step % args.checkpoint_every == 0 and step < total_steps:
                    ckpt.save(snapshot("periodic", step), step)
            elif checkpoint.stop_reason() is not None:
                print(f"rank {rank}: stop requested, no checkpoint directory: exiting", flush=True)
                return None
            if args.step_sleep:
                time.sleep(args.step_sleep)
    return step


def _final_loss(model: Any, features: Any, labels: Any) -> float:
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        return float(F.cross_entropy(model(features), labels).item())


def _gather_tasks(mine: dict[str, Any], world: int) -> list[Any]:
    """Every task's description, in rank order (all ranks take part)."""
    import torch

    from hpcplat import distributed

    if not distributed.is_initialized():
        return [mine]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


if __name__ == "__main__":
    sys.exit(main())
