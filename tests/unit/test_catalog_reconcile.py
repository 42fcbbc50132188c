"""Reconciliation logic against Slurm answers given as records.

``RecordedSlurm`` is not a simulation of Slurm: it returns the JobInfo records each test writes
(what ``squeue``/``sacct`` answered, as the CLI backend parses them) and counts the calls, so the
tests can check the state machine and the "one squeue + one sacct per cycle" rule. The same logic
against the real sandbox cluster is in tests/integration/test_catalog_sandbox.py.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hpcplat.catalog import Catalog, EventKind, RunIntent, RunStatus, pending
from hpcplat.catalog import spool as spool_format
from hpcplat.catalog.reconcile import derive_status, reconcile
from hpcplat.catalog.selfregister import JobEnvironment, register_job
from hpcplat.catalog.store import Store
from hpcplat.catalog.types import utcnow
from hpcplat.errors import SlurmError
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.state import JobState


class RecordedSlurm:
    backend_name = "recorded"

    def __init__(self) -> None:
        self.live: list[JobInfo] = []
        self.history_records: list[JobInfo] = []
        self.calls: list[tuple[str, Any]] = []
        self.sacct_broken = False

    def jobs(self, job_ids: Iterable[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        ids = None if job_ids is None else sorted(job_ids)
        self.calls.append(("jobs", ids))
        return [j for j in self.live if ids is None or j.job_id in ids or j.job_id.split("_")[0] in ids]

    def history(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        user: str | None = None,
        since: datetime | None = None,
        all_attempts: bool = False,
    ) -> list[JobInfo]:
        ids = None if job_ids is None else sorted(job_ids)
        self.calls.append(("history", ids))
        if self.sacct_broken:
            raise SlurmError(
                "sacct failed: Slurm accounting storage is disabled", argv=["sacct"], returncode=1
            )
        return [
            j for j in self.history_records if ids is None or j.job_id in ids or j.job_id.split("_")[0] in ids
        ]


def job(job_id: str, state: JobState, **kw: Any) -> JobInfo:
    return JobInfo(job_id=job_id, name="train", user="alice", state=state, **kw)


T0 = datetime(2026, 3, 1, 10, 0, 0)  # Slurm prints local times without a zone


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog.open(catalog_url) as cat:
        yield cat


def submitted(catalog: Catalog, job_id: str, **intent: Any) -> str:
    run_id = catalog.record_intent(RunIntent(name="train", owner="alice", team="vision", **intent))
    catalog.confirm_submission(run_id, job_id)
    return run_id


def test_queued_running_completed_with_usage(catalog: Catalog) -> None:
    slurm = RecordedSlurm()
    run_id = submitted(catalog, "100")
    slurm.live = [job("100", JobState.PENDING, reason="Priority")]
    catalog.reconcile(slurm)
    assert catalog.run(run_id).status is RunStatus.QUEUED
    slurm.live = [job("100", JobState.RUNNING, nodes="n1", start_time=T0)]
    report = catalog.reconcile(slurm)
    assert report.runs_changed == [(run_id, "QUEUED", "RUNNING")]
    slurm.live = []
    slurm.history_records = [
        job(
            "100",
            JobState.COMPLETED,
            nodes="n1",
            start_time=T0,
            end_time=T0 + timedelta(hours=1),
            exit_code=0,
            elapsed_s=3600,
            tres={"cpu": "8", "gres/gpu": "2"},
        )
    ]
    catalog.reconcile(slurm)
    details = catalog.details(run_id)
    assert details.run.status is RunStatus.COMPLETED
    attempt = details.attempts[0]
    assert (attempt.state, attempt.nodes, attempt.exit_code) == (JobState.COMPLETED, "n1", 0)
    assert attempt.start == T0.astimezone()  # local Slurm time, stored as UTC
    assert details.gpu_hours_allocated == pytest.approx(2.0)
    states = [e.reason for e in details.events if e.kind is EventKind.STATE]
    assert states == ["PENDING -> RUNNING", "RUNNING -> COMPLETED"]
    calls_before = len(slurm.calls)
    report = catalog.reconcile(slurm)  # finished and accounted: never asked about again
    assert len(slurm.calls) == calls_before and report.slurm_queries == 0


def test_requeue_makes_a_new_attempt(catalog: Catalog) -> None:
    slurm = RecordedSlurm()
    run_id = submitted(catalog, "101")
    slurm.history_records = [
        job(
            "101",
            JobState.PREEMPTED,
            restarts=0,
            start_time=T0,
            end_time=T0 + timedelta(minutes=5),
            elapsed_s=300,
        ),
        job("101", JobState.PENDING, restarts=1, reason="BeginTime"),
    ]
    slurm.live = [job("101", JobState.PENDING, reason="BeginTime")]
    catalog.reconcile(slurm)
    details = catalog.details(run_id)
    assert details.run.status is RunStatus.REQUEUED
    assert [(a.restart, a.state) for a in details.attempts] == [
        (0, JobState.PREEMPTED),
        (1, JobState.PENDING),
    ]
    assert any(e.kind is EventKind.PREEMPTED and "attempt 1" in e.reason for e in details.events)
    slurm.history_records[1] = job("101", JobState.RUNNING, restarts=1, nodes="n2", start_time=T0)
    slurm.live = [job("101", JobState.RUNNING, nodes="n2", start_time=T0)]
    catalog.reconcile(slurm)
    details = catalog.details(run_id)
    assert details.run.status is RunStatus.RUNNING
    assert len(details.attempts) == 2 and details.attempts[1].nodes == "n2"


def test_array_tasks_replace_the_placeholder(catalog: Catalog) -> None:
    slurm = RecordedSlurm()
    run_id = submitted(catalog, "200")
    slurm.live = [
        job("200_0", JobState.RUNNING, nodes="n1"),
        job("200_1", JobState.RUNNING, nodes="n2"),
        job("200_[2-3]", JobState.PENDING, reason="Resources"),
    ]
    catalog.reconcile(slurm)
    details = catalog.details(run_id)
    assert sorted(a.job_id for a in details.attempts) == ["200_0", "200_1", "200_2", "200_3"]
    assert details.run.status is RunStatus.RUNNING
    slurm.live = []
    slurm.history_records = [job(f"200_{i}", JobState.COMPLETED, exit_code=0, elapsed_s=10) for i in range(3)]
    slurm.history_records.append(job("200_3", JobState.FAILED, exit_code=1, elapsed_s=10))
    catalog.reconcile(slurm)
    assert catalog.run(run_id).status is RunStatus.FAILED
    catalog.add_event(kind="note", reason="array noted", job_id="200")
    assert any(e.reason == "array noted" for e in catalog.details(run_id).events)


def test_one_squeue_and_one_sacct_for_many_runs(catalog: Catalog) -> None:
    slurm = RecordedSlurm()
    for i in range(5):
        submitted(catalog, str(300 + i))
    slurm.live = [job(str(300 + i), JobState.RUNNING) for i in range(5)]
    report = catalog.reconcile(slurm)
    assert [c[0] for c in slurm.calls] == ["jobs", "history"]
    assert slurm.calls[0][1] == [str(300 + i) for i in range(5)]
    assert report.jobs_checked == 5 and report.slurm_queries == 2


def test_nothing_to_track_means_no_slurm_call(catalog: Catalog) -> None:
    slurm = RecordedSlurm()
    catalog.record_intent(RunIntent(name="fresh", owner="alice", team="vision"))  # SUBMITTING, within grace
    catalog.reconcile(slurm)
    assert slurm.calls == []


def test_stuck_submission_is_attached_by_its_comment(catalog: Catalog) -> None:
    slurm = RecordedSlurm()
    stuck = catalog.record_intent(RunIntent(name="x", owner="alice", team="vision"))
    lost = catalog.record_intent(RunIntent(name="y", owner="alice", team="vision"))
    slurm.live = [job("400", JobState.RUNNING, comment=f"hpcplat:{stuck}"), job("401", JobState.RUNNING)]
    later = utcnow() + timedelta(minutes=10)
    report = catalog.reconcile(slurm, now=later)
    assert slurm.calls[0] == ("jobs", None)  # ids unknown: one listing call
    assert report.attached == [(stuck, "400")]
    assert report.abandoned == [lost]
    assert catalog.run(stuck).status is RunStatus.RUNNING  # the same answers give its state
    assert [a.job_id for a in catalog.details(stuck).attempts] == ["400"]
    lost_run = catalog.run(lost)
    assert lost_run.status is RunStatus.NOT_SUBMITTED
    assert f"no Slurm job has comment hpcplat:{lost}" in lost_run.status_reason
    catalog.reconcile(slurm, now=later)  # the attached job is now followed like any other
    assert catalog.run(stuck).status is RunStatus.RUNNING
    assert [a.job_id for a in catalog.details(stuck).attempts] == ["400"]


def test_stuck_submission_whose_job_left_the_queue_is_found_in_accounting(catalog: Catalog) -> None:
    # The job ran and ended before this reconcile: squeue no longer lists it, only sacct (parsed
    # from output recorded from the sandbox, with its Comment) still knows whose it was.
    recorded = (Path(__file__).resolve().parent.parent / "data" / "slurm" / "sacct_comment.txt").read_text()
    run_ids = tuple(catalog.record_intent(RunIntent(name=n, owner="alice", team="vision")) for n in "xy")
    recorded = recorded.replace("3f2c9a1e-6b7d-4e0a-9c51-2d8e7f4a1b60", run_ids[0])
    recorded = recorded.replace("8a1d4e2f-0c3b-4f6a-b7e9-5d2c1a0f9e34", run_ids[1])
    slurm = RecordedSlurm()
    slurm.history_records = [CliBackend._job_from_sacct(line) for line in recorded.splitlines()]
    report = catalog.reconcile(slurm, now=utcnow() + timedelta(minutes=10))
    assert dict(report.attached) == {run_ids[0]: "24", run_ids[1]: "25"}
    assert report.abandoned == []
    ran, cancelled = catalog.details(run_ids[0]), catalog.details(run_ids[1])
    assert ran.run.status is RunStatus.COMPLETED
    assert [(a.job_id, a.state) for a in ran.attempts] == [("24", JobState.COMPLETED)]
    assert cancelled.run.status is RunStatus.CANCELLED


def test_missing_job_is_reported_not_ended(catalog: Catalog) -> None:
    slurm = RecordedSlurm()
    run_id = submitted(catalog, "500")
    report = catalog.reconcile(slurm)  # both answers empty (a transient glitch, or purged)
    assert report.missing == ["500"]
    assert catalog.run(run_id).status is RunStatus.QUEUED


def test_without_accounting_squeue_still_counts(catalog: Catalog) -> None:
    slurm = RecordedSlurm()
    slurm.sacct_broken = True
    run_id = submitted(catalog, "600")
    slurm.live = [job("600", JobState.RUNNING)]
    report = catalog.reconcile(slurm)
    assert catalog.run(run_id).status is RunStatus.RUNNING
    assert any("accounting (sacct) unavailable" in w for w in report.warnings)


def test_reconcile_ingests_spools_of_tracked_jobs(catalog: Catalog, tmp_path: Path) -> None:
    slurm = RecordedSlurm()
    run_id = submitted(catalog, "700", slurm_request={"job_root": str(tmp_path)})
    path = spool_format.spool_path(tmp_path / "700", run_id)
    spool_format.append(
        path, [{"t": "m", "r": run_id, "a": 0, "pts": [[s, "loss", 1.0, 0.0] for s in range(7)]}]
    )
    slurm.live = [job("700", JobState.RUNNING)]
    report = catalog.reconcile(slurm)
    assert report.spool_points == 7
    assert len(catalog.metric_series(run_id, "loss")) == 7


def test_pending_records_from_the_submission_layer(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPCPLAT_SPOOL_DIR", str(tmp_path / "pending"))
    run_id = catalog.record_intent(RunIntent(name="x", owner="alice", team="vision"))
    record = pending.write_pending(run_id, "800", catalog_url=catalog.url, reason="catalog was down")
    report = catalog.reconcile(RecordedSlurm())
    assert report.attached == [(run_id, "800")]
    assert catalog.run(run_id).status is RunStatus.QUEUED
    assert not record.exists()


def test_pending_records_are_private_to_their_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPCPLAT_SPOOL_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    old_umask = os.umask(0o022)
    try:
        record = pending.write_pending("r" * 36, "800", catalog_url="sqlite:///x", reason="down")
    finally:
        os.umask(old_umask)
    assert record.stat().st_mode & 0o777 == 0o600
    for directory in (tmp_path / "state", tmp_path / "state" / "hpcplat", record.parent):
        assert directory.stat().st_mode & 0o777 == 0o700, directory


def test_submission_layer_writes_the_records_the_catalog_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The format lives in hpcplat.catalog.pending; hpcplat.submission.spool is its old name."""
    from hpcplat.submission import spool as old_name

    monkeypatch.setenv("HPCPLAT_SPOOL_DIR", str(tmp_path / "pending"))
    path = old_name.write_pending("r" * 36, "801", catalog_url="sqlite:///x", reason="down")
    assert [(p, r.job_id) for p, r in pending.pending()] == [(path, "801")]


