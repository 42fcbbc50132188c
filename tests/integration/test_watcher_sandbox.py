"""The shared watcher against real Slurm: following many jobs costs one squeue per cycle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from hpcplat.errors import CommandError
from hpcplat.runner import CommandResult, run
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import Watcher

pytestmark = pytest.mark.sandbox


class CountingRunner:
    """The real runner, counting which Slurm programs were called."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = True,
        error: type[CommandError] = CommandError,
    ) -> CommandResult:
        self.calls.append(argv[0])
        return run(argv, timeout=timeout, input=input, env=env, cwd=cwd, check=check, error=error)


def test_following_many_held_jobs_is_one_squeue_per_cycle(sandbox: Sandbox) -> None:
    counter = CountingRunner()
    client = CliBackend(env=sandbox.env(), runner=counter)
    script = "#!/bin/bash\n#SBATCH --hold\n#SBATCH --output=/dev/null\n#SBATCH --job-name=watch-test\ntrue\n"
    ids = [client.submit(script).job_id for _ in range(30)]
    array = client.submit(script, args=["--array=0-9"]).job_id
    followed = [*ids, *(f"{array}_{i}" for i in range(10))]
    try:
        watcher = Watcher(client, min_interval=0.2, max_interval=1)
        watcher.follow(followed)
        counter.calls.clear()
        for _ in range(3):
            watcher.refresh(force=True)
        assert counter.calls == ["squeue"] * 3
        assert all(watcher.state(j) is JobState.PENDING for j in followed)
    finally:
        client.cancel([*ids, array])
    counter.calls.clear()
    final = watcher.wait(followed, timeout=120)
    assert {info.state for info in final.values() if info} == {JobState.CANCELLED}
    assert counter.calls.count("sacct") <= counter.calls.count("squeue")
    cycles = watcher.stats.cycles
    watcher.refresh(force=True)
    assert watcher.stats.cycles == cycles, "terminal jobs are never asked about again"
