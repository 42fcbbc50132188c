"""Preemption and resume on the real sandbox.

A preemptible 2-node DDP job is preempted by an ``urgent`` job that needs its GPUs, saves on both
ranks, is requeued, resumes from its latest complete checkpoint and ends with the same final loss,
bit for bit, as an uninterrupted run of the same seed. A plain bash job resumes through the
checkpoint command line, and a time-limit warning requeues up to the cap and no further.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcplat import checkpoint
from hpcplat.errors import HpcplatError
from hpcplat.launch import expand_nodelist
from hpcplat.sandbox import Sandbox
from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import Watcher
from hpcplat.spec import Environment, JobSpec, Resources
from hpcplat.submission import facts
from hpcplat.submission.service import Submission, submit

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "examples" / "train_digits.py")


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = dict(sandbox.env())
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HPCPLAT_SPOOL_DIR", str(tmp_path / "spool"))
    facts.forget()
    return values


@pytest.fixture
def submitted(client: CliBackend) -> Iterator[list[str]]:
    """Job ids to cancel at teardown, whatever happened."""
    ids: list[str] = []
    yield ids
    if ids:
        try:
            client.cancel(ids)
        except HpcplatError as exc:  # already finished jobs are fine
            print(f"teardown cancel: {exc}")


def run(spec: JobSpec, client: CliBackend, config: SiteConfig, submitted: list[str]) -> Submission:
    result = submit(spec, client=client, config=config, cwd=str(REPO))
    submitted.append(result.job_id)
    return result


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, describe: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s; {describe()}")
        time.sleep(0.5)


def state_of(client: CliBackend, job_id: str) -> str:
    jobs = client.jobs([job_id])
    return f"job {job_id}: {jobs[0].state.value} {jobs[0].reason}" if jobs else f"job {job_id}: not in squeue"


def preempt(client: CliBackend, job_id: str, tmp_path: Path, submitted: list[str]) -> str:
    """Submit an ``urgent`` job that needs every GPU of the job's first node: Slurm must preempt it."""
    info = client.jobs([job_id])[0]
    node = expand_nodelist(info.nodes)[0]
    result = client.submit(
        "#!/bin/bash\nsleep 2\n",
        args=[
            "--qos=urgent",
            "--partition=gpu",
            "--account=vision",
            f"--nodelist={node}",
            "--gres=gpu:4",
            "--time=1",
            "--job-name=preemptor",
            f"--output={tmp_path / 'preemptor.out'}",
        ],
    )
    submitted.append(result.job_id)
    return result.job_id


def finish(
    client: CliBackend, job_ids: list[str], timeout: float, outputs: tuple[str, ...] = ()
) -> dict[str, JobInfo]:
    """Wait for the jobs; on a timeout the failure shows the tail of each job's output."""
    try:
        records = Watcher(client).wait(job_ids, timeout=timeout)
    except TimeoutError as exc:
        tails = [f"--- {p}:\n" + "\n".join(Path(p).read_text().splitlines()[-15:]) for p in outputs]
        raise AssertionError("\n".join([str(exc), *tails])) from exc
    return {k: v for k, v in records.items() if v is not None}


def latest_step(directory: Path, world_size: int) -> int:
    found = checkpoint.latest(directory, world_size=world_size)
    return found.step if found is not None else -1


