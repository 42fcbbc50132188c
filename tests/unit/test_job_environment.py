"""hpcplat.job.environment: the one reader of rank / world size / local rank / node."""

from __future__ import annotations

import pytest

from hpcplat.errors import UsageError
from hpcplat.job import environment
from hpcplat.job.environment import TaskEnv


def test_rank_prefers_the_launchers_variable_over_slurms() -> None:
    assert environment.rank({"RANK": "3", "SLURM_PROCID": "5"}) == 3
    assert environment.rank({"SLURM_PROCID": "5"}) == 5
    assert environment.rank({}) == 0


def test_world_size_prefers_the_launchers_variable_over_slurms() -> None:
    assert environment.world_size({"WORLD_SIZE": "8", "SLURM_NTASKS": "2"}) == 8
    assert environment.world_size({"SLURM_NTASKS": "2"}) == 2
    assert environment.world_size({}) == 1


def test_a_bad_rank_is_a_clear_error_unless_lenient() -> None:
    with pytest.raises(UsageError, match=r"\$RANK is not an integer: 'x'"):
        environment.rank({"RANK": "x", "SLURM_PROCID": "2"})
    # Tracking must never stop the training: it skips the bad value and reads the next source.
    assert environment.rank({"RANK": "x", "SLURM_PROCID": "2"}, strict=False) == 2
    assert environment.rank({"RANK": "x"}, strict=False) == 0


def test_environment_reads_torchrun_variables_first() -> None:
    env = {
        "RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "0",
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "21234",
        "SLURM_PROCID": "3",
    }
    assert environment.environment(env) == TaskEnv(1, 4, 1, 2, 0, "n1", 21234)


def test_environment_falls_back_to_slurm_then_to_one_local_process() -> None:
    slurm = {
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_TASKS_PER_NODE": "2(x2)",
        "SLURM_JOB_ID": "1234",
        "HPCPLAT_MASTER_ADDR": "n1",
    }
    assert environment.environment(slurm) == TaskEnv(3, 4, 1, 2, 1, "n1", 21234)
    assert environment.environment({}) == TaskEnv(0, 1, 0, 1, 0, "127.0.0.1", 29500)


def test_track_and_checkpoint_read_the_rank_here(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcplat import checkpoint

    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert checkpoint.env_rank() == 2 and checkpoint.env_world_size() == 3
    assert checkpoint.env_rank is environment.rank
