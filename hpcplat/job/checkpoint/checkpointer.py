"""The in-job API: :class:`Checkpointer` saves every rank's shard, resumes, and stops on a signal."""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hpcplat.errors import HpcplatError, UsageError
from hpcplat.files import atomic_file
from hpcplat.job import environment
from hpcplat.job.checkpoint import signals
from hpcplat.job.checkpoint.layout import (
    DEFAULT_KEEP,
    Checkpoint,
    Format,
    latest,
    marker_name,
    prune,
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
    requeue_job,
    say,
)
from hpcplat.job.checkpoint.signals import (
    StopReason,
    install_signal_handlers,
    request_stop,
    run_save_hooks,
    run_signal_callbacks,
)
from hpcplat.runner import Runner, run

log = logging.getLogger("hpcplat.checkpoint")


class CheckpointWriteError(HpcplatError):
    """A checkpoint could not be written (disk full, quota, file size limit...). The temporary
    file is gone and the previous complete checkpoint is untouched."""

    def __init__(self, directory: Path, step: int, exc: OSError, previous: Checkpoint | None) -> None:
        kept = (
            f"step {previous.step} is still the latest complete one" if previous else "none was saved before"
        )
        super().__init__(
            f"cannot write checkpoint step {step} in {directory}: {exc.strerror or exc} "
            f"(errno {exc.errno}); {kept}",
            hint="free space in (or point HPCPLAT_CHECKPOINT_DIR / --checkpoint-dir at) a filesystem "
            "with room for a checkpoint, then resubmit: the job resumes from the latest complete step",
        )
        self.errno = exc.errno


@dataclass(frozen=True)
class Restored:
    """What :meth:`Checkpointer.load_latest` returns."""

    step: int
    state: Any
    checkpoint: Checkpoint


