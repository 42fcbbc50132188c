"""``python -m hpcplat.checkpoint``: the checkpoint layout and requeue for plain command jobs."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from hpcplat.errors import HpcplatError, UsageError
from hpcplat.job import environment
from hpcplat.job.checkpoint.checkpointer import Checkpointer
from hpcplat.job.checkpoint.layout import (
    DEFAULT_KEEP,
    ENV_DIR,
    Format,
    fsync_tree,
    latest,
    marker_name,
    prune,
    remove,
    resolve_dir,
    scan,
    shard_name,
    step_dir_name,
    write_marker,
)
from hpcplat.job.checkpoint.requeue import (
    EXIT_NOT_REQUEUED,
    preempted_requeue,
    requeue_decision,
    requeue_if_preempted,
    requeue_job,
    say,
)

_CLI_EPILOG = """\
a bash training loop:
  trap 'stop=1' USR1 TERM
  start=0
  if dir=$(python -m hpcplat.checkpoint latest); then
      start=$(( $(python -m hpcplat.checkpoint latest --step) + 1 )); restore from "$dir"
  fi
  for ((step=start; step<N; step++)); do
      work...
      if [ -n "$stop" ]; then
          out=$(python -m hpcplat.checkpoint path "$step"); write files into "$out"
          python -m hpcplat.checkpoint done "$step"
          python -m hpcplat.checkpoint requeue --signal "$sig"; exit $?   # 0, 75 or 143
      fi
  done
"""


def _cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpcplat.checkpoint",
        description="Find, write and complete checkpoints from a job script (layout of hpcplat.checkpoint).",
        epilog=_CLI_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help=f"checkpoint directory (default: ${ENV_DIR})")
    common.add_argument("--rank", type=int, help="this task's rank (default: $RANK, $SLURM_PROCID or 0)")
    common.add_argument(
        "--world-size", type=int, help="number of ranks (default: $WORLD_SIZE, $SLURM_NTASKS or 1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_latest = sub.add_parser(
        "latest", parents=[common], help="print this rank's path of the latest complete checkpoint"
    )
    p_latest.add_argument("--step", action="store_true", help="print the step number instead of the path")
    p_path = sub.add_parser(
        "path", parents=[common], help="create and print an empty directory to write STEP into"
    )
    p_path.add_argument("step", type=int)
    p_done = sub.add_parser(
        "done", parents=[common], help="mark this rank's files of STEP complete (fsync + marker)"
    )
    p_done.add_argument("step", type=int)
    p_done.add_argument(
        "--keep", type=int, default=DEFAULT_KEEP, help=f"complete steps to keep (default {DEFAULT_KEEP})"
    )
    p_wait = sub.add_parser("wait", parents=[common], help="wait until STEP is complete on all ranks")
    p_wait.add_argument("step", type=int)
    p_wait.add_argument("--timeout", type=float, default=30.0)
    sub.add_parser("list", parents=[common], help="list the steps and which ranks finished them")
    p_requeue = sub.add_parser(
        "requeue",
        parents=[common],
        help="after saving on a signal: requeue the job (rank 0, under the cap); exits with the status the "
        "job should exit with (0 requeued, 75 cap reached, 143 preempted)",
    )
    p_requeue.add_argument(
        "--signal",
        default="USR1",
        help="the signal that arrived: USR1 (default; requeue under the cap) or TERM (requeue only when "
        "Slurm is preempting the job, not after scancel)",
    )
    p_preempted = sub.add_parser(
        "requeue-if-preempted",
        help="at the end of a job script: requeue the job when Slurm is preempting it (under the cap) and "
        "exit 0; otherwise exit with STATUS (what job scripts of requeueing tiers run last)",
    )
    p_preempted.add_argument("status", type=int, help="the program's exit status")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hpcplat.checkpoint``; returns the exit status."""
    args = _cli_parser().parse_args(argv)
    try:
        return _cli(args)
    except HpcplatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _cli(args: argparse.Namespace) -> int:
    if args.command == "requeue-if-preempted":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a late preemption signal must not cut the check short
        return requeue_if_preempted(args.status)
    directory = resolve_dir(args.dir)
    rank = environment.rank() if args.rank is None else args.rank
    world = environment.world_size() if args.world_size is None else args.world_size
    if args.command == "latest":
        found = latest(directory, rank=rank, world_size=world)
        if found is None:
            return 1
        print(found.step if args.step else found.shard)
        return 0
    if args.command == "path":
        step_dir = directory / step_dir_name(args.step)
        step_dir.mkdir(parents=True, exist_ok=True)
        (step_dir / marker_name(rank)).unlink(missing_ok=True)
        shard = step_dir / shard_name(rank, Format.DIR)
        remove(shard)
        shard.mkdir()
        print(shard)
        return 0
    if args.command == "done":
        step_dir = directory / step_dir_name(args.step)
        shard = step_dir / shard_name(rank, Format.DIR)
        if not shard.is_dir():
            raise UsageError(
                f"nothing to mark complete: {shard} does not exist",
                hint="write the files into the directory printed by "
                f"'python -m hpcplat.checkpoint path {args.step}'",
            )
        fsync_tree(shard)
        write_marker(step_dir, step=args.step, rank=rank, world_size=world, fmt=Format.DIR, shard=shard)
        if args.keep < 1:
            raise UsageError(f"--keep must be at least 1, got {args.keep}")
        prune(directory, rank=rank, keep=args.keep)
        print(shard)
        return 0
    if args.command == "wait":
        cp = Checkpointer(directory, rank=rank, world_size=world, handle_signals=False, keep=None)
        return 0 if cp.wait_complete(args.step, timeout=args.timeout) else 1
    if args.command == "list":
        for status in scan(directory):
            state = "complete" if status.complete else "incomplete"
            ranks = ",".join(str(r) for r in status.ranks_done) or "-"
            world_text = status.world_size or "?"
            print(f"{status.step}\t{state}\tworld_size={world_text}\tranks_done={ranks}\t{status.path}")
        return 0
    # requeue: the exit status is the one the job script should exit with.
    sig = args.signal.upper().removeprefix("SIG")
    if sig not in {"USR1", "TERM"}:
        raise UsageError(f"--signal must be USR1 or TERM, got {args.signal!r}")
    if sig == "TERM":
        return preempted_requeue() if rank == 0 else 0
    decision = requeue_decision()
    if not decision.requeue:
        say(f"rank {rank}: not requeued ({decision.reason})")
        return EXIT_NOT_REQUEUED
    if rank == 0 and decision.job_id is not None:
        try:
            requeue_job(decision.job_id)
        except HpcplatError as exc:
            say(f"rank 0: scontrol requeue {decision.job_id} failed: {exc}")
            return EXIT_NOT_REQUEUED
        say(f"rank 0: requeued job {decision.job_id} ({decision.reason})")
    return 0
