"""Job/node state and job id parsing, on the spellings Slurm really prints."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcplat.slurm.state import (
    JobState,
    NodeState,
    parse_job_id,
    parse_job_reason,
    parse_job_state,
    parse_node_state,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RUNNING", JobState.RUNNING),
        ("PENDING", JobState.PENDING),
        ("CANCELLED by 0", JobState.CANCELLED),
        ("CANCELLED+", JobState.CANCELLED),
        ("CANCELL+", JobState.CANCELLED),
        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
        ("OUT_OF_ME+", JobState.OUT_OF_MEMORY),
        ("PREEMPTED", JobState.PREEMPTED),
        ("NODE_FAIL", JobState.NODE_FAIL),
        ("REQUEUED", JobState.REQUEUED),
        ("completed", JobState.COMPLETED),
        ("  TIMEOUT ", JobState.TIMEOUT),
    ],
)
def test_parse_job_state_dialects(text: str, expected: JobState) -> None:
    assert parse_job_state(text) is expected


def test_unknown_state_is_unknown_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_job_state("WIBBLING") is JobState.UNKNOWN
    assert "WIBBLING" in caplog.text


def test_preempted_is_not_terminal_and_cancelled_is_a_failure() -> None:
    # submitit counted a preempted job as finished until its #1788.
    assert not JobState.PREEMPTED.is_terminal
    assert JobState.PREEMPTED.is_active
    assert JobState.CANCELLED.is_terminal and JobState.CANCELLED.is_failure
    assert JobState.COMPLETED.is_terminal and not JobState.COMPLETED.is_failure
    assert JobState.OUT_OF_MEMORY.is_failure
    assert not JobState.UNKNOWN.is_terminal and not JobState.UNKNOWN.is_active


@given(st.text(max_size=40))
def test_parse_job_state_never_raises(text: str) -> None:
    assert isinstance(parse_job_state(text), JobState)


@pytest.mark.parametrize(
    ("text", "state", "flags"),
    [
        ("idle", NodeState.IDLE, set()),
        ("mixed*", NodeState.MIXED, {"NOT_RESPONDING"}),
        ("IDLE+DRAIN", NodeState.DRAINED, {"DRAIN"}),
        ("MIXED+DRAIN", NodeState.DRAINING, {"DRAIN"}),
        ("drained", NodeState.DRAINED, set()),
        ("down*", NodeState.DOWN, {"NOT_RESPONDING"}),
        ("ALLOCATED+COMPLETING", NodeState.ALLOCATED, {"COMPLETING"}),
        ("idle~", NodeState.IDLE, {"POWERED_DOWN"}),
    ],
)
def test_parse_node_state(text: str, state: NodeState, flags: set[str]) -> None:
    status = parse_node_state(text)
    assert status.state is state
    assert status.flags == frozenset(flags)


def test_drain_flag_is_reported() -> None:
    assert parse_node_state("IDLE+DRAIN").drained_or_draining
    assert not parse_node_state("IDLE").drained_or_draining


@pytest.mark.parametrize(
    ("text", "job", "task", "pending", "step"),
    [
        ("123", 123, None, None, None),
        ("123_4", 123, 4, None, None),
        ("12_[3-5%2]", 12, None, "3-5%2", None),
        ("12_[1,4-6]", 12, None, "1,4-6", None),
        ("77.batch", 77, None, None, "batch"),
        ("77.0", 77, None, None, "0"),
        ("77_3.extern", 77, 3, None, "extern"),
    ],
)
def test_parse_job_id(text: str, job: int, task: int | None, pending: str | None, step: str | None) -> None:
    parsed = parse_job_id(text)
    assert (parsed.job, parsed.array_task, parsed.array_pending, parsed.step) == (job, task, pending, step)
    assert str(parsed) == text


def test_array_range_expands_pending_tasks() -> None:
    assert parse_job_id("12_[3-5%2]").array_range == [3, 4, 5]
    assert parse_job_id("12_[1,4-6]").array_range == [1, 4, 5, 6]
    assert parse_job_id("12_[0-8:4]").array_range == [0, 4, 8]
    assert parse_job_id("12_7").array_range == [7]


@pytest.mark.parametrize("bad", ["", "abc", "12_", "12_[x]", "12 13", "-1"])
def test_parse_job_id_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm job id"):
        parse_job_id(bad)


@pytest.mark.parametrize(
    ("state", "reason", "has_nodes", "kept"),
    [
        (JobState.FAILED, "NonZeroExitCode", True, "NonZeroExitCode"),
        (JobState.TIMEOUT, "TimeLimit", True, "TimeLimit"),
        (JobState.NODE_FAIL, "NodeDown", True, "NodeDown"),
        (JobState.RUNNING, "None", True, ""),
        (JobState.COMPLETED, "(null)", True, ""),
        (JobState.COMPLETED, "BeginTime", True, ""),
        (JobState.COMPLETED, "JobArrayTaskLimit", True, ""),
        (JobState.CANCELLED, "QOSMaxGRESPerUser", True, ""),
        (JobState.CANCELLED, "AssocGrpGRES", False, "AssocGrpGRES"),  # never ran: why
        (JobState.PENDING, "AssocGrpGRES", False, "AssocGrpGRES"),
        (JobState.PENDING, "BeginTime", False, "BeginTime"),
    ],
)
def test_parse_job_reason(state: JobState, reason: str, has_nodes: bool, kept: str) -> None:
    assert parse_job_reason(reason, state, has_nodes=has_nodes) == kept
