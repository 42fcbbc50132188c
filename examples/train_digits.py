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

    checkpoint.install_signal_handlers()  # before the slow imports: an uncaught USR1 would kill us

    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
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

    if args.data:
        import numpy as np

        with np.load(args.data) as arrays:
            pixels, targets = arrays["data"], arrays["target"]
    else:
        digits = load_digits()
        pixels, targets = digits.data, digits.target
    features = torch.tensor(pixels, dtype=torch.float32) / 16.0
    labels = torch.tensor(targets, dtype=torch.int64)
    dataset = TensorDataset(features, labels)
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True
    )
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * args.epochs

    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    ckpt = (
        checkpoint.Checkpointer(args.checkpoint_dir, rank=rank, world_size=world)
        if args.checkpoint_dir
        else None
    )
    step = 0
    history: list[dict[str, Any]] = []
    restored = ckpt.load_latest() if ckpt is not None else None
    if restored is not None:
        state = restored.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        history = [*state["resumed_from"], {"step": step, "saved_on": state["saved_on"]}]
        print(f"rank {rank}: resumed from step {step} ({restored.checkpoint.path})", flush=True)
    trained: nn.Module = DistributedDataParallel(model) if distributed.is_initialized() else model

    def snapshot(saved_on: str) -> dict[str, Any]:
        return {
            "saved_on": saved_on,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "resumed_from": history,
        }

    if track is not None and rank == 0 and step == 0:
        track.log_params(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, world_size=world
        )

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
                    ckpt.save(snapshot("signal"), step)
                    ckpt.requeue_or_exit()
                if args.checkpoint_every and step % args.checkpoint_every == 0 and step < total_steps:
                    ckpt.save(snapshot("periodic"), step)
            elif checkpoint.stop_reason() is not None:
                print(f"rank {rank}: stop requested, no checkpoint directory: exiting", flush=True)
                return 1
            if args.step_sleep:
                time.sleep(args.step_sleep)

    with torch.no_grad():
        final_loss = float(F.cross_entropy(model(features), labels).item())
    tasks: list[Any] = [{"rank": rank, "world_size": world, "local_rank": env.local_rank, "node": node}]
    if distributed.is_initialized():
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, tasks[0])
        tasks = gathered
    if rank == 0:
        print(f"final_loss={final_loss!r} steps={step} resumed_from={history}", flush=True)
        if args.result:
            result = {
                "final_loss": final_loss,
                "final_loss_hex": final_loss.hex(),
                "steps": step,
                "world_size": world,
                "resumed_from": history,
                "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                "tasks": tasks,
            }
            path = Path(args.result)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(result, indent=2))
            os.replace(tmp, path)
    if track is not None and rank == 0:
        track.log_metric(step=step, final_loss=final_loss)
    distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