def test_reconcile_and_selfregister_take_a_store(catalog_url: str) -> None:
    """Reconciliation and self-registration work on the store alone, no Catalog in between."""
    store = Store.open(catalog_url)
    try:
        run_id, created = register_job(store, JobEnvironment(job_id="901", user="alice"), {})
        assert created
        slurm = RecordedSlurm()
        slurm.history_records = [
            JobInfo(job_id="901", name="x", user="alice", state=JobState.COMPLETED, elapsed_s=5)
        ]
        report = reconcile(store, slurm)
        assert report.runs_changed == [(run_id, "RUNNING", "COMPLETED")]
        assert slurm.calls and len(slurm.calls) == 2
    finally:
        store.close()


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([(JobState.PENDING, 0)], RunStatus.QUEUED),
        ([(JobState.PENDING, 1)], RunStatus.REQUEUED),
        ([(JobState.REQUEUE_HOLD, 0)], RunStatus.REQUEUED),
        ([(JobState.RUNNING, 0), (JobState.PENDING, 0)], RunStatus.RUNNING),
        ([(JobState.COMPLETED, 0), (JobState.COMPLETED, 2)], RunStatus.COMPLETED),
        ([(JobState.COMPLETED, 0), (JobState.OUT_OF_MEMORY, 0)], RunStatus.FAILED),
        ([(JobState.CANCELLED, 0), (JobState.COMPLETED, 0)], RunStatus.CANCELLED),
        ([(JobState.TIMEOUT, 0), (JobState.CANCELLED, 0)], RunStatus.FAILED),
        ([(JobState.UNKNOWN, 0)], RunStatus.QUEUED),
    ],
)
def test_derive_status(states: list[tuple[JobState, int]], expected: RunStatus) -> None:
    from hpcplat.catalog.models import Attempt

    attempts = [Attempt(run_id="r", job_id=str(i), restart=r, state=s) for i, (s, r) in enumerate(states)]
    assert derive_status(attempts, RunStatus.QUEUED) is expected


