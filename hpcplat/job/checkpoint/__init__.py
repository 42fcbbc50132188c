"""Checkpoints inside a job: save on the checkpoint signal on every rank, resume after a requeue.

The signal protocol (see ``docs/checkpointing.md``): ``SIGUSR1`` means "save now, then stop: you will
be requeued" (a time-limit warning from ``--signal=USR1@N``, or the node agent reclaiming idle GPUs);
``SIGTERM`` means the job is being preempted or cancelled (save, exit; a preempted job is requeued,
by rank 0 when Slurm would not: see :func:`preempted_requeue`). Both only set a flag: the training
loop looks at it at step boundaries, saves there and calls :meth:`Checkpointer.requeue_or_exit`.
Nothing is ever saved inside a signal handler.

On disk, one directory per step, one shard per rank, one marker per shard::

    <dir>/step-000000000120/rank-00000.pt          the data (written to a temp file, fsynced, renamed)
    <dir>/step-000000000120/rank-00000.done.json   the marker: written last, atomically
    <dir>/step-000000000120/rank-00001.pt
    <dir>/step-000000000120/rank-00001.done.json

A step is *complete* when every rank ``0..world_size-1`` has its marker, so a crash in the middle of
a save never leaves a half checkpoint that looks like the latest one, and every rank resuming reads
the same "latest complete step". Plain command jobs use the same layout through the command line
(``python -m hpcplat.checkpoint latest|path|done|requeue|list``), with a directory as the shard.

Users import it as ``hpcplat.checkpoint``; the parts live here: :mod:`.signals` (the stop flag and
callbacks), :mod:`.layout` (files, markers, scan, latest, prune, ownership), :mod:`.requeue` (the
requeue decision and the ``scontrol`` calls), :mod:`.checkpointer` (:class:`Checkpointer`) and
:mod:`.cli` (the command line). Patch a function where it is defined, not through this package.
"""

from __future__ import annotations

from hpcplat.job.checkpoint.checkpointer import (
    Checkpointer,
    CheckpointWriteError,
    Restored,
)
from hpcplat.job.checkpoint.cli import (
    main,
)
from hpcplat.job.checkpoint.layout import (
    DEFAULT_KEEP,
    ENV_DIR,
    Checkpoint,
    Format,
    StepStatus,
    check_owned,
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
    DEFAULT_MAX_REQUEUES,
    ENV_MAX_REQUEUES,
    EXIT_NOT_REQUEUED,
    EXIT_PREEMPTED,
    REQUEUE_TIMEOUT_S,
    RequeueDecision,
    is_being_preempted,
    job_record,
    preempted_requeue,
    requeue_decision,
    requeue_if_preempted,
    requeue_job,
)
from hpcplat.job.checkpoint.signals import (
    SignalCallback,
    StopReason,
    clear_stop,
    install_signal_handlers,
    on_save,
    on_signal,
    request_stop,
    run_save_hooks,
    run_signal_callbacks,
    stop_reason,
)
from hpcplat.job.environment import rank as env_rank
from hpcplat.job.environment import world_size as env_world_size

__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_MAX_REQUEUES",
    "ENV_DIR",
    "ENV_MAX_REQUEUES",
    "EXIT_NOT_REQUEUED",
    "EXIT_PREEMPTED",
    "REQUEUE_TIMEOUT_S",
    "Checkpoint",
    "CheckpointWriteError",
    "Checkpointer",
    "Format",
    "RequeueDecision",
    "Restored",
    "SignalCallback",
    "StepStatus",
    "StopReason",
    "check_owned",
    "clear_stop",
    "env_rank",
    "env_world_size",
    "install_signal_handlers",
    "is_being_preempted",
    "job_record",
    "latest",
    "main",
    "marker_name",
    "on_save",
    "on_signal",
    "preempted_requeue",
    "prune",
    "request_stop",
    "requeue_decision",
    "requeue_if_preempted",
    "requeue_job",
    "resolve_dir",
    "run_save_hooks",
    "run_signal_callbacks",
    "scan",
    "shard_name",
    "step_dir_name",
    "stop_reason",
    "write_marker",
]
