"""The process-wide stop request: ``SIGUSR1``/``SIGTERM`` set a flag; callbacks run at a step boundary.

Nothing is ever saved inside a signal handler: the handler only records the request, and the
training loop reads it (see :mod:`hpcplat.job.checkpoint`).
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from hpcplat.errors import UsageError

log = logging.getLogger("hpcplat.checkpoint")


class StopReason(enum.Enum):
    """Why the job was asked to stop."""

    WARNING = "SIGUSR1"
    """Time-limit warning or idle reclaim: save, then requeue (up to the cap) or exit."""
    PREEMPTED = "SIGTERM"
    """Preemption or cancellation: save and exit; Slurm requeues a preempted job itself."""

    @classmethod
    def from_signal(cls, signum: int) -> StopReason:
        return cls.PREEMPTED if signum == signal.SIGTERM else cls.WARNING


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
