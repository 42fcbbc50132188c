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
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import logging
import os
import pickle
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from hpcplat.errors import HpcplatError, SlurmError, UsageError
from hpcplat.runner import Runner, run

log = logging.getLogger(__name__)

ENV_DIR = "HPCPLAT_CHECKPOINT_DIR"
ENV_MAX_REQUEUES = "HPCPLAT_MAX_REQUEUES"
DEFAULT_MAX_REQUEUES = 3
DEFAULT_KEEP = 3
EXIT_NOT_REQUEUED = 75
"""Exit status after a time-limit warning once the requeue cap is reached (``EX_TEMPFAIL``)."""
EXIT_PREEMPTED = 128 + signal.SIGTERM
REQUEUE_TIMEOUT_S = 30.0

_STEP_DIR = re.compile(r"^step-(\d{12})$")
_MARKER = re.compile(r"^rank-(\d{5})\.done\.json$")


class Format(enum.Enum):
    """How a shard is stored."""

    TORCH = "torch"
    PICKLE = "pickle"
    JSON = "json"
    DIR = "dir"
    """A directory of files written by a plain command job."""

    @property
    def suffix(self) -> str:
        return {"torch": ".pt", "pickle": ".pkl", "json": ".json", "dir": ""}[self.value]


class StopReason(enum.Enum):
    """Why the job was asked to stop."""

    WARNING = "SIGUSR1"
    """Time-limit warning or idle reclaim: save, then requeue (up to the cap) or exit."""
    PREEMPTED = "SIGTERM"
    """Preemption or cancellation: save and exit; Slurm requeues a preempted job itself."""

    @classmethod
    def from_signal(cls, signum: int) -> StopReason:
        return cls.PREEMPTED if signum == signal.SIGTERM else cls.WARNING


# -- the process-wide signal flag and callbacks ---------------------------------------------------------

SignalCallback = Callable[[], object]
_callbacks: list[SignalCallback] = []
_callbacks_lock = threading.Lock()
_callbacks_ran = False
_stop: StopReason | None = None
_installed = False


def _handle(signum: int, frame: FrameType | None) -> None:
    """The signal handler: records the request, nothing else (no I/O, no locks)."""
    global _stop
    reason = StopReason.from_signal(signum)
    # A preemption after a warning wins: the job will be killed, not requeued by us.
    if _stop is None or reason is StopReason.PREEMPTED:
        _stop = reason


def install_signal_handlers() -> None:
    """Catch ``SIGUSR1`` and ``SIGTERM`` in this process (idempotent; main thread only).

    :class:`Checkpointer` calls it; call it yourself first thing in a script that imports heavy
    libraries before creating one, since an uncaught ``SIGUSR1`` kills the process.
    """
    global _installed
    if _installed:
        return
    if threading.current_thread() is not threading.main_thread():
        raise UsageError(
            "hpcplat.checkpoint can only catch signals from the main thread",
            hint="create the Checkpointer in the main thread, or pass handle_signals=False",
        )
    signal.signal(signal.SIGUSR1, _handle)
    signal.signal(signal.SIGTERM, _handle)
    _installed = True


def stop_reason() -> StopReason | None:
    """The stop request this process received, if any."""
    return _stop


def request_stop(reason: StopReason = StopReason.WARNING) -> None:
    """Ask the training loop to stop as if the signal had come (for tests and custom triggers)."""
    global _stop
    if _stop is None or reason is StopReason.PREEMPTED:
        _stop = reason


def clear_stop() -> None:
    """Forget a stop request (a test running several loops in one process)."""
    global _stop, _callbacks_ran
    _stop = None
    _callbacks_ran = False


