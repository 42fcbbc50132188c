"""The CLI backend's parsers, fed with output recorded from the real sandbox (tests/data/slurm/).

The runner of ``replay`` (``tests/fixtures/runner.py``) answers with those files and records
every call, so a test can also assert how many Slurm commands a query costs. It is not a fake
Slurm: it replays Slurm's own words.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcplat.errors import SlurmError, UsageError
from hpcplat.slurm.cli_backend import CliBackend, parse_key_values, parse_minutes, parse_tres
from hpcplat.slurm.client import get_client
from hpcplat.slurm.parse import gres_gpu_count as count_gres_gpus
from hpcplat.slurm.parse import parse_gpu_indices
from hpcplat.slurm.state import JobState, NodeState
from tests.fixtures.runner import RecordingRunner

DATA = Path(__file__).resolve().parent.parent / "data" / "slurm"


def replay(answers: dict[str, str]) -> RecordingRunner:
    """Answers each Slurm command with Slurm's recorded words; any other command fails the test."""
    return RecordingRunner(answers, default=None)


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def test_jobs_from_recorded_squeue_is_one_call() -> None:
    runner = replay({"squeue": recorded("squeue.txt")})
    jobs = CliBackend(runner=runner).jobs(["39", "40", "41", "42", "43"])
    assert len(runner.calls) == 1
    assert "--jobs=39,40,41,42,43" in runner.calls[0]
    by_id = {j.job_id: j for j in jobs}
    assert by_id["39"].state is JobState.COMPLETED
    assert by_id["40"].state is JobState.FAILED and by_id["40"].reason == "NonZeroExitCode"
    assert by_id["41"].state is JobState.CANCELLED
    assert by_id["42_2"].state is JobState.PENDING and by_id["42_2"].reason == "JobArrayTaskLimit"
    assert by_id["42_0"].state is JobState.RUNNING and by_id["42_0"].nodes == "n1"
    # A job name holding the old favourite separator "|" survives intact.
    assert by_id["43"].name == "rec gpu|x"
    assert by_id["43"].gpus == 2
    assert by_id["43"].start_time is not None and by_id["42_2"].start_time is None


def test_history_from_recorded_sacct() -> None:
    runner = replay({"sacct": recorded("sacct.txt")})
    jobs = CliBackend(runner=runner).history(["39", "40", "41", "42", "43"])
    assert len(runner.calls) == 1
    by_id = {j.job_id: j for j in jobs}
    assert by_id["40"].exit_code == 3 and by_id["40"].state.is_failure
    assert by_id["41"].state is JobState.CANCELLED  # "CANCELLED by 0"
    assert by_id["41"].elapsed_s == 3
    assert by_id["43"].tres["gres/gpu"] == "2"
    pending = by_id["42_[2-5%2]"]
    assert pending.nodes == "" and pending.state is JobState.PENDING


RUN_DDP = "3f2c9a1e-6b7d-4e0a-9c51-2d8e7f4a1b60"
RUN_HELD = "8a1d4e2f-0c3b-4f6a-b7e9-5d2c1a0f9e34"


def test_history_asks_accounting_for_the_comment_that_names_the_run() -> None:
    # Recorded after the jobs had left squeue: only accounting still knows which run each one was.
    runner = replay({"sacct": recorded("sacct_comment.txt")})
    by_id = {j.job_id: j for j in CliBackend(runner=runner).history(["24", "25"])}
    fields = next(a for a in runner.calls[0] if a.startswith("--format="))
    assert "Comment" in fields.split("=", 1)[1].split(",")
    assert by_id["24"].comment == f"hpcplat:{RUN_DDP}"
    assert by_id["25"].comment == f"hpcplat:{RUN_HELD}"
    # Output recorded before Comment was asked for still parses, without one.
    old = {j.job_id: j for j in CliBackend(runner=replay({"sacct": recorded("sacct.txt")})).history()}
    assert old["43"].comment == "" and old["43"].gpus == 2


