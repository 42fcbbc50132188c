"""The shared watcher against real Slurm: following many jobs costs one squeue per cycle."""

from __future__ import annotations

import pytest

from hpcplat.runner import run
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import Watcher
from tests.fixtures.runner import RecordingRunner

pytestmark = pytest.mark.sandbox


def test_following_many_held_jobs_is_one_squeue_per_cycle(sandbox: Sandbox) -> None:
    counter = RecordingRunner(delegate=run)  # the real runner, counting the Slurm programs called
    client = CliBackend(env=sandbox.env(), runner=counter)
    script = "#!/bin/bash\n#SBATCH --hold\n#SBATCH --output=/dev/null\n#SBATCH --job-name=watch-test\ntrue\n"
    ids = [client.submit(script).job_id for _ in range(30)]
    array = client.submit(script, args=["--array=0-9"]).job_id
    followed = [*ids, *(f"{array}_{i}" for i in range(10))]
    try:
        watcher = Watcher(client, min_interval=0.2, max_interval=1)
        watcher.follow(followed)
        counter.clear()
        for _ in range(3):
            watcher.refresh(force=True)
        assert counter.programs == ["squeue"] * 3
        assert all(watcher.state(j) is JobState.PENDING for j in followed)
    finally:
        client.cancel([*ids, array])
    counter.clear()
    final = watcher.wait(followed, timeout=120)
    assert {info.state for info in final.values() if info} == {JobState.CANCELLED}
    assert counter.programs.count("sacct") <= counter.programs.count("squeue")
    cycles = watcher.stats.cycles
    watcher.refresh(force=True)
    assert watcher.stats.cycles == cycles, "terminal jobs are never asked about again"
