"""The shared default sandbox behaves like the cluster the platform is built for.

Every job a test submits is cancelled at teardown; the sandbox itself stays up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hpcplat.runner import run
from hpcplat.sandbox import Sandbox

pytestmark = pytest.mark.sandbox


class Jobs:
    """Submit with sbatch against the sandbox; cancel everything submitted at the end."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.env = sandbox.env()
        self.ids: list[str] = []

    def submit(self, *args: str, wrap: str) -> str:
        out = run(["sbatch", "--parsable", *args, "--wrap", wrap], timeout=30, env=self.env).stdout
        job_id = out.strip().split(";")[0]
        self.ids.append(job_id)
        return job_id

    def show(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict (JobState, Reason, Restarts, ...)."""
        out = run(["scontrol", "show", "job", "-o", job_id], timeout=30, env=self.env, check=False).stdout
        fields: dict[str, str] = {}
        for word in out.split():
            key, sep, value = word.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def wait_for(self, what: str, check: Callable[[], bool], deadline_s: float = 90) -> None:
        deadline = time.monotonic() + deadline_s
        while not check():
            if time.monotonic() > deadline:
                states = {i: (self.show(i).get("JobState"), self.show(i).get("Reason")) for i in self.ids}
                pytest.fail(f"{what}: not within {deadline_s:g} s; jobs: {states}")
            time.sleep(0.3)

    def cancel_all(self) -> None:
        if self.ids:
            run(["scancel", *self.ids], timeout=30, env=self.env, check=False)


@pytest.fixture
def jobs(sandbox: Sandbox) -> Iterator[Jobs]:
    submitted = Jobs(sandbox)
    yield submitted
    submitted.cancel_all()


def test_status_reports_every_daemon_alive_and_every_node_usable(sandbox: Sandbox) -> None:
    status = sandbox.status()
    assert all(d.alive and d.pid for d in status.daemons), status.to_dict()
    assert [n.name for n in status.nodes] == ["n1", "n2", "n3", "n4"]
    states = status.node_states()
    assert all(state.usable for state in states.values()), states  # COMPLETING just after a job, too


def test_up_again_finds_it_running_and_starts_nothing(sandbox: Sandbox) -> None:
    before = {d.name: d.pid for d in sandbox.status().daemons}
    status = sandbox.up()
    assert status.started is False
    assert {d.name: d.pid for d in status.daemons} == before


def test_a_job_asking_for_two_gpus_sees_two_device_ids(jobs: Jobs, tmp_path: Path) -> None:
    out = tmp_path / "cvd.txt"
    job = jobs.submit(
        "--gres=gpu:2", "-o", str(tmp_path / "job.log"), wrap=f"echo $CUDA_VISIBLE_DEVICES > {out}"
    )
    jobs.wait_for("job finished", lambda: jobs.show(job).get("JobState") == "COMPLETED", 60)
    ids = out.read_text().strip().split(",")
    assert len(ids) == 2
    assert len(set(ids)) == 2


def test_a_preemptible_job_is_requeued_for_an_urgent_one_and_runs_again(jobs: Jobs) -> None:
    # Both on the last node, so the rest of the shared sandbox stays free for others.
    low = jobs.submit(
        "-q", "preemptible", "--requeue", "-w", "n4", "--gres=gpu:4", "-o", "/dev/null", wrap="sleep 600"
    )
    jobs.wait_for("preemptible job running", lambda: jobs.show(low).get("JobState") == "RUNNING")
    urgent = jobs.submit("-q", "urgent", "-w", "n4", "--gres=gpu:4", "-o", "/dev/null", wrap="sleep 2")

    def preempted() -> bool:
        info = jobs.show(low)
        return int(info.get("Restarts", "0")) > 0 and info.get("JobState") in ("PENDING", "RUNNING")

    jobs.wait_for("preemptible job requeued", preempted)
    jobs.wait_for("urgent job ran", lambda: jobs.show(urgent).get("JobState") == "COMPLETED")
    jobs.wait_for("preemptible job running again", lambda: jobs.show(low).get("JobState") == "RUNNING")
    history = run(
        ["sacct", "-n", "-P", "-X", "-D", "-j", low, "-o", "State"], timeout=30, env=jobs.env
    ).stdout.split()
    assert "PREEMPTED" in history, history


def test_the_nlp_team_quota_holds_a_third_four_gpu_job(jobs: Jobs) -> None:
    args = ("-A", "nlp", "--gres=gpu:4", "-o", "/dev/null")
    first, second = jobs.submit(*args, wrap="sleep 600"), jobs.submit(*args, wrap="sleep 600")
    jobs.wait_for(
        "two nlp jobs running",
        lambda: all(jobs.show(j).get("JobState") == "RUNNING" for j in (first, second)),
    )
    third = jobs.submit(*args, wrap="sleep 600")
    jobs.wait_for("third job held by the quota", lambda: jobs.show(third).get("Reason") == "AssocGrpGRES", 30)
    assert jobs.show(third)["JobState"] == "PENDING"
