"""In-job tracking: params, metrics and artifacts of the running job, written to the catalog.

    from hpcplat import track
    track.log_params(lr=0.1, batch_size=64)
    for step in range(n):
        ...
        track.log_metric(step=step, loss=loss, acc=acc)
    track.log_artifact("ckpt/last.pt", kind="checkpoint")

The run comes from the environment every hpcplat job exports (``HPCPLAT_RUN_ID``,
``HPCPLAT_CATALOG_URL``, ``HPCPLAT_JOB_DIR``, ``SLURM_RESTART_COUNT``), or from :func:`init`.

- ``log_metric`` only validates and appends to an in-memory queue (about a microsecond); a
  background thread writes batches every ``flush_every`` points or ``flush_interval_s`` seconds with
  one ``INSERT ... ON CONFLICT DO NOTHING`` executemany; :func:`flush` does it now. Everything left is
  flushed at exit, on the checkpoint signal (via ``hpcplat.checkpoint.on_signal``) and, with or
  without the checkpoint helper, on ``SIGTERM`` and ``SIGUSR1`` (scancel, time limit, preemption):
  the handler flushes, then does what was there before (an earlier handler, ignoring, or the
  default: the process still ends by the signal).
- Only rank 0 (``RANK``, else ``SLURM_PROCID``: :mod:`hpcplat.job.environment`) records, unless
  ``init(all_ranks=True)``.
- NaN and infinities are recorded as such (a diverging run is visible, not a crash); the first
  non-finite value of a metric is a warning in the job's log. Non-numbers, values that are not a
  single float, and steps outside 64-bit integers are refused at once with a ``ValueError`` naming
  the metric; nothing of a refused call is queued.
- When the database cannot be reached, batches go to a spool file in ``$HPCPLAT_JOB_DIR/spool/``
  (fsync'd) that ``hpcplat reconcile`` ingests. The first value logged for a (metric, step) wins,
  so a requeued job that logs the same steps again adds nothing twice. When the spool cannot be
  written either (a full disk), the batch stays in memory and is tried again every
  ``SPOOL_RETRY_S`` seconds and at exit; past ``MAX_PENDING_POINTS`` the oldest points are dropped
  with an error saying how many.
- Without ``HPCPLAT_RUN_ID`` and without :func:`init`, tracking is off (one warning) and calls still
  validate their values.

Importing this module is cheap; SQLAlchemy is imported by the background thread on first flush.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import logging
import operator
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from hpcplat.job import environment

log = logging.getLogger(__name__)

DEFAULT_FLUSH_EVERY = 2000
DEFAULT_FLUSH_INTERVAL_S = 5.0
DB_RETRY_S = 60.0
"""After a failed write, batches go straight to the spool for this long before the next try."""
CONNECT_TIMEOUT_S = 5.0
SPOOL_RETRY_S = 10.0
"""After neither the database nor the spool took a batch, wait this long before the next try."""
MAX_PENDING_POINTS = 1_000_000
"""Points kept in memory while nothing can be written; the oldest beyond it are dropped."""
STEP_MIN, STEP_MAX = -(2**63), 2**63 - 1
"""Steps are 64-bit integers in the catalog."""
FLUSH_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def _bad_value(name: str, value: Any) -> float:
    """Slow path of value checking: numbers that are not plain floats, and refusals."""
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        raise ValueError(
            f"metric {name!r}: {value!r} is not a number ({type(value).__name__}); log numbers "
            f"(int, float, numpy or 0-d torch scalars)"
        )
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"metric {name!r}: {type(value).__name__} cannot be a single float: {exc}") from None


def _bad_step(step: int) -> None:
    raise ValueError(f"step {step} is out of range: steps are 64-bit integers ({STEP_MIN} to {STEP_MAX})")


class Tracker:
    """The tracking state of one process for one run (use the module functions)."""

    def __init__(
        self,
        run_id: str | None,
        url: str | None,
        *,
        job_dir: str | None = None,
        attempt: int = 0,
        enabled: bool = True,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    ) -> None:
        self.run_id = run_id
        self.url = url
        self.job_dir = job_dir
        self.attempt = attempt
        self.enabled = enabled and run_id is not None
        self.flush_every = max(1, flush_every)
        self.flush_interval_s = flush_interval_s
        self._points: deque[tuple[int, str, float, float]] = deque()
        self._params: dict[str, Any] = {}
        self._artifacts: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._engine: Any = None
        self._db_down_until = 0.0
        self._spool_file: Path | None = None
        self._retry_at = 0.0
        self._warned_non_finite: set[str] = set()
        self.points_written = 0
        self.points_spooled = 0
        self.points_dropped = 0

    # -- logging (hot path) ----------------------------------------------------------------------

    def log_metric(self, step: int, values: dict[str, Any]) -> None:
        if type(step) is not int:
            step = operator.index(step)
        if not STEP_MIN <= step <= STEP_MAX:
            _bad_step(step)
        if not self.enabled:
            for name, value in values.items():
                if type(value) is not float:
                    _bad_value(name, value)
            return
        points = self._points
        if len(values) == 1:  # the common case, without building a list
            ((name, value),) = values.items()
            if type(value) is not float:
                value = _bad_value(name, value)
            points.append((step, name, value, time.time()))
        else:
            now = time.time()
            # all values checked before any is queued: a refused call records nothing
            points.extend(
                [
                    (
                        step,
                        name,
                        value if type(value) is float else _bad_value(name, value),
                        now,
                    )
                    for name, value in values.items()
                ]
            )
        if len(points) >= self.flush_every or self._thread is None:
            self._start()
            self._wake.set()

    def log_params(self, params: dict[str, Any]) -> None:
        from hpcplat.catalog.ingest import jsonable

        cleaned = jsonable(params)
        if self.enabled:
            with self._lock:
                self._params.update(cleaned)
            self._start()

    def log_artifact(self, path: str | os.PathLike[str], kind: str = "other") -> None:
        from hpcplat.catalog.enums import ArtifactKind

        parsed = ArtifactKind.parse(kind)
        target = Path(path)
        if not target.is_file():
            raise ValueError(f"artifact {target} is not a file")
        digest = hashlib.sha256()
        with target.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        record = {
            "path": str(target.resolve()),
            "kind": parsed.value,
            "size": target.stat().st_size,
            "sha256": digest.hexdigest(),
            "attempt": self.attempt,
        }
        if self.enabled:
            with self._lock:
                self._artifacts.append(record)
            self._start()

    # -- flushing --------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is not None or self._closed or not self.enabled:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hpcplat-track", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._closed:
                break
            try:
                self._flush(force=False)
            except Exception:
                log.exception("hpcplat.track: flush failed; will retry")

    def flush(self) -> None:
        """Write everything queued now (to the database, else to the spool; when neither takes it,
        it stays queued for the next flush)."""
        self._flush(force=True)

    def _flush(self, *, force: bool) -> None:
        if not self.enabled or self.run_id is None:
            return
        with self._lock:
            if not force and time.monotonic() < self._retry_at:
                return  # neither the database nor the spool took the last batch: wait a while
            count = len(self._points)
            popleft = self._points.popleft
            points = [popleft() for _ in range(count)]
            params, self._params = self._params, {}
            artifacts, self._artifacts = self._artifacts, []
            if not (points or params or artifacts):
                return
            self._warn_non_finite(points)
            try:
                self._write(points, params, artifacts)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the batch is kept and retried
                self._keep(points, params, artifacts, exc)
            else:
                self._retry_at = 0.0

    def _write(
        self,
        points: list[tuple[int, str, float, float]],
        params: dict[str, Any],
        artifacts: list[dict[str, Any]],
    ) -> None:
        rows = [(self.attempt, s, n, v, t) for s, n, v, t in points]
        if time.monotonic() >= self._db_down_until:
            error = self._write_db(rows, params, artifacts)
            if error is None:
                self.points_written += len(rows)
                return
            self._db_down_until = time.monotonic() + DB_RETRY_S
            log.warning(
                "hpcplat.track: could not write to the catalog (%s); spooling to %s", error, self._spool()
            )
        self._write_spool(points, params, artifacts)
        self.points_spooled += len(rows)

    def _keep(
        self,
        points: list[tuple[int, str, float, float]],
        params: dict[str, Any],
        artifacts: list[dict[str, Any]],
        exc: Exception,
    ) -> None:
        """Put a batch nobody took back in front of the queue, bounded by ``MAX_PENDING_POINTS``."""
        self._points.extendleft(reversed(points))
        self._params = {**params, **self._params}
        self._artifacts = artifacts + self._artifacts
        self._retry_at = time.monotonic() + SPOOL_RETRY_S
        excess = len(self._points) - MAX_PENDING_POINTS
        if excess > 0:
            for _ in range(excess):
                self._points.popleft()
            self.points_dropped += excess
            log.error(
                "hpcplat.track: could not write the spool %s either (%s); gave up on the %d oldest "
                "points (%d dropped in all), keeping the newest %d in memory",
                self._spool_file,
                exc,
                excess,
                self.points_dropped,
                MAX_PENDING_POINTS,
            )
        else:
            log.warning(
                "hpcplat.track: could not write the spool %s either (%s); keeping %d points in "
                "memory, next try in %.0f s and at exit",
                self._spool_file,
                exc,
                len(self._points),
                SPOOL_RETRY_S,
            )

    def _warn_non_finite(self, points: list[tuple[int, str, float, float]]) -> None:
        warned = self._warned_non_finite
        for step, name, value, _ in points:
            if value - value != 0.0 and name not in warned:
                warned.add(name)
                log.warning(
                    "hpcplat.track: metric %r is %s at step %d (its first non-finite value; recorded)",
                    name,
                    value,
                    step,
                )

    def _write_db(
        self, rows: list[Any], params: dict[str, Any], artifacts: list[dict[str, Any]]
    ) -> str | None:
        import sqlalchemy as sa

        from hpcplat.catalog import ingest
        from hpcplat.errors import HpcplatError

        assert self.run_id is not None
        try:
            if self._engine is None:
                from hpcplat.catalog.schema import open_engine

                self._engine = open_engine(self.url, connect_timeout_s=CONNECT_TIMEOUT_S)
            with self._engine.begin() as conn:
                ingest.insert_points(conn, self.run_id, rows)
                ingest.upsert_params(conn, self.run_id, params)
                ingest.insert_artifacts(conn, self.run_id, artifacts)
        except (HpcplatError, sa.exc.SQLAlchemyError, OSError, ValueError, OverflowError) as exc:
            return (str(exc).splitlines() or [type(exc).__name__])[0]
        return None

    def _spool(self) -> Path:
        if self._spool_file is None:
            from hpcplat.catalog.spool import spool_path

            base = self.job_dir or os.path.join(os.path.expanduser("~"), ".cache", "hpcplat")
            self._spool_file = spool_path(base, str(self.run_id))
            if not self.job_dir:
                log.warning(
                    "hpcplat.track: no HPCPLAT_JOB_DIR; spooling to %s (ingest it with "
                    "`hpcplat reconcile --spool %s`)",
                    self._spool_file,
                    self._spool_file,
                )
        return self._spool_file

    def _write_spool(
        self,
        points: list[tuple[int, str, float, float]],
        params: dict[str, Any],
        artifacts: list[dict[str, Any]],
    ) -> None:
        from hpcplat.catalog import spool

        records: list[dict[str, Any]] = []
        if points:
            records.append({"t": "m", "r": self.run_id, "a": self.attempt, "pts": [list(p) for p in points]})
        if params:
            records.append({"t": "p", "r": self.run_id, "params": params})
        if artifacts:
            records.append({"t": "a", "r": self.run_id, "artifacts": artifacts})
        spool.append(self._spool(), records)

    def close(self) -> None:
        """Flush what is left and stop the background thread (called at exit)."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self.flush()
        if self._points:
            log.error(
                "hpcplat.track: %d points of run %s could not be written to the catalog nor to the "
                "spool %s and are lost",
                len(self._points),
                self.run_id,
                self._spool_file,
            )
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


