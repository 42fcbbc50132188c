"""The CLI backend against the real sandbox: one call for many jobs, typed errors, cluster views."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from hpcplat.errors import SlurmError
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState

pytestmark = pytest.mark.sandbox


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[CliBackend]:
    backend = CliBackend(env=sandbox.env())
    submitted: list[str] = []
    backend.submitted = submitted  # type: ignore[attr-defined]
    yield backend
    if submitted:
        backend.cancel(submitted)


def submit(client: CliBackend, script: str, *args: str) -> str:
    job_id = client.submit(script, args=["--output=/dev/null", *args]).job_id
    client.submitted.append(job_id)  # type: ignore[attr-defined]
    return job_id


def wait_for(client: CliBackend, job_id: str, pred: object, deadline_s: float = 30) -> JobState:
    deadline = time.monotonic() + deadline_s
    state = JobState.UNKNOWN
    while time.monotonic() < deadline:
        jobs = client.jobs([job_id]) or client.history([job_id])
        if jobs:
            state = jobs[0].state
            if pred(state):  # type: ignore[operator]
                return state
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {state} after {deadline_s} s")


def test_many_jobs_in_one_squeue_call(client: CliBackend) -> None:
    ids = [submit(client, "#!/bin/bash\ntrue\n", "--hold", f"--job-name=many-{i}") for i in range(5)]
    jobs = client.jobs([*ids, "99999999"])
    assert sorted(j.job_id for j in jobs) == sorted(ids)
    assert all(j.state is JobState.PENDING for j in jobs)
    assert all("held" in j.reason.lower() for j in jobs)


def test_unknown_ids_only_give_an_empty_answer(client: CliBackend) -> None:
    assert client.jobs(["99999998"]) == []


def test_finished_job_in_history_with_exit_code(client: CliBackend) -> None:
    job_id = submit(client, "#!/bin/bash\nexit 7\n")
    assert wait_for(client, job_id, lambda s: s.is_terminal) is JobState.FAILED
    # slurmdbd may lag slurmctld: until it has the job's end, sacct shows a placeholder record
    # ("allocation", PENDING). Poll accounting itself, with a deadline.
    deadline = time.monotonic() + 60
    history = client.history([job_id])
    while not (history and history[0].state.is_terminal) and time.monotonic() < deadline:
        time.sleep(0.5)
        history = client.history([job_id])
    assert history[0].state is JobState.FAILED, history
    assert history[0].exit_code == 7


def test_cancel_and_signal_errors_are_typed(client: CliBackend) -> None:
    with pytest.raises(SlurmError) as info:
        client.cancel(["99999997"])
    assert "99999997" in str(info.value)
    with pytest.raises(SlurmError):
        client.requeue(["99999997"])


def test_cluster_views_match_the_sandbox(client: CliBackend, sandbox: Sandbox) -> None:
    nodes = client.nodes()
    assert len(nodes) >= 1 and all(n.gpus >= 1 for n in nodes)
    parts = {p.name: p for p in client.partitions()}
    assert parts["gpu"].default and parts["gpu"].max_time_minutes == 1440
    assert parts["debug"].max_time_minutes == 30
    assert parts["gpu"].max_gpus_per_node == max(n.gpus for n in nodes)
    qos = {q.name: q for q in client.qos()}
    assert {"urgent", "normal", "preemptible"} <= set(qos)
    assert "preemptible" in qos["urgent"].preempt
    assocs = client.associations(user="root")
    assert {a.account for a in assocs} >= {"vision", "nlp"}
    assert int(client.config()["MaxArraySize"]) > 0


def test_gpu_indices_of_a_running_job(client: CliBackend) -> None:
    job_id = submit(client, "#!/bin/bash\nsleep 60\n", "--gres=gpu:2")
    wait_for(client, job_id, lambda s: s is JobState.RUNNING)
    indices = client.job_gpu_indices(job_id)
    assert len(indices) == 1
    assert len(next(iter(indices.values()))) == 2