# -- jobs started with plain sbatch -----------------------------------------------------------------


def test_selfregister_is_idempotent_and_follows_requeues(catalog: Catalog) -> None:
    env = {
        "SLURM_JOB_ID": "900",
        "SLURM_JOB_NAME": "plain",
        "SLURM_JOB_USER": "carol",
        "SLURM_JOB_ACCOUNT": "nlp",
        "SLURM_JOB_NODELIST": "n3",
        "SLURM_RESTART_COUNT": "0",
    }
    job_env = JobEnvironment.from_environ(env)
    run_id, created = catalog.register_job(job_env, {"env": {"python_version": "3.11.7"}})
    again, created_again = catalog.register_job(job_env)
    assert created and not created_again and again == run_id
    requeued = JobEnvironment.from_environ({**env, "SLURM_RESTART_COUNT": "1"})
    assert catalog.register_job(requeued) == (run_id, False)
    details = catalog.details(run_id)
    assert (details.run.owner, details.run.team, details.run.status) == ("carol", "nlp", RunStatus.RUNNING)
    assert [(a.job_id, a.restart, a.state) for a in details.attempts] == [
        ("900", 0, JobState.RUNNING),
        ("900", 1, JobState.RUNNING),
    ]
    assert details.env is not None and details.env.python_version == "3.11.7"
    slurm = RecordedSlurm()
    slurm.history_records = [
        job("900", JobState.REQUEUED, restarts=0),
        job("900", JobState.COMPLETED, restarts=1, exit_code=0, elapsed_s=5),
    ]
    catalog.reconcile(slurm)
    assert catalog.run(run_id).status is RunStatus.COMPLETED