# -- the module-level API -----------------------------------------------------------------------

_tracker: Tracker | None = None
_init_lock = threading.Lock()


def init(
    run_id: str | None = None,
    url: str | None = None,
    *,
    job_dir: str | None = None,
    attempt: int | None = None,
    all_ranks: bool = False,
    flush_every: int = DEFAULT_FLUSH_EVERY,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
) -> Tracker:
    """Start tracking for ``run_id`` (default ``$HPCPLAT_RUN_ID``) in the catalog at ``url``
    (default ``$HPCPLAT_CATALOG_URL``, then the site configuration). Replaces any earlier tracker,
    flushing it first."""
    global _tracker
    env = os.environ
    with _init_lock:
        if _tracker is not None:
            _tracker.close()
        run = run_id or env.get("HPCPLAT_RUN_ID") or None
        if run is None:
            log.warning(
                "hpcplat.track: HPCPLAT_RUN_ID is not set, metrics are not recorded "
                "(submit with `hpcplat submit`, or call hpcplat.track.init(run_id=...))"
            )
        try:
            restart = int(env.get("SLURM_RESTART_COUNT", "0") or 0) if attempt is None else attempt
        except ValueError:
            restart = 0
        tracker = Tracker(
            run,
            url or env.get("HPCPLAT_CATALOG_URL") or None,
            job_dir=job_dir or env.get("HPCPLAT_JOB_DIR") or None,
            attempt=restart,
            enabled=all_ranks or environment.rank(strict=False) == 0,
            flush_every=flush_every,
            flush_interval_s=flush_interval_s,
        )
        _tracker = tracker
    _register_hooks()
    return tracker


