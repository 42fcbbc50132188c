"""The training job of the fault-injection suite: deterministic, pure Python, a few seconds long.

It behaves like a real training loop on the platform's in-job API, without torch (so it starts in a
fraction of a second on a loaded 2-core machine):

- state ``x`` after step ``s`` is :func:`advance` applied ``s + 1`` times; the whole run's values are
  :func:`reference`, so a test knows the exact final result and every metric point of an
  uninterrupted run without running one;
- every step logs ``x`` with :mod:`hpcplat.track` (``log_metric(step=s, x=...)``);
- every ``--checkpoint-every`` steps, and on the checkpoint signal, it saves through
  :class:`hpcplat.checkpoint.Checkpointer` (pickle shards) and resumes from the newest complete step
  after a requeue;
- it appends what happened (start, resume, checkpoint, stop, done) as JSON lines to ``--events``,
  which is how the tests follow it without polling Slurm.

Run by the tests as ``python tests/faults/workload.py --steps N ...`` inside ``hpcplat.launch``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any


def advance(x: float, step: int) -> float:
    """One training step: a contracting map whose value depends on every step before it."""
    return 0.9 * x + math.sin(0.37 * step + 0.5 * x) + 0.01 * step


def reference(steps: int) -> list[float]:
    """``x`` after each step of an uninterrupted run of ``steps`` steps."""
    values: list[float] = []
    x = 0.0
    for step in range(steps):
        x = advance(x, step)
        values.append(x)
    return values


def padding(checkpoint_number: int, pad_bytes: int) -> bytes:
    """Ballast saved with the ``checkpoint_number``-th checkpoint (1-based): it grows with each one,
    so a size limit lets the first checkpoint through and stops a later one."""
    return bytes(checkpoint_number * pad_bytes)


def emit(path: str | None, event: str, **fields: Any) -> None:
    if not path:
        return
    record = {
        "event": event,
        "t": time.time(),
        "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "job_id": os.environ.get("SLURM_JOB_ID", ""),
        "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "pid": os.getpid(),
        **fields,
    }
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--step-sleep", type=float, default=0.2)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--events", help="JSON-lines file the job appends its progress to")
    parser.add_argument("--result", help="JSON file written at the end (final value, steps)")
    parser.add_argument(
        "--resume-delay", type=float, default=0.0, help="seconds spent restoring after a requeue"
    )
    parser.add_argument(
        "--pad-bytes", type=int, default=0, help="ballast per checkpoint number (growing checkpoints)"
    )
    parser.add_argument(
        "--file-size-limit", type=int, default=0, help="RLIMIT_FSIZE in bytes (writes past it: EFBIG)"
    )
    parser.add_argument("--flush-interval", type=float, default=0.5, help="hpcplat.track flush interval")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hpcplat import checkpoint, track

    checkpoint.install_signal_handlers()
    if args.file_size_limit:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (args.file_size_limit, args.file_size_limit))
    track.init(flush_interval_s=args.flush_interval)
    cp = checkpoint.Checkpointer(keep=3)
    restored = cp.load_latest()
    start, x, saves = 0, 0.0, 0
    if restored is not None:
        start, x, saves = restored.step + 1, float(restored.state["x"]), int(restored.state["saves"])
    emit(args.events, "start", resumed_from=None if restored is None else restored.step)
    if restored is not None and args.resume_delay:
        emit(args.events, "resuming", step=restored.step)
        time.sleep(args.resume_delay)
    done: int | None = None

    def save(step: int) -> None:
        nonlocal saves
        saves += 1
        state = {"x": x, "step": step, "saves": saves, "pad": padding(saves, args.pad_bytes)}
        emit(args.events, "saving", step=step, saves=saves)
        cp.save(state, step, format="pickle")
        emit(args.events, "checkpoint", step=step, saves=saves)

    for step in range(start, args.steps):
        if cp.should_stop:
            if done is not None and cp.last_saved_step != done:
                save(done)
            emit(args.events, "stopping", step=done, reason=str(checkpoint.stop_reason()))
            cp.requeue_or_exit()
        x = advance(x, step)
        track.log_metric(step=step, x=x)
        done = step
        if args.checkpoint_every and (step + 1) % args.checkpoint_every == 0 and step + 1 < args.steps:
            save(step)
        time.sleep(args.step_sleep)
    if args.result:
        Path(args.result).write_text(json.dumps({"final": x, "steps": args.steps}))
    emit(args.events, "done", final=x)
    return 0


if __name__ == "__main__":
    sys.exit(main())