def on_signal(callback: SignalCallback) -> SignalCallback:
    """Register ``callback()`` to run once when the stop request is first seen.

    It runs in the main thread at a step boundary (when the loop reads
    :attr:`Checkpointer.should_stop` or calls :meth:`Checkpointer.requeue_or_exit`), never inside
    the signal handler, so it may do I/O (``hpcplat.track`` flushes its metrics here). Usable as a
    decorator; returns ``callback``.
    """
    with _callbacks_lock:
        _callbacks.append(callback)
    return callback


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


_save_hooks: list[SignalCallback] = []


def on_save(callback: SignalCallback) -> SignalCallback:
    """Register ``callback()`` to run before every checkpoint is marked complete.

    ``hpcplat.track`` flushes its buffered metrics here: a resumed attempt starts after the
    checkpoint, so a point still in memory when the job died right after saving would never be
    logged again. A failing hook is logged and does not stop the save.
    """
    with _callbacks_lock:
        _save_hooks.append(callback)
    return callback


def run_save_hooks() -> None:
    with _callbacks_lock:
        pending = list(_save_hooks)
    for callback in pending:
        try:
            callback()
        except Exception:
            log.exception("checkpoint save hook %r failed", callback)


def run_signal_callbacks() -> None:
    """Run the registered callbacks once (later calls do nothing). A failing callback is logged."""
    global _callbacks_ran
    with _callbacks_lock:
        if _callbacks_ran:
            return
        _callbacks_ran = True
        pending = list(_callbacks)
    for callback in pending:
        try:
            callback()
        except Exception:
            log.exception("checkpoint signal callback %r failed", callback)


# -- the job's identity ------------------------------------------------------------------------------------


def _env_int(environ: Mapping[str, str], names: Sequence[str], default: int) -> int:
    for name in names:
        text = environ.get(name, "").strip()
        if text:
            try:
                return int(text)
            except ValueError as exc:
                raise UsageError(f"${name} is not an integer: {text!r}") from exc
    return default


def env_rank(environ: Mapping[str, str] | None = None) -> int:
    """This task's global rank: ``$RANK`` (set by hpcplat.launch), else ``$SLURM_PROCID``, else 0."""
    return _env_int(os.environ if environ is None else environ, ("RANK", "SLURM_PROCID"), 0)


def env_world_size(environ: Mapping[str, str] | None = None) -> int:
    """Number of tasks: ``$WORLD_SIZE``, else ``$SLURM_NTASKS``, else 1."""
    return _env_int(os.environ if environ is None else environ, ("WORLD_SIZE", "SLURM_NTASKS"), 1)


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
    restarts = _env_int(env, ("SLURM_RESTART_COUNT",), 0)
    cap = _env_int(env, (ENV_MAX_REQUEUES,), DEFAULT_MAX_REQUEUES)
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
    """``scontrol show job -o JOB`` as a dict (``JobState``, ``PreemptTime``, ``Requeue``...)."""
    result = runner(["scontrol", "show", "job", "-o", job_id], timeout=timeout, error=SlurmError)
    record: dict[str, str] = {}
    for token in result.stdout.split():
        key, sep, value = token.partition("=")
        if sep and key not in record:
            record[key] = value
    return record


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
        _say(f"stopping on SIGTERM {after_saving} (not inside a Slurm job)")
        return EXIT_PREEMPTED
    try:
        record = job_record(job_id, runner=runner)
    except HpcplatError as exc:
        _say(f"stopping on SIGTERM {after_saving}; cannot ask Slurm about job {job_id}: {exc}")
        return EXIT_PREEMPTED
    if not is_being_preempted(record):
        state = record.get("JobState", "?")
        _say(f"stopping on SIGTERM {after_saving} (job {job_id} is {state}, not being preempted)")
        return EXIT_PREEMPTED
    decision = requeue_decision(env)
    if not decision.requeue:
        _say(f"job {job_id} is being preempted; not requeued ({decision.reason})")
        return EXIT_PREEMPTED
    try:
        requeue_job(job_id, runner=runner)
    except HpcplatError as exc:
        _say(f"job {job_id} is being preempted but scontrol requeue failed: {exc}")
        return EXIT_PREEMPTED
    _say(f"job {job_id} is being preempted: requeued it {after_saving}")
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
        _say(f"cannot ask Slurm whether job {decision.job_id} is being preempted: {exc}")
        return status
    if not is_being_preempted(record):
        return status
    if not decision.requeue:
        _say(f"job {decision.job_id} is being preempted; not requeued ({decision.reason})")
        return status if status else EXIT_PREEMPTED
    try:
        requeue_job(decision.job_id, runner=runner)
    except HpcplatError as exc:
        _say(f"job {decision.job_id} is being preempted but scontrol requeue failed: {exc}")
        return status if status else EXIT_PREEMPTED
    _say(
        f"job {decision.job_id} is being preempted (the program exited with status {status}): "
        f"requeued it ({decision.reason})"
    )
    return 0


