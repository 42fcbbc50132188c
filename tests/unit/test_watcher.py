"""The shared status watcher: one batched call per cycle, back-off, deadlines, cached terminal
states, and no false "finished" from a transient empty squeue answer.

Real Slurm cannot be made to answer empty on demand, so these tests drive the watcher with
``ScriptedSlurm``: a stand-in that returns the records (the same ``JobInfo`` records the CLI backend
parses from squeue/sacct) each test scripts, and counts the calls. The same behaviour against the
real sandbox is in tests/integration/test_watcher_sandbox.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import LOST_REASON, Watcher, _expand


def job(job_id: str, state: JobState, **kw: Any) -> JobInfo:
    return JobInfo(job_id=job_id, name="t", user="u", state=state, **kw)


class ScriptedSlurm:
    """Answers squeue (``jobs``) and sacct (``history``) from scripted tables; counts calls."""

    backend_name = "scripted"

    def __init__(self) -> None:
        self.queue: dict[str, JobInfo] = {}
        self.accounting: dict[str, JobInfo] = {}
        self.jobs_calls: list[list[str]] = []
        self.history_calls: list[list[str]] = []
        self.before_jobs: Callable[[], None] | None = None

    def jobs(self, job_ids: Iterable[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        ids = list(job_ids or [])
        self.jobs_calls.append(ids)
        if self.before_jobs:
            self.before_jobs()
        return [r for r in self.queue.values() if r.job_id.split("_")[0] in ids or r.job_id in ids]

    def history(self, job_ids: Iterable[str] | None = None, **_: Any) -> list[JobInfo]:
        ids = list(job_ids or [])
        self.history_calls.append(ids)
        return [r for r in self.accounting.values() if r.job_id.split("_")[0] in ids or r.job_id in ids]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def watcher(slurm: ScriptedSlurm, clock: Clock | None = None, **kw: Any) -> Watcher:
    clock = clock or Clock()
    return Watcher(slurm, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def test_one_squeue_call_per_cycle_for_all_jobs() -> None:
    slurm = ScriptedSlurm()
    ids = [str(i) for i in range(100, 1100)]
    slurm.queue = {i: job(i, JobState.PENDING) for i in ids}
    w = watcher(slurm)
    w.follow(ids)
    assert w.refresh()
    assert len(slurm.jobs_calls) == 1 and len(slurm.jobs_calls[0]) == 1000
    assert slurm.history_calls == []
    assert all(w.state(i) is JobState.PENDING for i in ids)


def test_sacct_only_for_jobs_squeue_no_longer_lists_and_terminal_states_are_cached() -> None:
    slurm = ScriptedSlurm()
    slurm.queue = {"1": job("1", JobState.RUNNING), "2": job("2", JobState.RUNNING)}
    clock = Clock()
    w = watcher(slurm, clock)
    w.follow(["1", "2"])
    w.refresh()
    del slurm.queue["2"]
    slurm.accounting["2"] = job("2", JobState.COMPLETED, exit_code=0)
    w.refresh(force=True)
    assert slurm.history_calls == [["2"]]
    assert w.done("2") and w.info("2").exit_code == 0  # type: ignore[union-attr]
    w.refresh(force=True)
    assert slurm.jobs_calls[-1] == ["1"]  # job 2 is never asked about again
    assert len(slurm.history_calls) == 1


def test_transient_empty_squeue_is_not_taken_as_finished() -> None:
    slurm = ScriptedSlurm()
    slurm.queue = {"7": job("7", JobState.RUNNING)}
    w = watcher(slurm, lost_after=3)
    w.follow(["7"])
    w.refresh()
    running = slurm.queue.pop("7")
    slurm.accounting["7"] = running  # sacct still says RUNNING
    w.refresh(force=True)
    assert not w.done("7") and w.state("7") is JobState.RUNNING
    slurm.accounting.clear()  # and now not even sacct answers (accounting lag)
    w.refresh(force=True)
    w.refresh(force=True)
    assert not w.done("7"), "two empty answers must not end a job"
    slurm.queue["7"] = running  # squeue answers again
    w.refresh(force=True)
    assert not w.done("7") and w.state("7") is JobState.RUNNING


def test_a_job_nobody_knows_is_reported_lost_after_several_cycles() -> None:
    slurm = ScriptedSlurm()
    w = watcher(slurm, lost_after=3)
    w.follow(["99"])
    for _ in range(2):
        w.refresh(force=True)
        assert not w.done("99")
    w.refresh(force=True)
    assert w.done("99")
    info = w.info("99")
    assert info is not None and info.state is JobState.UNKNOWN and info.reason == LOST_REASON


def test_preempted_is_not_terminal() -> None:
    slurm = ScriptedSlurm()
    slurm.queue = {"5": job("5", JobState.PREEMPTED)}
    w = watcher(slurm)
    w.follow(["5"])
    w.refresh()
    assert not w.done("5")


def test_back_off_doubles_to_the_cap_and_new_jobs_reset_it() -> None:
    slurm = ScriptedSlurm()
    slurm.queue = {"1": job("1", JobState.PENDING)}
    clock = Clock()
    w = watcher(slurm, clock, min_interval=1, max_interval=8)
    w.follow(["1"])
    gaps = []
    last = None
    while len(slurm.jobs_calls) < 7:
        if w.refresh():
            if last is not None:
                gaps.append(clock.now - last)
            last = clock.now
        clock.sleep(0.25)
    assert gaps == [1, 2, 4, 8, 8, 8]
    slurm.queue["2"] = job("2", JobState.PENDING)
    w.follow(["2"])
    assert w.interval == 1


def test_wait_returns_final_records_and_reports_progress() -> None:
    slurm = ScriptedSlurm()
    slurm.queue = {"1": job("1", JobState.RUNNING), "2": job("2", JobState.PENDING)}
    clock = Clock()
    w = watcher(slurm, clock)
    seen: list[dict[str, Any]] = []

    def finish_later() -> None:
        if len(slurm.jobs_calls) == 3:
            slurm.queue = {"1": job("1", JobState.COMPLETED), "2": job("2", JobState.FAILED, exit_code=2)}

    slurm.before_jobs = finish_later
    final = w.wait(["1", "2"], on_cycle=lambda snap: seen.append(dict(snap)))
    assert final["1"].state is JobState.COMPLETED  # type: ignore[union-attr]
    assert final["2"].state is JobState.FAILED  # type: ignore[union-attr]
    assert len(seen) == 3 and len(slurm.jobs_calls) == 3


def test_wait_timeout_names_the_jobs_still_going() -> None:
    slurm = ScriptedSlurm()
    slurm.queue = {"1": job("1", JobState.RUNNING)}
    w = watcher(slurm)
    with pytest.raises(TimeoutError, match=r"1 \(RUNNING\)"):
        w.wait(["1"], timeout=5)


def test_each_call_has_a_deadline() -> None:
    slurm = ScriptedSlurm()
    release = threading.Event()
    slurm.before_jobs = lambda: release.wait(5)
    w = Watcher(slurm, call_deadline=0.2)  # type: ignore[arg-type]
    w.follow(["1"])
    started = time.monotonic()
    assert w.refresh()
    took = time.monotonic() - started
    release.set()
    assert took < 4, "the watcher must not wait for a hung call"
    assert w.last_error is not None and "did not answer" in str(w.last_error)
    assert w.stats.errors == 1 and not w.done("1")


def test_many_threads_share_one_cycle() -> None:
    slurm = ScriptedSlurm()
    slurm.queue = {str(i): job(str(i), JobState.RUNNING) for i in range(50)}
    w = Watcher(slurm, min_interval=60, max_interval=60)  # type: ignore[arg-type]
    barrier = threading.Barrier(20)

    def poll(i: int) -> None:
        barrier.wait()
        for k in range(i, 50, 20):
            w.poll(str(k))

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 50 polls from 20 threads inside one interval: one squeue call, not one per job or thread.
    assert len(slurm.jobs_calls) == 1


def test_shared_is_one_per_process() -> None:
    Watcher.reset_shared()
    try:
        slurm = ScriptedSlurm()
        got: list[Watcher] = []
        threads = [threading.Thread(target=lambda: got.append(Watcher.shared(slurm))) for _ in range(10)]  # type: ignore[arg-type]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(w) for w in got}) == 1
    finally:
        Watcher.reset_shared()


def test_array_records_expand_and_arrays_aggregate() -> None:
    records = _expand([job("12_[3-5%2]", JobState.PENDING), job("12_1", JobState.RUNNING)])
    assert sorted(records) == ["12_1", "12_3", "12_4", "12_5"]
    slurm = ScriptedSlurm()
    slurm.queue = {"12_1": job("12_1", JobState.RUNNING), "12_2": job("12_2", JobState.COMPLETED)}
    w = watcher(slurm)
    w.follow(["12", "12_2"])
    w.refresh()
    assert slurm.jobs_calls == [["12"]]  # array tasks are asked for through their array
    assert w.state("12") is JobState.RUNNING and w.done("12_2")


def test_follow_refuses_what_is_not_a_job_id() -> None:
    with pytest.raises(ValueError, match="not a Slurm job id"):
        watcher(ScriptedSlurm()).follow(["12; rm -rf /"])