_hooks_registered = False


def _register_hooks() -> None:
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_at_exit)
    _install_signal_handlers()
    try:
        checkpoint = importlib.import_module("hpcplat.job.checkpoint")
    except ImportError:
        return
    on_signal = getattr(checkpoint, "on_signal", None)
    if callable(on_signal):
        on_signal(_on_checkpoint_signal)
    on_save = getattr(checkpoint, "on_save", None)
    if callable(on_save):
        on_save(_on_checkpoint_signal)  # flush before a checkpoint counts as complete


_previous_handlers: dict[int, Any] = {}


def _install_signal_handlers() -> None:
    """Flush on ``FLUSH_SIGNALS``, chained to the handler that was there (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        log.warning(
            "hpcplat.track: initialised outside the main thread; points still queued when SIGTERM "
            "ends the process are lost (call hpcplat.track.init() from the main thread)"
        )
        return
    for signum in FLUSH_SIGNALS:
        try:
            _previous_handlers[signum] = signal.signal(signum, _on_terminating_signal)
        except (OSError, ValueError):  # pragma: no cover - an embedded interpreter without signals
            continue


def _on_terminating_signal(signum: int, frame: Any) -> None:
    """Flush, then do what the signal did before: the earlier handler, nothing, or the default."""
    tracker = _tracker
    if tracker is not None:
        try:
            tracker.flush()
        except Exception:
            log.exception("hpcplat.track: flush on signal %d failed", signum)
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:  # the default action (or a handler not set from Python)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _at_exit() -> None:
    if _tracker is not None:
        _tracker.close()


def _on_checkpoint_signal(*_args: Any) -> None:
    if _tracker is not None:
        _tracker.flush()


def _current() -> Tracker:
    tracker = _tracker
    return tracker if tracker is not None else init()


def log_metric(step: int, **values: Any) -> None:
    """Record ``values`` (name=number, NaN and infinities included) at ``step``; raises
    ``ValueError`` for non-numbers and steps outside 64-bit integers."""
    (_tracker or _current()).log_metric(step, values)


def log_params(**params: Any) -> None:
    """Record hyperparameters (JSON values; a name logged again takes the new value)."""
    _current().log_params(params)


def log_artifact(path: str | os.PathLike[str], kind: str = "other") -> None:
    """Record a file the run produced (path, size, sha256): kind checkpoint, model, log, plot, other."""
    _current().log_artifact(path, kind)


def flush() -> None:
    """Write everything queued now."""
    if _tracker is not None:
        _tracker.flush()


def run_id() -> str | None:
    return _current().run_id
