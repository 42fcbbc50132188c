"""The one Slurm parsing layer (``hpcplat.slurm.parse``) on every form, and the callers routed
through it. Recorded output lives in ``tests/data/slurm/``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from hpcplat.errors import CommandNotFound, HpcplatError
from hpcplat.job.checkpoint.requeue import is_being_preempted, job_record
from hpcplat.job.environment import first_host
from hpcplat.runner import CommandResult
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.parse import (
    COMMENT_PREFIX,
    expand_hostlist,
    gpu_indices,
    gres_gpu_count,
    parse_gpu_indices,
    parse_show_job,
    parse_show_jobs,
    run_comment,
    run_id_from_comment,
    tres_gpu_count,
)
from node_agent.slurm_view import parse_job_detail

DATA = Path(__file__).resolve().parent.parent / "data" / "slurm"
HOSTILE = (DATA / "scontrol_show_job_d_hostile.txt").read_text()
"""Recorded from the sandbox: a 2-node job named ``x JobState=COMPLETED Partition=evil
PreemptTime=2020-01-01T00:00:00 | a=b``, comment ``hpcplat:r-1 x=y``, output in a directory with
a space."""
HOSTILE_NAME = "x JobState=COMPLETED Partition=evil PreemptTime=2020-01-01T00:00:00 | a=b"


def _runner(stdout: str, seen: list[list[str]] | None = None):  # type: ignore[no-untyped-def]
    def runner(argv: Sequence[str], **_: object) -> CommandResult:
        if seen is not None:
            seen.append(list(argv))
        return CommandResult(tuple(argv), 0, stdout, "", 0.0)

    return runner


# -- host lists ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("n1", ["n1"]),
        ("n[1-3,5]", ["n1", "n2", "n3", "n5"]),
        ("gpu[01-04]", ["gpu01", "gpu02", "gpu03", "gpu04"]),
        ("a[1-2]b[3-4]", ["a1b3", "a1b4", "a2b3", "a2b4"]),
        ("gpu[01-02,7],cpu5", ["gpu01", "gpu02", "gpu7", "cpu5"]),
        ("n[1-3],gpu7", ["n1", "n2", "n3", "gpu7"]),
        ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("/dev/nvidia[0-1]", ["/dev/nvidia0", "/dev/nvidia1"]),
        ("n[1-03]", ["n1", "n2", "n3"]),  # the width is lo's
        ("n[010-012]", ["n010", "n011", "n012"]),
        ("n[1,01]", ["n1", "n01"]),
        ("n1,,n2", ["n1", "n2"]),
        ("n1 n2", ["n1", "n2"]),
        ("[1-2]", ["1", "2"]),
        ("", []),
        ("(null)", []),
        ("None assigned", []),
    ],
)
def test_host_lists_expand_as_scontrol_show_hostnames_does(text: str, names: list[str]) -> None:
    assert expand_hostlist(text) == names


@pytest.mark.parametrize(
    "text",
    [
        "n[3-1]",  # backwards (the old launch fallback gave [])
        "n[]",
        "n[1-",  # the old launch fallback gave ["n"]
        "n[a]",  # the old launch fallback and CLI backend gave ["na"]
        "n[1-2]]",
        "n[[1]]",
        "n[1-2]x",  # text after the last bracket: Slurm refuses it
        "n[ 1-2]",
        "n[1-2-3]",
        "n[0-70000]",  # Slurm: too many hosts in range
        "a[0-999]b[0-999]",
    ],
)
def test_bad_host_lists_are_refused_with_one_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid Slurm host list .* \(expected names and ranges such as "):
        expand_hostlist(text)


def test_the_fallback_of_first_host_refuses_a_bad_list_as_an_hpcplat_error() -> None:
    def missing(argv: Sequence[str], **_: object) -> CommandResult:
        raise CommandNotFound("scontrol not found", argv=list(argv), returncode=127)

    assert first_host("gpu[07-08]", runner=missing) == "gpu07"
    with pytest.raises(HpcplatError, match="invalid Slurm host list 'n\\[3-1\\]'"):
        first_host("n[3-1]", runner=missing)


# -- scontrol show job --------------------------------------------------------------------------


def test_recorded_job_with_a_hostile_name_and_spaces_in_paths() -> None:
    record = parse_show_job(HOSTILE)
    assert record["JobName"] == HOSTILE_NAME
    assert record["JobState"] == "RUNNING" and record["Partition"] == "gpu"
    assert record["PreemptTime"] == "None"
    assert record["Comment"] == "hpcplat:r-1 x=y"
    assert record["StdOut"] == record["StdErr"] == "/home/alice/my project/out 302.txt"
    assert record["WorkDir"] == "/home/alice/my project"
    assert record["NodeList"] == "n[1-2]" and record["TRES"] == "cpu=2,node=2,billing=2,gres/gpu=4"
    assert record["AllocNode:Sid"] == "localhost:17357" and record["Power"] == ""
    assert "Nodes" not in record  # the -d detail line is the GPU parser's


def test_the_old_one_line_split_read_fields_from_the_job_name() -> None:
    """What ``job_record`` did (``scontrol show job -o``, split on blanks): the name's
    ``JobState=COMPLETED`` came first, so a preempted job looked finished."""
    one_line = (DATA / "scontrol_o_show_job_d_hostile.txt").read_text()
    old = {}
    for token in one_line.split():
        key, sep, value = token.partition("=")
        if sep and key not in old:
            old[key] = value
    assert old["JobState"] == "COMPLETED" and old["Partition"] == "evil"


def test_job_record_in_the_job_reads_the_multi_line_form() -> None:
    seen: list[list[str]] = []
    preempting = HOSTILE.replace("PreemptTime=None", "PreemptTime=2026-12-02T06:20:00")
    record = job_record("302", runner=_runner(preempting, seen))
    assert seen == [["scontrol", "show", "job", "302"]]
    assert record["JobState"] == "RUNNING" and record["JobName"] == HOSTILE_NAME
    assert is_being_preempted(record)


def test_backend_job_details_and_paths_read_the_multi_line_form() -> None:
    backend = CliBackend(runner=_runner(HOSTILE))  # type: ignore[arg-type]
    details = backend.job_details("302")
    assert details["JobState"] == "RUNNING" and details["JobName"] == HOSTILE_NAME
    assert backend.job_paths("302") == {
        "WorkDir": "/home/alice/my project",
        "StdOut": "/home/alice/my project/out 302.txt",
        "StdErr": "/home/alice/my project/out 302.txt",
        "StdIn": "/dev/null",
    }
    assert backend.job_gpu_indices("302") == {"n1": [0, 1], "n2": [0, 1]}


def test_agent_job_detail_of_the_hostile_job() -> None:
    job = parse_job_detail(HOSTILE)
    assert job.name == HOSTILE_NAME and job.partition == "gpu"
    assert job.nodes == ("n1", "n2") and job.gpus_by_node == {"n1": (0, 1), "n2": (0, 1)}
    assert job.gpu_count == 4 and job.run_id == "r-1 x=y"


def test_a_newline_in_a_job_name_does_not_start_a_record() -> None:
    """Recorded: ``sbatch -J $'nl\\nJobId=9 x'`` prints the newline as it is."""
    text = (
        "JobId=303 JobName=nl\nJobId=9 x\n"
        "   UserId=root(0) GroupId=root(0)\n   JobState=PENDING Reason=None\n"
    )
    records = parse_show_jobs(text)
    assert len(records) == 1
    assert records[0]["JobId"] == "303" and records[0]["JobName"] == "nl\nJobId=9 x"
    assert records[0]["JobState"] == "PENDING"


def test_every_record_of_an_array() -> None:
    text = (
        "JobId=46 ArrayJobId=42 ArrayTaskId=2 JobName=rec-array\n   JobState=RUNNING Reason=None\n\n"
        "JobId=47 ArrayJobId=42 ArrayTaskId=3 JobName=rec-array\n   JobState=PENDING Reason=Resources\n\n"
    )
    records = parse_show_jobs(text)
    assert [(r["JobId"], r["ArrayTaskId"], r["JobState"]) for r in records] == [
        ("46", "2", "RUNNING"),
        ("47", "3", "PENDING"),
    ]
    assert parse_show_job("") == {}


# -- GPUs ---------------------------------------------------------------------------------------


def test_gpu_indices_of_every_gres_form() -> None:
    assert gpu_indices("gpu:2(IDX:0-1)") == (0, 1)
    assert gpu_indices("gpu:a100:2(IDX:0,2)") == (0, 2)
    assert gpu_indices("gpu:a100:1(IDX:0),gpu:v100:2(IDX:2-3)") == (0, 2, 3)
    assert gpu_indices("gpu:2(IDX:N/A)") is None
    assert gpu_indices("shard:2(2/4,0/4)") == ()
    text = (
        "     Nodes=n[1-2] CPU_IDs=0 Mem=0 GRES=gpu:2(IDX:1,3)\n"
        "     Nodes=n4 CPU_IDs=0-1 Mem=0 GRES=gpu:4(IDX:0-3)\n"
    )
    assert parse_gpu_indices(text) == {"n1": [1, 3], "n2": [1, 3], "n4": [0, 1, 2, 3]}


def test_gpu_counts_of_gres_and_tres() -> None:
    assert gres_gpu_count("gpu:4") == 4
    assert gres_gpu_count("gpu:a100:4(S:0-1),shard:8") == 4
    assert gres_gpu_count("gpu:a100:2,gpu:v100:1") == 3
    assert gres_gpu_count("(null)") == 0
    assert tres_gpu_count("cpu=1,node=1,billing=1,gres/gpu=2") == 2
    assert tres_gpu_count("cpu=1") == 0


# -- the run comment ----------------------------------------------------------------------------


def test_run_comment_round_trip() -> None:
    assert run_comment("r-1") == COMMENT_PREFIX + "r-1" == "hpcplat:r-1"
    assert run_id_from_comment(" hpcplat:r-1 ") == "r-1"
    assert run_id_from_comment("hpcplat:") is None
    assert run_id_from_comment("other") is None and run_id_from_comment(None) is None