class Checkpointer:
    """Save and resume a training job's state, one shard per rank.

    ``dir`` defaults to ``$HPCPLAT_CHECKPOINT_DIR``; ``rank`` and ``world_size`` to the values set by
    ``hpcplat.launch`` (``$RANK``/``$WORLD_SIZE``) or Slurm (``$SLURM_PROCID``/``$SLURM_NTASKS``).
    Every rank creates one and calls :meth:`save` with its own state at the same steps. ``keep``
    complete steps are kept (``None``: all). Creating one installs the signal handlers.
    """

    def __init__(
        self,
        dir: str | os.PathLike[str] | None = None,
        *,
        keep: int | None = DEFAULT_KEEP,
        rank: int | None = None,
        world_size: int | None = None,
        handle_signals: bool = True,
        runner: Runner = run,
    ) -> None:
        self.dir = resolve_dir(dir)
        self.rank = environment.rank() if rank is None else rank
        self.world_size = environment.world_size() if world_size is None else world_size
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise UsageError(
                f"rank {self.rank} is not within a world of {self.world_size} task(s)",
                hint="rank must be 0..world_size-1; check $RANK/$WORLD_SIZE or $SLURM_PROCID/$SLURM_NTASKS",
            )
        if keep is not None and keep < 1:
            raise UsageError(f"keep must be at least 1 (or None to keep every checkpoint), got {keep}")
        self.keep = keep
        self.last_saved_step: int | None = None
        self._runner = runner
        self.dir.mkdir(parents=True, exist_ok=True)
        if handle_signals:
            install_signal_handlers()

    # -- the stop request ------------------------------------------------------------------------------

    @property
    def stop_reason(self) -> StopReason | None:
        return signals.stop_reason()

    @property
    def should_stop(self) -> bool:
        """True once this process got ``SIGUSR1`` or ``SIGTERM``. Read it at step boundaries.

        In multi-rank training use :meth:`sync_should_stop` instead, so that every rank stops at
        the same step even when the signal reaches them a moment apart.
        """
        if signals.stop_reason() is None:
            return False
        run_signal_callbacks()
        return True

    def sync_should_stop(self) -> bool:
        """:attr:`should_stop` agreed by all ranks (a tiny all-reduce when torch.distributed is
        initialized). Collective: call it on every rank at the same step boundary."""
        local = signals.stop_reason() is not None
        if "torch" in sys.modules:
            from hpcplat.job import distributed

            agreed = distributed.any_true(local)
        else:
            agreed = local
        if agreed:
            run_signal_callbacks()
            if signals.stop_reason() is None:  # another rank got it first; behave as it will
                request_stop(StopReason.WARNING)
        return agreed

    # -- saving ----------------------------------------------------------------------------------------

    def _choose_format(self, fmt: Format | str | None) -> Format:
        if fmt is None:
            return Format.TORCH if "torch" in sys.modules else Format.PICKLE
        try:
            return Format(fmt)
        except ValueError as exc:
            allowed = ", ".join(f.value for f in Format if f is not Format.DIR)
            raise UsageError(f"unknown checkpoint format {fmt!r}; allowed: {allowed}") from exc

    def save(self, state: Any, step: int, *, format: Format | str | None = None) -> Checkpoint:
        """Write this rank's ``state`` for ``step`` atomically, then its marker, then prune.

        ``format``: ``torch`` (``torch.save``; the default when torch is imported), ``pickle``
        (the default otherwise) or ``json``.
        """
        if step < 0:
            raise UsageError(f"checkpoint step must be >= 0, got {step}")
        fmt = self._choose_format(format)
        if fmt is Format.DIR:
            raise UsageError("format 'dir' is for the command line (path/done); use torch, pickle or json")
        step_dir = self.dir / step_dir_name(step)
        step_dir.mkdir(parents=True, exist_ok=True)
        marker = step_dir / marker_name(self.rank)
        marker.unlink(missing_ok=True)  # a marker always describes the data beside it
        for stale in Format:
            if stale is not fmt and stale is not Format.DIR:
                (step_dir / shard_name(self.rank, stale)).unlink(missing_ok=True)
        shard = step_dir / shard_name(self.rank, fmt)
        try:
            with atomic_file(shard) as handle:
                if fmt is Format.TORCH:
                    import torch

                    torch.save(state, handle)
                elif fmt is Format.PICKLE:
                    pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
                else:
                    handle.write(json.dumps(state, sort_keys=True).encode())
        except OSError as exc:
            raise CheckpointWriteError(self.dir, step, exc, self.latest()) from exc
        run_save_hooks()  # what was logged up to this step is durable before the step counts
        checkpoint = write_marker(
            step_dir, step=step, rank=self.rank, world_size=self.world_size, fmt=fmt, shard=shard
        )
        self.last_saved_step = step
        self.prune()
        return checkpoint

    def prune(self) -> None:
        """Remove this rank's shards of steps older than the ``keep`` newest complete steps.

        Newer incomplete steps (another rank still writing) are never touched; each rank removes
        only its own files, and empty step directories go away.
        """
        if self.keep is None:
            return
        prune(self.dir, rank=self.rank, keep=self.keep)

    # -- resuming --------------------------------------------------------------------------------------

    def latest(self) -> Checkpoint | None:
        """The newest step complete for ALL ranks (the same answer on every rank)."""
        return latest(self.dir, rank=self.rank, world_size=self.world_size)

    def load_latest(self, *, map_location: Any = None) -> Restored | None:
        """Load this rank's shard of the newest complete step, or None when there is none."""
        checkpoint = self.latest()
        if checkpoint is None:
            return None
        return Restored(checkpoint.step, checkpoint.load(map_location=map_location), checkpoint)

    def wait_complete(self, step: int, *, timeout: float) -> bool:
        """Wait until every rank has finished ``step``; False when ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while True:
            for status in scan(self.dir):
                if status.step == step and status.complete:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    # -- stopping --------------------------------------------------------------------------------------

    def requeue_or_exit(self, *, wait_s: float = 30.0) -> NoReturn:
        """Stop after the checkpoint saved for the signal (call it right after :meth:`save`).

        Every rank first waits (at most ``wait_s``) until the step it saved is complete on all ranks,
        so no rank's exit can cut another's save short (a requeue kills every task).

        * ``SIGTERM``: when Slurm is preempting the job, rank 0 requeues it (:func:`preempted_requeue`:
          with a QOS ``GraceTime``, Slurm does not requeue a job that exits by itself) and exits 0;
          otherwise (``scancel``) rank 0 exits 143. Other ranks exit 0.
        * ``SIGUSR1``: rank 0 runs ``scontrol requeue $SLURM_JOB_ID`` while
          ``$SLURM_RESTART_COUNT < $HPCPLAT_MAX_REQUEUES`` and every rank exits 0; past the cap every
          rank exits 75 (``EXIT_NOT_REQUEUED``) and the job ends FAILED with its checkpoint saved.
        """
        run_signal_callbacks()
        reason = signals.stop_reason() or StopReason.WARNING
        step = self.last_saved_step
        if step is not None and not self.wait_complete(step, timeout=wait_s):
            log.warning(
                "checkpoint step %d is not complete on all %d ranks after %.0f s; stopping anyway",
                step,
                self.world_size,
                wait_s,
            )
        if reason is StopReason.PREEMPTED:
            _exit(self._after_sigterm(step))
        decision = requeue_decision()
        if not decision.requeue:
            say(
                f"rank {self.rank}: saved step {step} and stopping without requeue ({decision.reason}); "
                f"resubmit to resume from {self.dir}"
            )
            _exit(EXIT_NOT_REQUEUED)
        if self.rank == 0 and decision.job_id is not None:
            try:
                requeue_job(decision.job_id, runner=self._runner)
            except HpcplatError as exc:
                say(f"rank 0: scontrol requeue {decision.job_id} failed: {exc}")
                _exit(EXIT_NOT_REQUEUED)
            say(f"rank 0: saved step {step}; requeued job {decision.job_id} ({decision.reason})")
        _exit(0)

    def _after_sigterm(self, step: int | None) -> int:
        """Rank 0 requeues a job that is being preempted (see :func:`preempted_requeue`)."""
        if self.rank != 0:
            # 0, not 143: with srun --kill-on-bad-exit a failing task would kill rank 0 before it
            # requeued the job. Slurm decides the job's state, not this status.
            say(f"rank {self.rank}: stopping on SIGTERM after saving step {step}")
            return 0
        return preempted_requeue(runner=self._runner, saved=step)


def _exit(code: int) -> NoReturn:
    """``sys.exit``, or, with a live torch process group, an exit that skips its destructors."""
    if "torch" in sys.modules:
        from hpcplat.job import distributed

        if distributed.is_initialized():
            distributed.hard_exit(code)
    sys.exit(code)
