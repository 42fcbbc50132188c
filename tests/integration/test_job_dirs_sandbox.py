"""On the sandbox: a job refuses a directory another user planted, before its program runs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import Watcher
from hpcplat.spec import JobSpec, Resources
from hpcplat.submission.service import submit
from tests.fixtures.submission import sandbox_config
from tests.fixtures.users import UnixUser

pytestmark = pytest.mark.sandbox


def test_a_job_refuses_a_checkpoint_directory_another_user_planted(
    env: dict[str, str], tmp_path: Path, shared_dir: Path, unix_users: dict[str, UnixUser]
) -> None:
    mallory = unix_users["mallory"]
    planted = shared_dir / "checkpoints"
    assert mallory.run(["mkdir", "-m", "0755", str(planted)]).returncode == 0
    client = CliBackend(env=env)
    config: SiteConfig = sandbox_config(env, tmp_path)
    evidence = tmp_path / "program-ran"
    spec = JobSpec(
        command=("touch", str(evidence)),
        name="planted-checkpoint-dir",
        resources=Resources(time_limit_min=2),
        checkpoint_dir=str(planted),
    )
    job = submit(spec, client=client, config=config, cwd=str(tmp_path))
    final = Watcher(client, min_interval=0.5, max_interval=2).wait([job.job_id], timeout=120)[job.job_id]
    assert final is not None and final.state is JobState.FAILED
    log = Path(job.output_path).read_text()
    assert f"refusing {planted}" in log and "another user's" in log, log
    assert not evidence.exists()
    # The job's own directories are private to the user.
    assert stat.S_IMODE(os.stat(job.job_dir).st_mode) == 0o700
    assert stat.S_IMODE(config.job_root_path().stat().st_mode) == 0o700
