"""The job epilog: ``python -m node_agent.epilog`` cleans up what a finished job left on the node.

Configure it as Slurm's ``Epilog`` (slurm.conf), which slurmd runs as root on each node of a job
after the job ended there, with ``SLURM_JOB_ID`` and ``SLURMD_NODENAME`` set. Every process whose
environment names that job on this node is a leftover (a daemonized child, a stray data loader):
it gets SIGTERM, and SIGKILL after ``--grace`` seconds. This is certain: the epilog runs after
the job's steps are gone and before the node takes another job.

The epilog always exits 0 (Slurm drains a node whose epilog fails): problems are printed to stderr,
which slurmd logs. Each kill is recorded in the agent's spool (sent to the catalog by the agent)
and in the job's ``$HPCPLAT_JOB_DIR/events.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

from node_agent.config import DEFAULT_SPOOL_DIR
from node_agent.events import EventKind, EventRecorder, Owner
from node_agent.procs import ProcessTable, ProcInfo, ancestors
from node_agent.spool import Spool


def leftovers(job_id: str, node: str, table: ProcessTable, *, self_pid: int | None = None) -> list[ProcInfo]:
    """Processes of ``job_id`` still on ``node`` (never this process or its ancestors)."""
    snapshot = table.scan()
    protected = ancestors(self_pid or os.getpid(), snapshot) | {1}
    return [
        p
        for p in snapshot.procs.values()
        if p.env.job_id == job_id and p.env.node == node and p.pid not in protected and p.state != "Z"
    ]


def _signal(proc: ProcInfo, table: ProcessTable, sig: signal.Signals) -> bool:
    """Signal ``proc`` through a pidfd after checking it is still the same process."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        return False
    try:
        current = table.read(proc.pid)
        if current is None or current.start_ticks != proc.start_ticks:
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def clean(
    job_id: str, node: str, *, grace_s: float, dry_run: bool, recorder: EventRecorder | None
) -> tuple[int, int]:
    """TERM, wait, KILL; returns (terminated, killed)."""
    table = ProcessTable()
    found = leftovers(job_id, node, table)
    terminated = 0
    for proc in found:
        reason = f"process {proc.pid} ({proc.comm}) outlived job {job_id}: SIGTERM"
        if recorder is not None:
            recorder.event(
                EventKind.POLICY,
                "epilog_term",
                reason,
                job_id=job_id,
                dry_run=dry_run,
                owner=Owner(uid=proc.uid, job_dir=proc.env.job_dir or ""),
            )
        if not dry_run and _signal(proc, table, signal.SIGTERM):
            terminated += 1
    if dry_run or not terminated:
        return terminated, 0
    deadline = time.monotonic() + grace_s
    survivors = found
    while time.monotonic() < deadline:
        survivors = [
            p
            for p in survivors
            if (c := table.read(p.pid)) is not None and c.start_ticks == p.start_ticks and c.state != "Z"
        ]
        if not survivors:
            return terminated, 0
        time.sleep(0.1)
    killed = 0
    for proc in survivors:
        if _signal(proc, table, signal.SIGKILL):
            killed += 1
            if recorder is not None:
                recorder.event(
                    EventKind.POLICY,
                    "epilog_kill",
                    f"process {proc.pid} ({proc.comm}) ignored SIGTERM for {grace_s:g} s: SIGKILL",
                    job_id=job_id,
                    owner=Owner(uid=proc.uid, job_dir=proc.env.job_dir or ""),
                )
    return terminated, killed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node_agent.epilog", description=__doc__.splitlines()[0])
    parser.add_argument("--job-id", default=os.environ.get("SLURM_JOB_ID"))
    parser.add_argument(
        "--node", default=os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL (default 5)"
    )
    parser.add_argument("--spool-dir", default=DEFAULT_SPOOL_DIR, help="the agent's spool directory")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if not args.job_id:
        print("hpcplat epilog: no job id (SLURM_JOB_ID unset, no --job-id): nothing cleaned", file=sys.stderr)
        return 0
    spool = Spool(os.path.join(args.spool_dir, args.node))
    try:
        spool.ensure()
        recorder: EventRecorder | None = EventRecorder(args.node, spool)
    except OSError as exc:
        print(f"hpcplat epilog: spool {spool.dir} unusable ({exc}); events only printed", file=sys.stderr)
        recorder = EventRecorder(args.node, None)
    terminated, killed = clean(
        args.job_id, args.node, grace_s=args.grace, dry_run=args.dry_run, recorder=recorder
    )
    if terminated or killed:
        print(
            f"hpcplat epilog: job {args.job_id} on {args.node}: "
            f"{terminated} leftover process(es) terminated, "
            f"{killed} killed",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
