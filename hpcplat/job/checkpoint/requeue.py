"""Requeueing a job that stopped on a signal: the decision (under the cap), and the ``scontrol`` calls.

``SIGUSR1`` (a time-limit warning, an idle reclaim): rank 0 requeues the job while
``$SLURM_RESTART_COUNT < $HPCPLAT_MAX_REQUEUES``. ``SIGTERM``: only a job Slurm is still preempting
is requeued (:func:`preempted_requeue`, :func:`requeue_if_preempted`), never one a user cancelled.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from hpcplat.errors import HpcplatError, SlurmError
from hpcplat.job.environment import env_int
from hpcplat.runner import Runner, run
from hpcplat.slurm.parse import parse_show_job

ENV_MAX_REQUEUES = "HPCPLAT_MAX_REQUEUES"
DEFAULT_MAX_REQUEUES = 3
EXIT_NOT_REQUEUED = 75
"""Exit status after a time-limit warning once the requeue cap is reached (``EX_TEMPFAIL``)."""
EXIT_PREEMPTED = 128 + signal.SIGTERM
REQUEUE_TIMEOUT_S = 30.0


def say(message: str) -> None:
    print(f"hpcplat.checkpoint: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RequeueDecision:
    """Whether rank 0 requeues the job after a time-limit warning, and why."""

    requeue: bool
    job_id: str | None
    restarts: int
    cap: int
    reason: str


def requeue_decision(environ: Mapping[str, str] | None = None) -> RequeueDecision:
    """Requeue when inside a Slurm job and ``$SLURM_RESTART_COUNT < $HPCPLAT_MAX_REQUEUES``."""
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID") or None
    restarts = env_int(env, ("SLURM_RESTART_COUNT",), 0)
    cap = env_int(env, (ENV_MAX_REQUEUES,), DEFAULT_MAX_REQUEUES)
    if job_id is None:
        return RequeueDecision(False, None, restarts, cap, "not running inside a Slurm job")
    if restarts >= cap:
        return RequeueDecision(
            False,
            job_id,
            restarts,
            cap,
            f"requeued {restarts} time(s) already, cap ${ENV_MAX_REQUEUES}={cap}",
        )
    return RequeueDecision(True, job_id, restarts, cap, f"requeue {restarts + 1} of at most {cap}")


def requeue_job(job_id: str, *, runner: Runner = run, timeout: float = REQUEUE_TIMEOUT_S) -> None:
    """``scontrol requeue JOB`` with a deadline (a wedged controller never hangs the job)."""
    runner(["scontrol", "requeue", job_id], timeout=timeout, error=SlurmError)


def job_record(job_id: str, *, runner: Runner = run, timeout: float = REQUEUE_TIMEOUT_S) -> dict[str, str]:
    """``scontrol show job JOB`` as a dict (``JobState``, ``PreemptTime``, ``Requeue``...).

    The multi-line form, read by :func:`hpcplat.slurm.parse.parse_show_job`: a job name with
    blanks and ``=`` (``JobName=x JobState=COMPLETED``) stays the name."""
    result = runner(["scontrol", "show", "job", job_id], timeout=timeout, error=SlurmError)
    return parse_show_job(result.stdout)


def is_being_preempted(record: Mapping[str, str]) -> bool:
    """Still running, with a preemption time set: preempted with a grace period."""
    preempt_time = record.get("PreemptTime", "None")
    return record.get("JobState") == "RUNNING" and preempt_time not in {"", "None", "Unknown", "N/A"}


def preempted_requeue(
    *, runner: Runner = run, saved: int | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """After saving on ``SIGTERM``: requeue the job when Slurm is preempting it; the exit status.

    Slurm only requeues a preempted job itself when it has to kill it: with a ``GraceTime`` on the
    preemptible QOS, a job that saves and exits within the grace period is recorded as FAILED and
    never comes back. So when ``scontrol show job`` says the job is still RUNNING with a
    ``PreemptTime``, this requeues it (which also frees its nodes for the preemptor at once). A
    ``SIGTERM`` from ``scancel`` (state CANCELLED) or one after Slurm already requeued it is left alone.
    """
    env = os.environ if environ is None else environ
    after_saving = "with no saved step known" if saved is None else f"after saving step {saved}"
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        say(f"stopping on SIGTERM {after_saving} (not inside a Slurm job)")
        return EXIT_PREEMPTED
    try:
        record = job_record(job_id, runner=runner)
    except HpcplatError as exc:
        say(f"stopping on SIGTERM {after_saving}; cannot ask Slurm about job {job_id}: {exc}")
        return EXIT_PREEMPTED
    if not is_being_preempted(record):
        state = record.get("JobState", "?")
        say(f"stopping on SIGTERM {after_saving} (job {job_id} is {state}, not being preempted)")
        return EXIT_PREEMPTED
    decision = requeue_decision(env)
    if not decision.requeue:
        say(f"job {job_id} is being preempted; not requeued ({decision.reason})")
        return EXIT_PREEMPTED
    try:
        requeue_job(job_id, runner=runner)
    except HpcplatError as exc:
        say(f"job {job_id} is being preempted but scontrol requeue failed: {exc}")
        return EXIT_PREEMPTED
    say(f"job {job_id} is being preempted: requeued it {after_saving}")
    return 0


def requeue_if_preempted(
    status: int, *, runner: Runner = run, environ: Mapping[str, str] | None = None
) -> int:
    """At the end of a job script in a requeueing tier: the status the script should exit with.

    Whatever the program did with the preemption signal (saved and exited, exited at once, or was
    killed), a job that Slurm is still preempting (RUNNING with a ``PreemptTime``) is requeued here,
    under the ``$HPCPLAT_MAX_REQUEUES`` cap, and the script exits 0: it comes back, from its
    checkpoint when it has one, from the start otherwise. Any other end (the program finished, a
    ``scancel``, a program that already requeued itself through :func:`preempted_requeue`) keeps the
    program's ``status``. Asking Slurm costs one ``scontrol show job`` at the end of the job.
    """
    env = os.environ if environ is None else environ
    decision = requeue_decision(env)
    if decision.job_id is None:
        return status
    try:
        record = job_record(decision.job_id, runner=runner)
    except HpcplatError as exc:
        say(f"cannot ask Slurm whether job {decision.job_id} is being preempted: {exc}")
        return status
    if not is_being_preempted(record):
        return status
    if not decision.requeue:
        say(f"job {decision.job_id} is being preempted; not requeued ({decision.reason})")
        return status if status else EXIT_PREEMPTED
    try:
        requeue_job(decision.job_id, runner=runner)
    except HpcplatError as exc:
        say(f"job {decision.job_id} is being preempted but scontrol requeue failed: {exc}")
        return status if status else EXIT_PREEMPTED
    say(
        f"job {decision.job_id} is being preempted (the program exited with status {status}): "
        f"requeued it ({decision.reason})"
    )
    return 0