def test_preempted_ddp_job_resumes_with_the_same_final_loss(
    client: CliBackend, config: SiteConfig, submitted: list[str], tmp_path: Path
) -> None:
    train = [sys.executable, EXAMPLE, "--epochs", "6", "--checkpoint-every", "10", "--seed", "3"]
    baseline = run(
        JobSpec(
            command=[*train, "--result", str(tmp_path / "baseline.json")],
            name="digits-baseline",
            resources=Resources(nodes=2, time_limit_min=10),
            tier="normal",
            checkpoint_dir=str(tmp_path / "ck-baseline"),
        ),
        client,
        config,
        submitted,
    )
    ckpt = tmp_path / "ck"
    job = run(
        JobSpec(
            command=[*train, "--step-sleep", "0.15", "--result", str(tmp_path / "preempted.json")],
            name="digits-preemptible",
            resources=Resources(nodes=2, gpus_per_node=4, time_limit_min=10),
            tier="preemptible",
            checkpoint_dir=str(ckpt),
        ),
        client,
        config,
        submitted,
    )
    assert "--requeue" in job.script and "--signal=USR1@" in job.script
    wait_for(
        "a complete checkpoint at step >= 20",
        lambda: latest_step(ckpt, 2) >= 20,
        240,
        lambda: state_of(client, job.job_id),
    )
    preemptor = preempt(client, job.job_id, tmp_path, submitted)
    records = finish(
        client,
        [baseline.job_id, job.job_id, preemptor],
        timeout=420,
        outputs=(baseline.output_path, job.output_path),
    )
    log_text = Path(job.output_path).read_text()
    assert records[job.job_id].state is JobState.COMPLETED, log_text
    assert records[baseline.job_id].state is JobState.COMPLETED, Path(baseline.output_path).read_text()

    base = json.loads((tmp_path / "baseline.json").read_text())
    resumed = json.loads((tmp_path / "preempted.json").read_text())
    assert base["resumed_from"] == [] and base["steps"] == resumed["steps"]
    # It was stopped by the signal (not just restarted from a periodic save) on all ranks...
    assert resumed["restart_count"] >= 1
    assert resumed["resumed_from"][0]["saved_on"] == "signal", resumed
    assert "is being preempted: requeued it" in log_text
    assert "rank 1: stopping on SIGTERM after saving step" in log_text
    # ...and ended exactly where the uninterrupted run did.
    assert resumed["final_loss_hex"] == base["final_loss_hex"], (resumed["final_loss"], base["final_loss"])
    # Each task had its own rank on its own node.
    for result in (base, resumed):
        tasks = sorted(result["tasks"], key=lambda t: t["rank"])
        assert [(t["rank"], t["world_size"], t["local_rank"]) for t in tasks] == [(0, 2, 0), (1, 2, 0)]
        assert len({t["node"] for t in tasks}) == 2


BASH_JOB = textwrap.dedent(
    """\
    #!/bin/bash
    # A plain command job: sum 1..STEPS, one step at a time, resumable.
    set -u
    ck() { "$PY" -m hpcplat.checkpoint "$@"; }
    sig=""
    trap 'sig=USR1' USR1
    trap 'sig=TERM' TERM
    step=0; total=0
    if dir=$(ck latest); then
        read -r step total < "$dir/state"
        echo "resumed from step $step (restart ${SLURM_RESTART_COUNT:-0})"
    fi
    while [ "$step" -lt "$STEPS" ]; do
        step=$((step + 1)); total=$((total + step))
        if [ $((step % 10)) -eq 0 ]; then echo "$step" > "$PROGRESS"; fi
        sleep "$STEP_SLEEP"
        if [ -n "$sig" ]; then
            out=$(ck path "$step") && echo "$step $total" > "$out/state" && ck done "$step" > /dev/null
            echo "saved step $step on $sig"
            ck requeue --signal "$sig"
            exit $?
        fi
    done
    echo "$step $total" > "$RESULT"
    """
)


def bash_spec(tmp_path: Path, *, steps: int, sleep: float, **fields: Any) -> JobSpec:
    script = tmp_path / "job.sh"
    script.write_text(BASH_JOB)
    return JobSpec(
        command=["bash", str(script)],
        name="bash-resumable",
        checkpoint_dir=str(tmp_path / "ck"),
        environment=Environment(
            vars={
                "PY": sys.executable,
                "STEPS": str(steps),
                "STEP_SLEEP": str(sleep),
                "RESULT": str(tmp_path / "result"),
                "PROGRESS": str(tmp_path / "progress"),
            }
        ),
        **fields,
    )