def test_selfregister_array_task_and_existing_run(catalog: Catalog) -> None:
    run_id = submitted(catalog, "950")
    env = {
        "SLURM_JOB_ID": "951",
        "SLURM_ARRAY_JOB_ID": "950",
        "SLURM_ARRAY_TASK_ID": "3",
        "HPCPLAT_RUN_ID": run_id,
    }
    assert catalog.register_job(JobEnvironment.from_environ(env)) == (run_id, False)
    assert "950_3" in [a.job_id for a in catalog.details(run_id).attempts]


def test_selfregister_command_prints_the_run_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    env = {
        **os.environ,
        "HPCPLAT_CATALOG_URL": url,
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NAME": "plain",
        "SLURM_SUBMIT_DIR": str(tmp_path),
    }
    env.pop("HPCPLAT_RUN_ID", None)
    argv = [sys.executable, "-m", "hpcplat.catalog.selfregister"]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=True)
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=True)
    run_id = first.stdout.strip()
    assert len(run_id) == 36 and second.stdout.strip() == run_id
    with Catalog.open(url) as catalog:
        details = catalog.details(run_id)
    assert details.run.tags == ["sbatch"]
    assert details.run.owner == getpass.getuser() or details.run.owner == os.environ.get("USER", "")
    assert details.code is not None and details.code.vcs == "none"


