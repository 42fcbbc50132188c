"""The live view of Slurm (:class:`hpcplat.server.live.LiveReconciler`) against the real sandbox.

A job finishes and, with the reconciler running in a thread, its run is COMPLETED within seconds
without anyone running a command; the event times are accounting's Start and End; the Slurm calls
of a cycle do not grow with the number of runs tracked or of readers following them.

Each test uses its own SQLite catalog in tmp_path and cancels the jobs it submitted.
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hpcplat.catalog import Catalog, RunIntent, RunStatus
from hpcplat.catalog.enums import EventKind
from hpcplat.server.live import LiveReconciler
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.state import JobState

pytestmark = pytest.mark.sandbox

DEADLINE_S = 90.0


class CountingClient:
    """The real CLI backend, counting the squeue and sacct calls made through it."""

    def __init__(self, inner: CliBackend) -> None:
        self.inner = inner
        self.squeue = 0
        self.sacct = 0
        self.lock = threading.Lock()

    def jobs(self, job_ids: Iterable[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        with self.lock:
            self.squeue += 1
        return self.inner.jobs(job_ids, user=user)

    def history(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        user: str | None = None,
        since: datetime | None = None,
        all_attempts: bool = False,
    ) -> list[JobInfo]:
        with self.lock:
            self.sacct += 1
        return self.inner.history(job_ids, user=user, since=since, all_attempts=all_attempts)


@pytest.fixture
def slurm(sandbox: Any) -> Iterator[CliBackend]:
    client = CliBackend(env=sandbox.env())
    submitted: list[str] = []
    original = client.submit

    def submit(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        submitted.append(result.job_id)
        return result

    client.submit = submit  # type: ignore[method-assign]
    yield client
    if submitted:
        client.cancel(submitted)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as cat:
        yield cat


def submit(catalog: Catalog, client: CliBackend, body: str, out: Path) -> tuple[str, str]:
    run_id = catalog.record_intent(RunIntent(name="live", owner="root", team="vision", tier="normal"))
    script = "#!/bin/bash\n" + textwrap.dedent(body) + "\n"
    result = client.submit(
        script,
        args=[
            "--comment",
            f"hpcplat:{run_id}",
            "--account",
            "vision",
            "--qos",
            "normal",
            f"--output={out}/%j.out",
        ],
    )
    catalog.confirm_submission(run_id, result.job_id)
    return run_id, result.job_id


def until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> float:
    """Seconds until ``condition`` holds (polling the catalog only), or fail."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


@pytest.fixture
def live(catalog: Catalog, slurm: CliBackend) -> Iterator[tuple[LiveReconciler, CountingClient]]:
    counting = CountingClient(slurm)
    reconciler = LiveReconciler(catalog.store, counting, interval_s=1.0)
    stop = threading.Event()
    thread = threading.Thread(target=reconciler.run, args=(stop,), daemon=True)
    thread.start()
    yield reconciler, counting
    stop.set()
    thread.join(timeout=30)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def test_a_finished_job_is_completed_within_seconds_with_slurms_times(
    catalog: Catalog, slurm: CliBackend, live: tuple[LiveReconciler, CountingClient], tmp_path: Path
) -> None:
    run_id, job_id = submit(catalog, slurm, "sleep 4", tmp_path)
    until(lambda: catalog.run(run_id).status is RunStatus.RUNNING, "the run to be RUNNING")
    # Nothing but the reconciler's thread runs: the run follows the job by itself.
    ended = until(lambda: catalog.run(run_id).status is RunStatus.COMPLETED, "the run to be COMPLETED")
    [accounting] = slurm.history([job_id])
    assert accounting.state is JobState.COMPLETED and accounting.end_time is not None
    lag = (datetime.now(UTC) - _utc(accounting.end_time)).total_seconds()  # type: ignore[operator]
    assert lag < 15, f"COMPLETED {lag:.1f} s after Slurm's End ({ended:.1f} s of waiting)"
    details = catalog.details(run_id)
    states = {
        e.reason.split(" -> ", 1)[1].split(" ", 1)[0]: e.at
        for e in details.events
        if e.kind is EventKind.STATE
    }
    assert _utc(states["COMPLETED"]) == _utc(accounting.end_time)
    assert _utc(states["RUNNING"]) == _utc(accounting.start_time)
    [attempt] = details.attempts
    assert _utc(attempt.start) == _utc(accounting.start_time) and _utc(attempt.end) == _utc(
        accounting.end_time
    )


def test_slurm_calls_per_cycle_do_not_grow_with_runs_or_watchers(
    catalog: Catalog, slurm: CliBackend, tmp_path: Path
) -> None:
    counting = CountingClient(slurm)
    reconciler = LiveReconciler(catalog.store, counting, interval_s=1.0)
    reconciler.cycle()
    assert (counting.squeue, counting.sacct) == (0, 0), "nothing tracked: Slurm is not asked"

    def calls_of_one_cycle(readers: int) -> tuple[int, int]:
        stop = threading.Event()

        def follow() -> None:  # a user following their runs: reads the catalog, never Slurm
            while not stop.is_set():
                catalog.list_runs()
                time.sleep(0.01)

        threads = [threading.Thread(target=follow, daemon=True) for _ in range(readers)]
        for thread in threads:
            thread.start()
        before = (counting.squeue, counting.sacct)
        reconciler.cycle()
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        assert reconciler.last_slurm_calls == (counting.squeue - before[0]) + (counting.sacct - before[1])
        return counting.squeue - before[0], counting.sacct - before[1]

    [submit(catalog, slurm, "sleep 120", tmp_path) for _ in range(1)]
    first = calls_of_one_cycle(readers=1)  # the new job: squeue, and sacct for its first state
    assert first[0] == 1 and first[1] <= 1
    steady_one = calls_of_one_cycle(readers=1)
    for _ in range(7):
        submit(catalog, slurm, "sleep 120", tmp_path)
    calls_of_one_cycle(readers=1)  # the 7 new jobs' first states: still one sacct for all of them
    steady_many = calls_of_one_cycle(readers=20)
    assert steady_one[0] == steady_many[0] == 1, "one squeue per cycle, whatever is tracked or watching"
    assert steady_many[1] <= 1
    assert len(catalog.list_runs()) == 8