def test_plain_bash_job_resumes_after_preemption_through_the_checkpoint_cli(
    client: CliBackend, config: SiteConfig, submitted: list[str], tmp_path: Path
) -> None:
    steps = 150
    spec = bash_spec(
        tmp_path,
        steps=steps,
        sleep=0.1,
        resources=Resources(nodes=1, gpus_per_node=4, time_limit_min=10),
        tier="preemptible",
    )
    job = run(spec, client, config, submitted)
    progress = tmp_path / "progress"
    wait_for(
        "the bash job reaching step 20",
        lambda: progress.exists() and int(progress.read_text() or 0) >= 20,
        240,
        lambda: state_of(client, job.job_id),
    )
    preemptor = preempt(client, job.job_id, tmp_path, submitted)
    records = finish(client, [job.job_id, preemptor], timeout=300)
    log_text = Path(job.output_path).read_text()
    assert records[job.job_id].state is JobState.COMPLETED, log_text
    assert (tmp_path / "result").read_text().split() == [str(steps), str(steps * (steps + 1) // 2)]
    assert "on TERM" in log_text and "is being preempted: requeued it" in log_text
    assert "resumed from step" in log_text and "(restart 1)" in log_text


def test_time_limit_warning_requeues_up_to_the_cap(
    client: CliBackend, config: SiteConfig, submitted: list[str], tmp_path: Path
) -> None:
    # Two minutes of time limit and a warning 110 s before it: slurmctld checks time limits every
    # 30 s and warns up to 30 s early, so USR1 comes at its first check, within ~30 s of each start.
    spec = bash_spec(
        tmp_path,
        steps=100000,
        sleep=0.2,
        resources=Resources(nodes=1, time_limit_min=2),
        tier="preemptible",
        signal_warn_s=110,
        max_requeues=1,
    )
    job = run(spec, client, config, submitted)
    records = finish(client, [job.job_id], timeout=500)
    log_text = Path(job.output_path).read_text()
    assert records[job.job_id].state is not JobState.TIMEOUT, (
        "the USR1 warning never came before the time limit (a slurmctld restart resets its "
        f"time-limit timer):\n{log_text}"
    )
    assert records[job.job_id].state is JobState.FAILED, log_text
    history = wait_for(  # slurmdbd may lag slurmctld with the job's end
        "the job's end in accounting",
        lambda: [h for h in client.history([job.job_id]) if h.state.is_terminal],
        60,
        lambda: str(client.history([job.job_id])),
    )
    assert history[-1].exit_code == checkpoint.EXIT_NOT_REQUEUED, history
    # Warned twice: requeued once (restart 0 < cap 1), then stopped at the cap with its work saved.
    assert log_text.count("on USR1") == 2, log_text
    assert "requeued job" in log_text and "not requeued (requeued 1 time(s) already" in log_text
    assert "resumed from step" in log_text and "(restart 1)" in log_text
    last = checkpoint.latest(tmp_path / "ck", world_size=1)
    assert last is not None
    marker = json.loads((last.path / checkpoint.marker_name(0)).read_text())
    assert marker["restart_count"] == 1 and marker["job_id"] == job.job_id


PLAIN_PROGRAMS = {
    # The README's example: a program that knows nothing of checkpoints and dies of the SIGTERM.
    "dies-of-the-signal": "sleep 15; echo finished",
    # A program that handles SIGTERM its own way and exits 0 within the grace time.
    "exits-0-on-the-signal": "trap 'echo caught TERM; exit 0' TERM; sleep 15 & wait; echo finished",
}


def test_plain_preemptible_jobs_come_back_from_the_start_when_preempted(
    client: CliBackend, config: SiteConfig, submitted: list[str], tmp_path: Path
) -> None:
    """Both programs at once, each holding a whole node, each preempted by an urgent job."""
    jobs: dict[str, tuple[Submission, Path]] = {}
    for program, body in sorted(PLAIN_PROGRAMS.items()):
        marker = tmp_path / f"started-{program}"
        script = f'echo "attempt ${{SLURM_RESTART_COUNT:-0}}" >> {marker}; {body}'
        spec = JobSpec(
            command=["bash", "-c", script],
            name=f"plain-{program}",
            resources=Resources(nodes=1, gpus_per_node=4, time_limit_min=5),
            tier="preemptible",
        )
        jobs[program] = (run(spec, client, config, submitted), marker)
    preemptors = []
    for job, marker in jobs.values():
        wait_for("the plain job to start", marker.exists, 240, lambda j=job: state_of(client, j.job_id))
        preemptors.append(preempt(client, job.job_id, tmp_path, submitted))
    ids = [job.job_id for job, _ in jobs.values()]
    outputs = tuple(job.output_path for job, _ in jobs.values())
    records = finish(client, [*ids, *preemptors], timeout=400, outputs=outputs)
    for program, (job, marker) in jobs.items():
        log_text = Path(job.output_path).read_text()
        assert records[job.job_id].state is JobState.COMPLETED, (program, log_text)
        assert marker.read_text().split() == ["attempt", "0", "attempt", "1"], (program, log_text)
        assert "is being preempted (the program exited with status" in log_text, (program, log_text)
        assert log_text.count("finished") == 1, (program, log_text)