# -- files -------------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Write ``path`` through a temp file in the same directory: fsync, rename, fsync the directory."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def step_dir_name(step: int) -> str:
    return f"step-{step:012d}"


def shard_name(rank: int, fmt: Format) -> str:
    return f"rank-{rank:05d}{fmt.suffix}"


def marker_name(rank: int) -> str:
    return f"rank-{rank:05d}.done.json"


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint step as seen by one rank."""

    step: int
    path: Path
    """The step directory."""
    rank: int
    world_size: int
    """How many ranks wrote this step."""
    format: Format
    shard: Path
    """This rank's file (or directory, for :attr:`Format.DIR`)."""
    saved_at: str = ""

    def load(self, *, map_location: Any = None) -> Any:
        """This rank's state. Torch shards are loaded with ``weights_only=False``: they are the job's
        own files (optimizer state and RNG states are not plain tensors): so a shard, its marker
        and its step directory must belong to the user running the job and be writable by nobody
        else (:func:`check_owned`), or nothing is loaded."""
        check_owned(self.path, self.path / marker_name(self.rank), self.shard)
        if self.format is Format.TORCH:
            import torch

            return torch.load(self.shard, map_location=map_location, weights_only=False)
        if self.format is Format.PICKLE:
            with self.shard.open("rb") as handle:
                return pickle.load(handle)  # noqa: S301 - the job's own checkpoint
        if self.format is Format.JSON:
            return json.loads(self.shard.read_text())
        return self.shard


def check_owned(*paths: Path) -> None:
    """Refuse checkpoint files another user owns or could have written.

    Loading a pickle or a ``torch.load(weights_only=False)`` shard runs code: a shard planted by
    another user of a shared directory would run as the victim. Each path must be owned by this
    process's user (or root, who can write anything anyway), not a link, and not world-writable.
    """
    uid = os.geteuid()
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if st.st_uid not in (uid, 0) or st.st_mode & 0o002 or stat.S_ISLNK(st.st_mode):
            raise HpcplatError(
                f"refusing to load checkpoint {path}: owned by uid {st.st_uid} with mode "
                f"{stat.S_IMODE(st.st_mode):o}; only this user's own files (uid {uid}, not world-writable, "
                "not a link) are loaded",
                hint="someone else may have planted it: move it away, and keep checkpoints in a private "
                "directory (hpcplat's default, <job_root>/<user>/<job id>/checkpoints, is)",
            )


@dataclass(frozen=True)
class Restored:
    """What :meth:`Checkpointer.load_latest` returns."""

    step: int
    state: Any
    checkpoint: Checkpoint


@dataclass(frozen=True)
class StepStatus:
    step: int
    path: Path
    world_size: int | None
    """From the markers; None when no rank finished."""
    ranks_done: tuple[int, ...]

    @property
    def complete(self) -> bool:
        return self.world_size is not None and self.ranks_done == tuple(range(self.world_size))


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None  # pruned by its rank while we looked
    except (OSError, ValueError):
        log.warning("ignoring unreadable checkpoint marker %s", path)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("world_size"), int):
        log.warning("ignoring malformed checkpoint marker %s", path)
        return None
    return data