def test_show_finds_the_run_of_a_job_only_accounting_knows() -> None:
    from hpcplat.cli.common import find_jobs, info_dict

    # squeue has forgotten the job (an empty answer); sacct's record names its run.
    runner = replay({"squeue": "", "sacct": recorded("sacct_comment.txt")})
    data = info_dict(find_jobs(CliBackend(runner=runner), ["24"])["24"])
    assert [c[0] for c in runner.calls] == ["squeue", "sacct"]
    assert data["run_id"] == RUN_DDP and data["state"] == "COMPLETED"
    assert (data["gpus"], data["gpus_per_node"], data["num_nodes"]) == (4, 2, 2)


def test_gpus_are_the_whole_jobs_in_queue_and_in_accounting() -> None:
    # rec-ddp: 2 nodes x 2 GPUs (squeue's %b says gres:gpu:2, per node; sacct's AllocTRES 4, total).
    # rec-held: 2 nodes x 1 GPU, cancelled before it started (no AllocTRES; its ReqTRES counts).
    queued = {
        j.job_id: j for j in CliBackend(runner=replay({"squeue": recorded("squeue_multinode.txt")})).jobs()
    }
    ended = {
        j.job_id: j for j in CliBackend(runner=replay({"sacct": recorded("sacct_comment.txt")})).history()
    }
    assert "gres:gpu:2" in recorded("squeue_multinode.txt")
    assert queued["24"].state is JobState.RUNNING and ended["24"].state is JobState.COMPLETED
    assert queued["24"].gpus == ended["24"].gpus == 4
    assert queued["24"].gpus_per_node == ended["24"].gpus_per_node == 2
    assert queued["25"].state is JobState.PENDING and ended["25"].state is JobState.CANCELLED
    assert queued["25"].gpus == ended["25"].gpus == 2
    assert queued["25"].gpus_per_node == ended["25"].gpus_per_node == 1


def test_finished_jobs_from_recorded_sacct_drop_stale_queue_reasons() -> None:
    runner = replay({"sacct": recorded("sacct_finished_reasons.txt")})
    by_id = {j.job_id: j for j in CliBackend(runner=runner).history()}
    assert "BeginTime" in recorded("sacct_finished_reasons.txt")
    # Each ran and ended; the reason sacct kept is the one it once waited for.
    for job_id in ("2", "23_0", "41", "141_2", "191_0"):
        assert by_id[job_id].state.is_terminal and by_id[job_id].nodes, job_id
        assert by_id[job_id].reason == "", job_id
    # Cancelled while waiting: the queue reason is why it never ran.
    assert (by_id["127"].state, by_id["127"].reason) == (JobState.CANCELLED, "BeginTime")
    assert (by_id["175"].state, by_id["175"].reason) == (JobState.CANCELLED, "AssocGrpGRES")


def test_nodes_from_recorded_scontrol() -> None:
    runner = replay({"scontrol -o show": recorded("scontrol_show_node.txt")})
    nodes = CliBackend(runner=runner).nodes()
    assert [n.name for n in nodes] == ["n1", "n2", "n3", "n4"]
    assert all(n.gpus == 4 and n.cpus == 4 for n in nodes)
    assert nodes[0].address == "127.0.1.1"
    assert nodes[0].status.state in {NodeState.MIXED, NodeState.IDLE, NodeState.ALLOCATED}
    assert nodes[0].partitions == ("gpu", "debug")


def test_gpu_indices_from_recorded_job() -> None:
    assert parse_gpu_indices(recorded("scontrol_show_job_d.txt")) == {"n2": [0, 1]}


