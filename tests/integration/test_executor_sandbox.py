"""hpcplat.Executor against the real sandbox: submit, map_array, batch, result, cancel."""

from __future__ import annotations

import operator
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from submitit.core.utils import FailedJobError, UncompletedJobError

from hpcplat.executor import Executor, Job
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import Watcher
from hpcplat.submission import facts
from tests.fixtures.submission import sandbox_config

pytestmark = pytest.mark.sandbox


def rank_and_world() -> tuple[int, int]:
    from hpcplat import distributed

    env = distributed.environment()
    return env.rank, env.world_size


def fail(message: str) -> None:
    raise ValueError(message)


@pytest.fixture
def executor(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Executor]:
    env = dict(sandbox.env())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    facts.forget()
    client = CliBackend(env=env)
    Job.watcher.use(Watcher(client, max_interval=2.0))
    ex = Executor(tmp_path / "logs", cluster="slurm", client=client, config=sandbox_config(env, tmp_path))
    ex.update_parameters(timeout_min=5, tier="normal")
    jobs: list[Any] = []
    ex.created = jobs  # type: ignore[attr-defined]
    yield ex
    ids = sorted({j.job_id.split("_")[0] for j in jobs})
    if ids:
        client.cancel(ids)
    Job.watcher.use(None)


def test_submit_returns_the_result_and_the_state(executor: Executor) -> None:
    job = executor.submit(operator.add, 2, 40)
    executor.created.append(job)  # type: ignore[attr-defined]
    assert isinstance(job, Job) and job.run_id
    assert job.result() == 42
    assert job.done() and job.state in {"COMPLETED", "RUNNING", "COMPLETING"}
    assert "hpcplat: run" in (job.stderr() or "")  # the job's one log


def test_map_array_is_one_array_with_a_concurrency_limit(executor: Executor) -> None:
    executor.update_parameters(slurm_array_parallelism=2)
    jobs = executor.map_array(operator.mul, [1, 2, 3, 4], [10, 20, 30, 40])
    executor.created.extend(jobs)  # type: ignore[attr-defined]
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1
    assert [j.job_id.split("_")[1] for j in jobs] == ["0", "1", "2", "3"]
    assert [j.result() for j in jobs] == [10, 40, 90, 160]


def test_batch_submits_one_array_at_the_end(executor: Executor) -> None:
    with executor.batch():
        jobs = [executor.submit(operator.pow, 2, k) for k in range(3)]
    executor.created.extend(jobs)  # type: ignore[attr-defined]
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1
    assert [j.result() for j in jobs] == [1, 2, 4]


def test_a_multi_node_job_runs_the_callable_on_every_task(executor: Executor) -> None:
    executor.update_parameters(nodes=2, tasks_per_node=1)
    job = executor.submit(rank_and_world)
    executor.created.append(job)  # type: ignore[attr-defined]
    assert job.results() == [(0, 2), (1, 2)]


def test_a_failing_function_raises_with_its_traceback(executor: Executor) -> None:
    job = executor.submit(fail, "bad input 17")
    executor.created.append(job)  # type: ignore[attr-defined]
    with pytest.raises(FailedJobError, match="bad input 17"):
        job.result()


def test_a_failed_job_names_its_real_log(executor: Executor) -> None:
    """The message points to the job's one log (``<job_root>/<id>.out``), which holds the traceback,
    and its advice works."""
    job = executor.submit(fail, "bad input 23")
    executor.created.append(job)  # type: ignore[attr-defined]
    with pytest.raises(FailedJobError) as info:
        job.result()
    message = str(info.value)
    named = [Path(word) for word in message.split() if word.endswith(".out")]
    assert named, message
    for path in named:
        assert path.is_file(), f"the message names {path}, which does not exist:\n{message}"
        log = path.read_text()
        assert "Traceback" in log and "ValueError: bad input 23" in log
    assert "_log.err" not in message and "_log.out" not in message
    # the advice in the message is runnable as written
    assert "job.stderr()" in message
    assert "bad input 23" in (job.stderr() or "")
    assert "bad input 23" in (job.stdout() or "")


def test_cancel_ends_the_job(executor: Executor) -> None:
    job = executor.submit(time.sleep, 300)
    executor.created.append(job)  # type: ignore[attr-defined]
    job.cancel()
    deadline = time.monotonic() + 120
    while not job.done():
        assert time.monotonic() < deadline, f"job {job.job_id} still {job.state} after cancel"
        time.sleep(0.5)
    assert job.status is JobState.CANCELLED
    with pytest.raises(UncompletedJobError):
        job.result()


def test_the_submitit_switch_example_runs(
    executor: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/submitit_switch.py as written (site configuration from $HPCPLAT_CONFIG)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "submitit_switch.py"
    spec = importlib.util.spec_from_file_location("submitit_switch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("HPCPLAT_CATALOG_URL", f"sqlite:///{tmp_path / 'example-catalog.db'}")
    assert module.main(["--folder", str(tmp_path / "switch" / "%j"), "--tier", "normal"]) == 0
    out = capsys.readouterr().out
    assert "loss 0.739" in out and "best lr 0.3" in out and "batch: [" in out