def _entries(directory: Path) -> list[Path]:
    """The entries of ``directory``; empty when another rank just removed it."""
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def scan(directory: Path) -> list[StepStatus]:
    """Every step directory under ``directory``, oldest first, with which ranks finished it.

    Other ranks save and prune at the same time: files and directories that vanish while we look
    are simply not there."""
    steps: list[StepStatus] = []
    for entry in _entries(directory):
        match = _STEP_DIR.match(entry.name)
        if match is None:
            continue
        ranks: list[int] = []
        sizes: set[int] = set()
        for item in _entries(entry):
            marker = _MARKER.match(item.name)
            if marker is None:
                continue
            data = _read_marker(item)
            if data is None:
                continue
            ranks.append(int(marker.group(1)))
            sizes.add(int(data["world_size"]))
        # Markers that disagree about the world size never make a step complete.
        world = next(iter(sizes)) if len(sizes) == 1 else None
        steps.append(StepStatus(int(match.group(1)), entry, world, tuple(sorted(ranks))))
    steps.sort(key=lambda s: s.step)
    return steps


def resolve_dir(directory: str | os.PathLike[str] | None) -> Path:
    if directory is not None:
        return Path(directory)
    value = os.environ.get(ENV_DIR, "").strip()
    if not value:
        raise UsageError(
            f"no checkpoint directory: ${ENV_DIR} is not set",
            hint=f"pass dir=... (or --dir), or export {ENV_DIR}; hpcplat job scripts export it",
        )
    return Path(value)


# -- the in-job API ---------------------------------------------------------------------------------------


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
        self.rank = env_rank() if rank is None else rank
        self.world_size = env_world_size() if world_size is None else world_size
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
        return _stop

    @property
    def should_stop(self) -> bool:
        """True once this process got ``SIGUSR1`` or ``SIGTERM``. Read it at step boundaries.

        In multi-rank training use :meth:`sync_should_stop` instead, so that every rank stops at
        the same step even when the signal reaches them a moment apart.
        """
        if _stop is None:
            return False
        run_signal_callbacks()
        return True

    def sync_should_stop(self) -> bool:
        """:attr:`should_stop` agreed by all ranks (a tiny all-reduce when torch.distributed is
        initialized). Collective: call it on every rank at the same step boundary."""
        local = _stop is not None
        if "torch" in sys.modules:
            from hpcplat import distributed

            agreed = distributed.any_true(local)
        else:
            agreed = local
        if agreed:
            run_signal_callbacks()
            if _stop is None:  # another rank got it first; behave as it will
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
            with _atomic_file(shard) as handle:
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
        reason = _stop or StopReason.WARNING
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
            _say(
                f"rank {self.rank}: saved step {step} and stopping without requeue ({decision.reason}); "
                f"resubmit to resume from {self.dir}"
            )
            _exit(EXIT_NOT_REQUEUED)
        if self.rank == 0 and decision.job_id is not None:
            try:
                requeue_job(decision.job_id, runner=self._runner)
            except HpcplatError as exc:
                _say(f"rank 0: scontrol requeue {decision.job_id} failed: {exc}")
                _exit(EXIT_NOT_REQUEUED)
            _say(f"rank 0: saved step {step}; requeued job {decision.job_id} ({decision.reason})")
        _exit(0)

    def _after_sigterm(self, step: int | None) -> int:
        """Rank 0 requeues a job that is being preempted (see :func:`preempted_requeue`)."""
        if self.rank != 0:
            # 0, not 143: with srun --kill-on-bad-exit a failing task would kill rank 0 before it
            # requeued the job. Slurm decides the job's state, not this status.
            _say(f"rank {self.rank}: stopping on SIGTERM after saving step {step}")
            return 0
        return preempted_requeue(runner=self._runner, saved=step)


