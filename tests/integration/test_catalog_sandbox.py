"""The catalog against the real local Slurm sandbox: reconciliation, requeues, stuck submissions,
self-registration and tracking inside real jobs, and a rerun that reproduces a run bit for bit.

Each test uses its own SQLite catalog in tmp_path (never the sandbox's shared catalog) and cancels
the jobs it submitted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hpcplat.catalog import Catalog, RunIntent, RunStatus
from hpcplat.catalog.types import utcnow
from hpcplat.runner import run
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from tests.fixtures.submission import invoke

pytestmark = pytest.mark.sandbox

DEADLINE_S = 120.0


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


def wait_for(condition: Callable[[], bool], what: str, catalog: Catalog, client: CliBackend) -> None:
    deadline = time.monotonic() + DEADLINE_S
    delay = 0.5
    while True:
        catalog.reconcile(client)
        if condition():
            return
        if time.monotonic() > deadline:
            states = [(r.id[:8], r.status.value) for r in catalog.list_runs()]
            raise AssertionError(f"timed out after {DEADLINE_S:g} s waiting for {what}; runs: {states}")
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)


def script(body: str, *options: str) -> str:
    lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in options), textwrap.dedent(body)]
    return "\n".join(lines) + "\n"


def submit(
    catalog: Catalog, client: CliBackend, body: str, *options: str, confirm: bool = True
) -> tuple[str, str]:
    run_id = catalog.record_intent(RunIntent(name="it", owner="root", team="vision", tier="normal"))
    result = client.submit(
        script(body, *options),
        args=["--comment", f"hpcplat:{run_id}", "--account", "vision", "--qos", "normal"],
    )
    if confirm:
        catalog.confirm_submission(run_id, result.job_id)
    return run_id, result.job_id


def test_reconcile_follows_a_real_job_to_its_accounting(
    catalog: Catalog, slurm: CliBackend, tmp_path: Path
) -> None:
    run_id, job_id = submit(catalog, slurm, "sleep 2", "--gres=gpu:2", f"--output={tmp_path}/%j.out")
    wait_for(lambda: catalog.run(run_id).status is RunStatus.COMPLETED, "the job to complete", catalog, slurm)
    details = catalog.details(run_id)
    [attempt] = details.attempts
    assert (attempt.job_id, attempt.state, attempt.exit_code) == (job_id, JobState.COMPLETED, 0)
    assert attempt.nodes.startswith("n") and attempt.start is not None and attempt.end is not None
    wait_for(lambda: bool(catalog.details(run_id).usage), "accounting", catalog, slurm)
    [usage] = catalog.details(run_id).usage
    assert usage.gpus == 2 and usage.elapsed_s >= 1
    assert usage.gpu_hours == pytest.approx(2 * usage.elapsed_s / 3600)


def test_requeue_is_a_new_attempt(catalog: Catalog, slurm: CliBackend, tmp_path: Path) -> None:
    run_id, job_id = submit(catalog, slurm, "sleep 300", "--requeue", f"--output={tmp_path}/%j.out")
    wait_for(lambda: catalog.run(run_id).status is RunStatus.RUNNING, "the job to run", catalog, slurm)
    slurm.requeue([job_id])
    wait_for(lambda: len(catalog.details(run_id).attempts) == 2, "the second attempt", catalog, slurm)
    details = catalog.details(run_id)
    assert [a.restart for a in details.attempts] == [0, 1]
    assert details.attempts[0].state.is_terminal or details.attempts[0].state in (
        JobState.REQUEUED,
        JobState.PREEMPTED,
    )
    assert details.run.status in (RunStatus.REQUEUED, RunStatus.RUNNING)
    assert any(e.kind.value in ("REQUEUED", "PREEMPTED") for e in details.events)


def test_stuck_submission_is_found_by_its_comment(
    catalog: Catalog, slurm: CliBackend, tmp_path: Path
) -> None:
    run_id, job_id = submit(catalog, slurm, "sleep 30", f"--output={tmp_path}/%j.out", confirm=False)
    report = catalog.reconcile(slurm, now=utcnow() + timedelta(minutes=10))
    assert (run_id, job_id) in report.attached
    assert [a.job_id for a in catalog.details(run_id).attempts] == [job_id]


def test_a_job_that_ran_and_left_the_queue_is_found_by_its_comment_in_accounting(
    catalog: Catalog, slurm: CliBackend, sandbox: Any, tmp_path: Path
) -> None:
    # The submitting process recorded the intent, sbatch queued the job (2 nodes x 2 GPUs), and the
    # process died before confirming it. The job runs, ends and leaves squeue's listing of live jobs
    # before anyone reconciles: only accounting (sacct's Comment) still says whose it was.
    env = dict(sandbox.env())
    run_id, job_id = submit(
        catalog,
        slurm,
        "sleep 15",
        "--nodes=2",
        "--gpus-per-node=2",
        f"--output={tmp_path}/%j.out",
        confirm=False,
    )

    def cli(*args: str) -> Any:
        result = invoke(list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            assert time.monotonic() < deadline, f"timed out after {DEADLINE_S:g} s waiting for {what}"
            time.sleep(0.5)

    until(lambda: [j.state for j in slurm.jobs([job_id])] == [JobState.RUNNING], "the job to run")
    running = json.loads(cli("show", job_id, "--json"))
    [listed] = [r for r in json.loads(cli("jobs", "--json")) if r["job_id"] == job_id]
    # GPUs are the whole job's, the same number queued/running as in accounting below.
    assert (running["gpus"], running["gpus_per_node"], listed["gpus"]) == (4, 2, 4)

    until(
        lambda: (
            [h.state for h in slurm.history([job_id])] == [JobState.COMPLETED]
            and job_id not in {j.job_id for j in slurm.jobs()}
        ),
        "the job to end and leave the queue",
    )
    report = catalog.reconcile(slurm, now=utcnow() + timedelta(minutes=10))
    assert (run_id, job_id) in report.attached and run_id not in report.abandoned
    details = catalog.details(run_id)
    assert details.run.status is RunStatus.COMPLETED
    assert [(a.job_id, a.state) for a in details.attempts] == [(job_id, JobState.COMPLETED)]

    [ended] = [r for r in json.loads(cli("jobs", "--history", "1h", "--json")) if r["job_id"] == job_id]
    assert (ended["run_id"], ended["state"], ended["gpus"], ended["gpus_per_node"]) == (
        run_id,
        "COMPLETED",
        4,
        2,
    )
    lines = cli("jobs", "--history", "1h").splitlines()
    [row] = [line for line in lines if line.split()[0] == job_id]
    assert "TOTAL_GPUS" in lines[0].split() and row.split()[-1] == run_id[:8]
    shown = json.loads(cli("show", job_id, "--json"))
    assert (shown["run_id"], shown["gpus"], shown["gpus_per_node"]) == (run_id, 4, 2)


def test_plain_sbatch_job_registers_itself_and_tracks(
    catalog: Catalog, slurm: CliBackend, tmp_path: Path
) -> None:
    job_dir = tmp_path / "jobdir"
    body = f"""
        export HPCPLAT_CATALOG_URL={catalog.url}
        export HPCPLAT_JOB_DIR={job_dir}
        export HPCPLAT_RUN_ID=$({sys.executable} -m hpcplat.catalog.selfregister) || exit 3
        {sys.executable} - <<'EOF'
        from hpcplat import track
        track.log_params(kind="plain")
        for step in range(100):
            track.log_metric(step=step, loss=1.0 / (step + 1))
        EOF
        echo "$HPCPLAT_RUN_ID" > {tmp_path}/run_id
    """
    result = slurm.submit(
        script(body, f"--output={tmp_path}/out.txt", "--job-name=plain"), args=["-A", "vision"]
    )
    marker = tmp_path / "run_id"
    deadline = time.monotonic() + DEADLINE_S
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert marker.exists(), (
        (tmp_path / "out.txt").read_text() if (tmp_path / "out.txt").exists() else "no output"
    )
    run_id = marker.read_text().strip()
    wait_for(
        lambda: catalog.run(run_id).status is RunStatus.COMPLETED, "the plain job to complete", catalog, slurm
    )
    details = catalog.details(run_id)
    assert [a.job_id for a in details.attempts] == [result.job_id]
    assert details.run.name == "plain" and details.run.tags == ["sbatch"]
    assert details.params == {"kind": "plain"}
    assert [(m.name, m.count) for m in details.metrics] == [("loss", 100)]


TRAIN = """\
import random
from hpcplat import track