def test_gpu_indices_of_multi_node_job() -> None:
    text = (
        "     Nodes=n[1-2] CPU_IDs=0 Mem=0 GRES=gpu:2(IDX:1,3)\n"
        "     Nodes=n4 CPU_IDs=0-1 Mem=0 GRES=gpu:4(IDX:0-3)\n"
    )
    assert parse_gpu_indices(text) == {"n1": [1, 3], "n2": [1, 3], "n4": [0, 1, 2, 3]}


def test_submit_parses_parsable_output_and_passes_script_on_stdin() -> None:
    runner = replay({"sbatch": "1234;hpcsb\n"})
    result = CliBackend(runner=runner).submit("#!/bin/bash\ntrue\n", args=["--hold"])
    assert result.job_id == "1234" and result.cluster == "hpcsb"
    [call] = runner.requests
    assert call.input == "#!/bin/bash\ntrue\n"
    assert call.argv == ("sbatch", "--parsable", "--hold")
    assert call.error is SlurmError


def test_submit_without_job_id_is_an_error() -> None:
    with pytest.raises(SlurmError, match="no job id"):
        CliBackend(runner=replay({"sbatch": "something odd\n"})).submit("#!/bin/bash\n")


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("1-00:00:00", 1440),
        ("30:00", 30),
        ("00:30:00", 30),
        ("45", 45),
        ("UNLIMITED", None),
        ("2:00:30", 121),
    ],
)
def test_parse_minutes(text: str, minutes: int | None) -> None:
    assert parse_minutes(text) == minutes


def test_parse_tres_both_spellings() -> None:
    assert parse_tres("cpu=4,mem=8G,gres/gpu=2") == {"cpu": "4", "mem": "8G", "gres/gpu": "2"}
    assert parse_tres("gres:gpu:2") == {"gres/gpu": "2"}
    assert parse_tres("gres/gpu:a100:4") == {"gres/gpu": "4"}
    assert parse_tres("N/A") == {}


def test_count_gres_gpus() -> None:
    assert count_gres_gpus("gpu:4") == 4
    assert count_gres_gpus("gpu:a100:4(S:0-1),shard:8") == 4
    assert count_gres_gpus("(null)") == 0


def test_key_values_keep_reason_with_spaces() -> None:
    kv = parse_key_values(
        "NodeName=n1 State=IDLE+DRAIN Reason=hpcplat-agent: gpu 2 missing [root@2026-11-23T17:00:00]",
        trailing="Reason",
    )
    assert kv["State"] == "IDLE+DRAIN"
    assert kv["Reason"].startswith("hpcplat-agent: gpu 2 missing")


def test_key_values_of_a_job_record_keep_every_field() -> None:
    kv = parse_key_values(
        "JobId=5 JobName=x JobState=RUNNING Reason=None Dependency=(null) Requeue=1 BatchFlag=1"
    )
    assert kv["Reason"] == "None" and kv["Requeue"] == "1" and kv["BatchFlag"] == "1"


@pytest.mark.parametrize("value", ["slurmrest", "CLI", "py-slurm"])
def test_an_unknown_backend_is_refused_naming_the_allowed_ones(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPCPLAT_SLURM_BACKEND", value)
    with pytest.raises(UsageError) as info:
        get_client()
    assert f"HPCPLAT_SLURM_BACKEND={value!r}" in str(info.value)
    assert "auto, cli, pyslurm" in str(info.value)
    with pytest.raises(UsageError, match="backend 'rest'"):
        get_client(backend="rest")


def test_an_unknown_backend_stops_a_command_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hpcplat.cli.main import main

    monkeypatch.setenv("HPCPLAT_SLURM_BACKEND", "slurmrest")
    with pytest.raises(SystemExit) as info:
        main(["jobs"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown Slurm backend" in err and "Traceback" not in err


def test_cli_and_an_empty_setting_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCPLAT_SLURM_BACKEND", "cli")
    assert isinstance(get_client(), CliBackend)
    monkeypatch.setenv("HPCPLAT_SLURM_BACKEND", "")  # empty: chosen automatically, as when unset
    get_client()