def test_selfregister_outside_a_job(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["HPCPLAT_CATALOG_URL"] = f"sqlite:///{tmp_path / 'c.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "hpcplat.catalog.selfregister"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "SLURM_JOB_ID is not set" in result.stderr


def test_a_finished_attempt_does_not_keep_its_queue_reason(catalog: Catalog) -> None:
    slurm = RecordedSlurm()
    run_id = submitted(catalog, "2")
    slurm.live = [job("2", JobState.PENDING, reason="BeginTime")]
    catalog.reconcile(slurm)
    assert catalog.details(run_id).attempts[0].reason == "BeginTime"  # still waiting: kept
    slurm.live = []
    # sacct's own record of a requeued job that then completed still says "BeginTime".
    line = next(r for r in recorded_sacct("sacct_finished_reasons.txt") if r.startswith("2\x1f"))
    assert "\x1fBeginTime\x1f" in line
    slurm.history_records = [CliBackend._job_from_sacct(line)]
    catalog.reconcile(slurm)
    details = catalog.details(run_id)
    assert details.attempts[0].reason == ""
    assert [e.reason for e in details.events if e.kind is EventKind.STATE][-1] == "PENDING -> COMPLETED"


def recorded_sacct(name: str) -> list[str]:
    return (Path(__file__).resolve().parent.parent / "data" / "slurm" / name).read_text().splitlines()