def _exit(code: int) -> NoReturn:
    """``sys.exit``, or, with a live torch process group, an exit that skips its destructors."""
    if "torch" in sys.modules:
        from hpcplat import distributed

        if distributed.is_initialized():
            distributed.hard_exit(code)
    sys.exit(code)


def _say(message: str) -> None:
    print(f"hpcplat.checkpoint: {message}", file=sys.stderr, flush=True)


def write_marker(
    step_dir: Path, *, step: int, rank: int, world_size: int, fmt: Format, shard: Path
) -> Checkpoint:
    """Write ``rank``'s completion marker for ``step`` (after its data is durable)."""
    saved_at = datetime.now(UTC).isoformat(timespec="seconds")
    size = (
        shard.stat().st_size
        if shard.is_file()
        else sum(p.stat().st_size for p in shard.rglob("*") if p.is_file())
    )
    body = {
        "step": step,
        "rank": rank,
        "world_size": world_size,
        "format": fmt.value,
        "shard": shard.name,
        "bytes": size,
        "saved_at": saved_at,
        "job_id": os.environ.get("SLURM_JOB_ID", ""),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
    }
    with _atomic_file(step_dir / marker_name(rank)) as handle:
        handle.write(json.dumps(body, sort_keys=True).encode())
    return Checkpoint(step, step_dir, rank, world_size, fmt, shard, saved_at)


def latest(directory: Path, *, rank: int = 0, world_size: int | None = None) -> Checkpoint | None:
    """The newest step of ``directory`` complete for all ranks, seen by ``rank``."""
    for status in reversed(scan(directory)):
        if not status.complete or status.world_size is None:
            continue
        if world_size is not None and status.world_size != world_size:
            raise HpcplatError(
                f"the latest complete checkpoint (step {status.step} in {status.path}) was written by "
                f"{status.world_size} rank(s), this job has {world_size}",
                hint="resume with the same number of tasks, or start from a fresh checkpoint directory",
            )
        data = _read_marker(status.path / marker_name(rank))
        if data is None:
            continue
        fmt = Format(str(data.get("format", "pickle")))
        shard = status.path / str(data.get("shard", shard_name(rank, fmt)))
        return Checkpoint(
            status.step, status.path, rank, status.world_size, fmt, shard, str(data.get("saved_at", ""))
        )
    return None


def prune(directory: Path, *, rank: int, keep: int) -> None:
    """Remove ``rank``'s files in steps older than the ``keep`` newest complete steps."""
    steps = scan(directory)
    complete = [s.step for s in steps if s.complete]
    if len(complete) < keep:
        return
    oldest_kept = complete[-keep]
    for status in steps:
        if status.step >= oldest_kept:
            break
        prefix = f"rank-{rank:05d}"
        # Marker first: once it is gone the step no longer counts, whatever is left of the data.
        (status.path / marker_name(rank)).unlink(missing_ok=True)
        for item in _entries(status.path):
            if item.name.startswith(prefix) or item.name.startswith(f".{prefix}"):
                _remove(item)
        with contextlib.suppress(OSError):  # not empty yet: other ranks' files
            status.path.rmdir()


# -- the command line, for plain command jobs ------------------------------------------------------------

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
    rank = env_rank() if args.rank is None else args.rank
    world = env_world_size() if args.world_size is None else args.world_size
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
        _remove(shard)
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
        _fsync_tree(shard)
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
        _say(f"rank {rank}: not requeued ({decision.reason})")
        return EXIT_NOT_REQUEUED
    if rank == 0 and decision.job_id is not None:
        try:
            requeue_job(decision.job_id)
        except HpcplatError as exc:
            _say(f"rank 0: scontrol requeue {decision.job_id} failed: {exc}")
            return EXIT_NOT_REQUEUED
        _say(f"rank 0: requeued job {decision.job_id} ({decision.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