random.seed(1234)
w, b = 0.0, 0.0
data = [(x / 10.0, 3.0 * x / 10.0 + 0.5 + random.gauss(0, 0.01)) for x in range(50)]
track.log_params(seed=1234, lr=0.05)
for step in range(200):
    gw = gb = 0.0
    for x, y in data:
        err = w * x + b - y
        gw += 2 * err * x / len(data)
        gb += 2 * err / len(data)
    w -= 0.05 * gw
    b -= 0.05 * gb
    loss = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
    track.log_metric(step=step, loss=loss, w=w)
"""


def test_rerun_reproduces_a_deterministic_cpu_run_bit_for_bit(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    submission = pytest.importorskip("hpcplat.submission")
    from click.testing import CliRunner

    from hpcplat.cli.main import cli
    from hpcplat.siteconfig import load as load_config
    from hpcplat.spec import JobSpec

    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "train.py").write_text(TRAIN)
    git_env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "train"]):
        run(["git", "-C", str(repo), *argv], timeout=30, env=git_env)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    site = tmp_path / "site.toml"
    text = re.sub(
        r"(?m)^url = .*$", f'url = "{url}"', Path(sandbox.env()["HPCPLAT_CONFIG"]).read_text(), count=1
    )
    job_root = f'job_root = "{tmp_path / "jobs"}"'
    if re.search(r"(?m)^job_root = ", text):
        text = re.sub(r"(?m)^job_root = .*$", job_root, text)
    else:
        text += f"\n[submission]\n{job_root}\n"
    site.write_text(text)
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HPCPLAT_CONFIG", str(site))
    monkeypatch.delenv("HPCPLAT_CATALOG_URL", raising=False)
    monkeypatch.chdir(repo)
    config = load_config()
    assert config.catalog_url == url
    spec = JobSpec(command=(sys.executable, "train.py"), name="linreg", workdir=str(repo))
    first = submission.submit(spec, config=dataclasses.replace(config))
    with Catalog.open(url) as catalog:
        client = CliBackend(env=sandbox.env())
        try:
            wait_for(lambda: catalog.run(first.run_id).status.is_terminal, "the first run", catalog, client)
        finally:
            client.cancel([first.job_id])
        assert catalog.run(first.run_id).status is RunStatus.COMPLETED
    result = CliRunner().invoke(cli, ["rerun", first.run_id[:8], "--wait", "--timeout", str(DEADLINE_S)])
    assert result.exit_code == 0, result.output
    assert "metrics agree bit-exactly with the original run" in result.output
    assert "loss: bit-exact over 200 steps" in result.output
    with Catalog.open(url) as catalog:
        [rerun] = [r for r in catalog.list_runs() if r.id != first.run_id]
        assert catalog.run(rerun.id).rerun_of == first.run_id
    assert os.environ["HPCPLAT_CONFIG"] == str(site)
