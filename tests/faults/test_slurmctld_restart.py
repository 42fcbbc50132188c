"""slurmctld restarts while jobs run and while a sweep is being submitted.

The sweep is submitted in-process through ``hpcplat.submission.sweep.submit_sweep`` with a Slurm
client that reports ``MaxArraySize=2`` (so 4 points go as 2 arrays) and stops slurmctld (SIGTERM) just before
the second ``sbatch``. Trial 1 starts it again at once (sbatch retries its connection for about
9 s, so the sweep should end fully submitted); trial 2 leaves it down until the sweep gave up (a
clear error, the arrays already queued cancelled or tracked). Either way every array Slurm has must
belong to runs the catalog tracks, and the jobs that were running keep their ids and finish.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from hpcplat.catalog import RunStatus
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.models import SubmitResult
from tests.faults.helpers import (
    REPEATS,
    Events,
    FaultReport,
    Harness,
    PlacedClient,
    fault_report,
    harness,
    kill_daemon,
    restore,
    wait_for,
    workload_command,
)
from tests.faults.workload import reference

__all__ = ["fault_report"]

pytestmark = pytest.mark.sandbox

STEPS = 40
POINTS = (1, 2, 3, 4)
STEP_SLEEP = {True: 0.2, False: 0.75}
"""Seconds per step: the jobs must still run when slurmctld is back (about 7 s after the stop when it
restarts at once, 26 s when it stays down through sbatch's and scancel's retries). A job step that
ends while slurmctld is down is only seen complete about 60 s after it returns (slurmstepd retries
its completion message once a minute), which would cost a minute per trial."""


class RestartingClient(PlacedClient):
    """Reports a small MaxArraySize and stops slurmctld before the second sbatch."""

    def __init__(self, h: Harness, *, restart_at_once: bool) -> None:
        super().__init__(h.env)
        self.sandbox = h.sandbox
        self.restart_at_once = restart_at_once
        self.calls = 0
        self.restarter: threading.Thread | None = None

    def config(self) -> dict[str, str]:
        return {**super().config(), "MaxArraySize": "2"}

    def submit(
        self,
        script: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        test_only: bool = False,
    ) -> SubmitResult:
        self.calls += 1
        if self.calls == 2:
            kill_daemon(self.sandbox, "slurmctld", signal.SIGTERM)
            if self.restart_at_once:
                self.restarter = threading.Thread(target=restore, args=(self.sandbox,))
                self.restarter.start()
        return super().submit(script, args=args, env=env, cwd=cwd, test_only=test_only)


def sweep_arrays_in_slurm(h: Harness, name: str) -> set[str]:
    """Array job ids (the base id) of every job with this name, queued or ended."""
    ids = set()
    out = h.slurm("squeue", "-h", "--states=all", "-n", name, "-o", "%F", check=False).stdout
    ids |= {line.strip() for line in out.splitlines() if line.strip()}
    hist = h.slurm(
        "sacct", "-X", "-n", "-P", "--name", name, "-S", "now-1hours", "-o", "JobID", check=False
    ).stdout
    ids |= {line.split("_")[0].strip() for line in hist.splitlines() if line.strip()}
    return ids


@pytest.mark.parametrize("rep", range(REPEATS))
def test_slurmctld_restart_under_running_jobs_and_a_sweep_submission(
    rep: int, sandbox: Sandbox, tmp_path: Path, fault_report: FaultReport
) -> None:
    from hpcplat.submission.sweep import Distribution, DistributionKind, Sweep, SweepError, submit_sweep

    restart_at_once = rep % 2 == 0
    with fault_report.trial("slurmctld-restart", rep) as trial, harness(sandbox, tmp_path) as h:
        running = []
        for i in range(2):
            events = Events(tmp_path / f"events-{i}.jsonl")
            result = tmp_path / f"result-{i}.json"
            command = workload_command(
                steps=STEPS, events=events.path, result=result, step_sleep=STEP_SLEEP[restart_at_once]
            )
            spec = h.spec(command, name=f"run{i}")
            running.append((h.submit(spec), events, result))
        for _, events, _ in running:
            events.wait("start", timeout=120)

        sweep_name = f"{h.tag}-sweep"
        sweep = Sweep(
            job=h.spec(["sleep", "1"], name="sweep", time_min=5, gpus=0),
            parameters={"x": Distribution(DistributionKind.CHOICE, values=POINTS)},
            name=sweep_name,
        )
        client = RestartingClient(h, restart_at_once=restart_at_once)
        outcome: SweepError | None = None
        record = None
        try:
            record = submit_sweep(sweep, client=client, config=h.config, catalog=h.catalog())
        except SweepError as exc:
            outcome = exc
        finally:
            if client.restarter is not None:
                client.restarter.join(timeout=120)
            restore(sandbox)
            ctld_back = time.time()
            h.job_ids.extend(client.submitted)
        assert client.calls == 2, "the sweep did not reach its second array"

        # The running jobs survived: same ids, not requeued, exact results.
        expected = reference(STEPS)
        for sub, events, result in running:
            assert h.final_state(sub.job_id) == "COMPLETED", h.output(sub.job_id)
            assert json.loads(result.read_text())["final"] == expected[-1]
            restarts = {e["restart"] for e in events.all()}
            trial.count("running jobs kept", expected=1, found=int(restarts == {0}))
            if events.of("done")[0]["t"] < ctld_back:
                trial.note("a job ended while slurmctld was down (Slurm saw it complete up to 60 s later)")

        # The sweep: fully submitted, or a clear error; every array in Slurm tracked by the catalog.
        h.job_ids.extend(sweep_arrays_in_slurm(h, sweep_name))
        catalog = h.catalog()
        catalog.reconcile(h.client)
        sweep_runs = [catalog.details(r.id) for r in catalog.list_runs(limit=None) if r.name == sweep_name]
        assert len(sweep_runs) == len(POINTS), [r.run.name for r in sweep_runs]
        tracked_jobs = {
            a.job_id.split("_")[0]
            for d in sweep_runs
            if d.run.status is not RunStatus.NOT_SUBMITTED
            for a in d.attempts
        }
        in_slurm = sweep_arrays_in_slurm(h, sweep_name)
        orphans = in_slurm - tracked_jobs
        trial.count("sweep arrays tracked", expected=len(in_slurm), found=len(in_slurm - orphans))
        assert not orphans, f"arrays in Slurm the catalog does not track: {orphans}"
        if outcome is None:
            assert record is not None and len(record.arrays) == 2
            assert {a.job_id for a in record.arrays} == in_slurm
            assert all(d.attempts for d in sweep_runs)
            trial.note(f"trial {rep + 1}: slurmctld back at once; the sweep was fully submitted")
        else:
            message = outcome.message
            assert "failed to submit" in message and "Unable to contact slurm controller" in message, message
            queued = sorted(in_slurm)
            for job in queued:
                assert job in message, f"the error does not name array {job} left in Slurm: {message}"
            never = [d for d in sweep_runs if not d.attempts]
            assert all(d.run.status is RunStatus.NOT_SUBMITTED for d in never), [d.run.status for d in never]
            trial.note(f"trial {rep + 1}: slurmctld down past sbatch's retries: {message}")

        def all_settled() -> bool:
            catalog.reconcile(h.client)
            return all(
                catalog.run(d.run.id).status
                in {RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.NOT_SUBMITTED}
                for d in sweep_runs
            )

        h.cancel(*in_slurm)
        wait_for("the sweep's runs to settle in the catalog", all_settled, timeout=90, every=1)
