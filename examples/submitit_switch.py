"""Moving from submitit to hpcplat: change one line.

    - executor = submitit.AutoExecutor(folder=folder)
    + executor = hpcplat.AutoExecutor(folder=folder)

Everything else below is ordinary submitit code (``update_parameters`` with submitit's names,
``submit``, ``map_array``, ``batch``, ``result``). hpcplat adds ``tier=`` (priority, preemption) and
records every job in the catalog with its provenance. Run it on a login node (or against the
sandbox: ``eval "$(hpcplat sandbox env)"``)::

    python examples/submitit_switch.py --folder ~/hpcplat-logs/%j
"""

from __future__ import annotations

import argparse
import math
import sys

import hpcplat


def train(lr: float, epochs: int) -> float:
    """Stands for a training run: returns a "validation loss"."""
    loss = 1.0
    for _ in range(epochs):
        loss *= 1.0 - min(lr, 0.5)
    return round(loss + abs(math.log10(lr)) / 100, 6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", default="submitit-logs/%j")
    parser.add_argument("--tier", default=None, help="priority tier (default: the site's)")
    args = parser.parse_args(argv)

    executor = hpcplat.AutoExecutor(folder=args.folder)  # was: submitit.AutoExecutor(folder=args.folder)
    executor.update_parameters(timeout_min=5, cpus_per_task=1, slurm_array_parallelism=4, tier=args.tier)

    job = executor.submit(train, 0.1, 3)
    print(f"job {job.job_id}: loss {job.result()}")

    rates = [0.3, 0.1, 0.03, 0.01]
    jobs = executor.map_array(train, rates, [3] * len(rates))  # one job array
    losses = [j.result() for j in jobs]
    best = min(zip(losses, rates, strict=True))
    print(f"array {jobs[0].job_id.split('_')[0]}: best lr {best[1]} (loss {best[0]})")

    with executor.batch():  # also one array, submitted when the block ends
        more = [executor.submit(train, lr, 5) for lr in rates[:2]]
    print(f"batch: {[j.result() for j in more]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
