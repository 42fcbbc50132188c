"""hpcplat.checkpoint: atomic per-rank shards, completeness, pruning, signals, requeue decisions."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from hpcplat import checkpoint
from hpcplat.checkpoint import Checkpointer, CheckpointWriteError, Format, StopReason
from hpcplat.errors import HpcplatError, SlurmError, UsageError
from hpcplat.job.checkpoint import signals
from tests.fixtures.runner import RecordingRunner

DISABLED = "Requested operation is presently disabled"
"""What scontrol says when Slurm refuses a requeue."""


@pytest.fixture(autouse=True)
def _fresh_stop_state() -> Iterator[None]:
    checkpoint.clear_stop()
    yield
    checkpoint.clear_stop()


def make(tmp_path: Path, rank: int = 0, world: int = 1, **kw: object) -> Checkpointer:
    return Checkpointer(tmp_path / "ck", rank=rank, world_size=world, handle_signals=False, **kw)  # type: ignore[arg-type]


def test_save_then_load_latest_round_trips_each_format(tmp_path: Path) -> None:
    cp = make(tmp_path, keep=None)
    cp.save({"w": [1.5, 2.5], "step": 1}, 1, format="pickle")
    cp.save({"w": [3.0], "step": 2}, 2, format="json")
    restored = cp.load_latest()
    assert restored is not None
    assert restored.step == 2 and restored.state == {"w": [3.0], "step": 2}
    assert restored.checkpoint.format is Format.JSON
    assert json.loads((tmp_path / "ck/step-000000000002/rank-00000.done.json").read_text())["world_size"] == 1


def test_torch_format_saves_tensors_and_rng_state(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    cp = make(tmp_path)
    state = {"w": torch.arange(4.0), "rng": torch.get_rng_state(), "opt": {"momentum": [torch.ones(2)]}}
    saved = cp.save(state, 7)
    assert saved.format is Format.TORCH and saved.shard.name == "rank-00000.pt"
    restored = cp.load_latest()
    assert restored is not None
    assert torch.equal(restored.state["w"], state["w"]) and torch.equal(restored.state["rng"], state["rng"])


def test_nothing_saved_means_none(tmp_path: Path) -> None:
    assert make(tmp_path).load_latest() is None


def test_a_step_is_complete_only_when_every_rank_finished_it(tmp_path: Path) -> None:
    r0, r1 = make(tmp_path, 0, 2), make(tmp_path, 1, 2)
    r0.save({"rank": 0}, 10, format="pickle")
    r1.save({"rank": 1}, 10, format="pickle")
    r0.save({"rank": 0}, 20, format="pickle")  # rank 1 "crashed" before saving step 20
    latest0, latest1 = r0.latest(), r1.latest()
    assert latest0 is not None and latest1 is not None
    assert latest0.step == latest1.step == 10
    restored = r1.load_latest()
    assert restored is not None and restored.state == {"rank": 1}
    assert [(s.step, s.complete) for s in checkpoint.scan(tmp_path / "ck")] == [(10, True), (20, False)]


class Exploding:
    """Pickling it writes part of the file and then fails: a crash in the middle of a save."""

    def __reduce__(self) -> tuple[object, ...]:
        raise OSError("disk full")


def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint_latest(tmp_path: Path) -> None:
    cp = make(tmp_path)
    cp.save({"ok": 1}, 1, format="pickle")
    with pytest.raises(CheckpointWriteError, match=r"disk full.*step 1 is still the latest complete one"):
        cp.save({"big": list(range(10000)), "bad": Exploding()}, 2, format="pickle")
    restored = cp.load_latest()
    assert restored is not None and restored.step == 1
    step2 = tmp_path / "ck/step-000000000002"
    assert sorted(p.name for p in step2.iterdir()) == []  # no temp file, no marker, no shard


def test_saving_a_step_again_replaces_it_without_a_stale_marker_window(tmp_path: Path) -> None:
    cp = make(tmp_path)
    cp.save({"v": 1}, 5, format="pickle")
    cp.save({"v": 2}, 5, format="json")  # format changed: the old shard goes away
    names = sorted(p.name for p in (tmp_path / "ck/step-000000000005").iterdir())
    assert names == ["rank-00000.done.json", "rank-00000.json"]
    restored = cp.load_latest()
    assert restored is not None and restored.state == {"v": 2}


def test_prune_keeps_the_newest_complete_steps_and_never_a_newer_incomplete_one(tmp_path: Path) -> None:
    r0, r1 = make(tmp_path, 0, 2, keep=2), make(tmp_path, 1, 2, keep=2)
    for step in (1, 2, 3):
        r0.save({"s": step}, step, format="pickle")
        r1.save({"s": step}, step, format="pickle")
    r0.save({"s": 4}, 4, format="pickle")  # rank 1 still writing step 4
    steps = {s.step: s.complete for s in checkpoint.scan(tmp_path / "ck")}
    assert steps == {2: True, 3: True, 4: False}
    assert not (tmp_path / "ck/step-000000000001").exists()


def test_prune_removes_only_the_callers_own_files(tmp_path: Path) -> None:
    r0, r1 = make(tmp_path, 0, 2, keep=1), make(tmp_path, 1, 2, keep=1)
    r0.save({}, 1, format="pickle")
    r1.save({}, 1, format="pickle")
    r0.save({}, 2, format="pickle")
    r1.save({}, 2, format="pickle")  # step 2 complete: rank 1 drops its step-1 files only
    left = sorted(p.name for p in (tmp_path / "ck/step-000000000001").iterdir())
    assert left == ["rank-00000.done.json", "rank-00000.pkl"]
    r0.save({}, 3, format="pickle")
    r1.save({}, 3, format="pickle")
    assert not (tmp_path / "ck/step-000000000001").exists()


def test_resuming_with_another_world_size_is_refused(tmp_path: Path) -> None:
    make(tmp_path, 0, 1).save({}, 3, format="pickle")
    with pytest.raises(HpcplatError, match="written by 1 rank"):
        make(tmp_path, 0, 2).latest()


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="rank 2 is not within a world of 2"):
        make(tmp_path, 2, 2)
    with pytest.raises(UsageError, match="keep must be at least 1"):
        make(tmp_path, keep=0)
    with pytest.raises(UsageError, match="unknown checkpoint format 'yaml'"):
        make(tmp_path).save({}, 1, format="yaml")
    with pytest.raises(UsageError, match="step must be >= 0"):
        make(tmp_path).save({}, -1)


def test_directory_defaults_to_the_job_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(checkpoint.ENV_DIR, raising=False)
    with pytest.raises(UsageError, match="HPCPLAT_CHECKPOINT_DIR is not set"):
        Checkpointer(handle_signals=False)
    monkeypatch.setenv(checkpoint.ENV_DIR, str(tmp_path / "from-env"))
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cp = Checkpointer(handle_signals=False)
    assert (cp.dir, cp.rank, cp.world_size) == (tmp_path / "from-env", 1, 4)


def test_callbacks_run_once_at_the_step_boundary_not_in_the_handler(tmp_path: Path) -> None:
    cp = make(tmp_path)
    seen: list[str] = []
    checkpoint.on_signal(lambda: seen.append("flushed"))
    assert not cp.should_stop and seen == []
    signals._handle(signal.SIGUSR1, None)  # what the signal does: only the flag
    assert seen == [] and cp.stop_reason is StopReason.WARNING
    assert cp.should_stop and cp.should_stop
    assert seen == ["flushed"]
    signals._handle(signal.SIGTERM, None)  # preemption after a warning wins
    assert cp.stop_reason is StopReason.PREEMPTED
    signals._callbacks.clear()


def test_signals_set_the_flag_in_a_real_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from hpcplat.checkpoint import Checkpointer, on_signal
        cp = Checkpointer({str(tmp_path / "ck")!r}, rank=0, world_size=1)
        on_signal(lambda: print("callback", flush=True))
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.1)
        print("alive", cp.should_stop, cp.stop_reason.value, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        print("alive", cp.should_stop, cp.stop_reason.value, flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.splitlines() == ["callback", "alive True SIGUSR1", "alive True SIGTERM"]


# -- stopping -------------------------------------------------------------------------------------


def slurm_env(
    monkeypatch: pytest.MonkeyPatch, *, restarts: int | None, cap: int | None, job: str = "4242"
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", job)
    for name, value in (("SLURM_RESTART_COUNT", restarts), (checkpoint.ENV_MAX_REQUEUES, cap)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))


def test_requeue_decision_follows_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert checkpoint.requeue_decision({}).requeue is False
    first = checkpoint.requeue_decision({"SLURM_JOB_ID": "7"})
    assert first.requeue and first.cap == checkpoint.DEFAULT_MAX_REQUEUES and first.restarts == 0
    last = checkpoint.requeue_decision(
        {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "1", "HPCPLAT_MAX_REQUEUES": "2"}
    )
    assert last.requeue
    over = checkpoint.requeue_decision(
        {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "2", "HPCPLAT_MAX_REQUEUES": "2"}
    )
    assert not over.requeue and "cap" in over.reason
    with pytest.raises(UsageError, match="SLURM_RESTART_COUNT is not an integer"):
        checkpoint.requeue_decision({"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "x"})


def stop_after_save(cp: Checkpointer, reason: StopReason) -> int:
    cp.save({"x": 1}, 3, format="pickle")
    checkpoint.request_stop(reason)
    with pytest.raises(SystemExit) as exited:
        cp.requeue_or_exit(wait_s=1)
    return int(exited.value.code or 0)


def test_warning_under_the_cap_rank0_requeues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, restarts=1, cap=3)
    runner = RecordingRunner()
    assert stop_after_save(make(tmp_path, runner=runner), StopReason.WARNING) == 0
    assert runner.calls == [("scontrol", "requeue", "4242")]


def test_warning_on_another_rank_does_not_requeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, restarts=0, cap=3)
    runner = RecordingRunner()
    make(tmp_path, 0, 2).save({}, 3, format="pickle")  # rank 0's half, so step 3 is complete
    assert stop_after_save(make(tmp_path, 1, 2, runner=runner), StopReason.WARNING) == 0
    assert runner.calls == []


def test_warning_at_the_cap_exits_75_without_requeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, restarts=2, cap=2)
    runner = RecordingRunner()
    assert stop_after_save(make(tmp_path, runner=runner), StopReason.WARNING) == checkpoint.EXIT_NOT_REQUEUED
    assert runner.calls == []


def test_failed_requeue_exits_75(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, restarts=0, cap=2)
    assert (
        stop_after_save(
            make(tmp_path, runner=RecordingRunner(fail=DISABLED)),
            StopReason.WARNING,
        )
        == 75
    )


def test_sigterm_of_a_job_being_preempted_is_requeued_by_rank0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slurm_env(monkeypatch, restarts=0, cap=1)
    show = ("scontrol", "show", "job")
    runner = RecordingRunner(
        {show: "JobId=4242 JobState=RUNNING Requeue=1 PreemptTime=2026-11-23T17:31:20 Restarts=0"}
    )
    assert stop_after_save(make(tmp_path, runner=runner), StopReason.PREEMPTED) == 0
    assert runner.calls == [("scontrol", "show", "job", "4242"), ("scontrol", "requeue", "4242")]


def test_sigterm_of_a_cancelled_job_just_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, restarts=0, cap=3)
    runner = RecordingRunner({("scontrol", "show", "job"): "JobId=4242 JobState=CANCELLED PreemptTime=None"})
    assert stop_after_save(make(tmp_path, runner=runner), StopReason.PREEMPTED) == checkpoint.EXIT_PREEMPTED
    assert [c[1] for c in runner.calls] == ["show"]


def test_sigterm_on_another_rank_exits_0_without_asking_slurm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slurm_env(monkeypatch, restarts=0, cap=3)
    runner = RecordingRunner()
    make(tmp_path, 0, 2).save({}, 3, format="pickle")
    assert stop_after_save(make(tmp_path, 1, 2, runner=runner), StopReason.PREEMPTED) == 0
    assert runner.calls == []


def test_wait_complete_times_out_when_a_rank_never_saves(tmp_path: Path) -> None:
    cp = make(tmp_path, 0, 2)
    cp.save({}, 1, format="pickle")
    assert cp.wait_complete(1, timeout=0.2) is False
    make(tmp_path, 1, 2).save({}, 1, format="pickle")
    assert cp.wait_complete(1, timeout=0.2) is True


# -- the command line -----------------------------------------------------------------------------


def cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HPCPLAT_", "RANK", "WORLD_SIZE"))
    }
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "hpcplat.checkpoint", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
    )


def test_cli_path_done_latest_cycle(tmp_path: Path) -> None:
    env = {checkpoint.ENV_DIR: str(tmp_path / "ck")}
    assert cli("latest", env=env).returncode == 1
    out = cli("path", "4", env=env)
    assert out.returncode == 0, out.stderr
    shard = Path(out.stdout.strip())
    (shard / "state").write_text("4 10\n")
    assert cli("latest", env=env).returncode == 1  # not done yet: not a checkpoint
    assert cli("done", "4", env=env).returncode == 0
    latest = cli("latest", env=env)
    assert latest.returncode == 0 and Path(latest.stdout.strip()) == shard
    assert cli("latest", "--step", env=env).stdout.strip() == "4"
    assert (shard / "state").read_text() == "4 10\n"
    listing = cli("list", env=env).stdout
    assert "4\tcomplete\tworld_size=1" in listing


def test_cli_keeps_k_steps_and_path_clears_a_half_written_step(tmp_path: Path) -> None:
    env = {checkpoint.ENV_DIR: str(tmp_path / "ck")}
    for step in range(1, 5):
        shard = Path(cli("path", str(step), env=env).stdout.strip())
        (shard / "f").write_text(str(step))
        assert cli("done", str(step), "--keep", "2", env=env).returncode == 0
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step-000000000003", "step-000000000004"]
    again = Path(cli("path", "4", env=env).stdout.strip())
    assert list(again.iterdir()) == []
    assert cli("latest", "--step", env=env).stdout.strip() == "3"


def test_cli_done_without_path_and_missing_dir_are_usage_errors(tmp_path: Path) -> None:
    out = cli("done", "9", "--dir", str(tmp_path / "ck"))
    assert out.returncode == 2 and "nothing to mark complete" in out.stderr
    out = cli("latest")
    assert out.returncode == 2 and "HPCPLAT_CHECKPOINT_DIR is not set" in out.stderr


def test_cli_requeue_exit_status_outside_slurm(tmp_path: Path) -> None:
    env = {checkpoint.ENV_DIR: str(tmp_path)}
    assert cli("requeue", env=env).returncode == checkpoint.EXIT_NOT_REQUEUED
    assert cli("requeue", "--signal", "TERM", env=env).returncode == checkpoint.EXIT_PREEMPTED
    assert cli("requeue", "--signal", "TERM", "--rank", "1", "--world-size", "2", env=env).returncode == 0
    assert cli("requeue", "--signal", "HUP", env=env).returncode == 2


def test_cli_wait(tmp_path: Path) -> None:
    make(tmp_path, 0, 2).save({}, 2, format="pickle")
    base = ["--dir", str(tmp_path / "ck"), "--world-size", "2"]
    assert cli("wait", "2", "--timeout", "0.2", *base).returncode == 1
    make(tmp_path, 1, 2).save({}, 2, format="pickle")
    assert cli("wait", "2", "--timeout", "0.2", *base).returncode == 0


def test_marker_records_the_job_and_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, restarts=2, cap=5, job="77")
    make(tmp_path).save({"a": 1}, 1, format="pickle")
    marker = json.loads((tmp_path / "ck/step-000000000001/rank-00000.done.json").read_text())
    assert marker["job_id"] == "77" and marker["restart_count"] == 2 and marker["shard"] == "rank-00000.pkl"
    with (tmp_path / "ck/step-000000000001/rank-00000.pkl").open("rb") as handle:
        assert pickle.load(handle) == {"a": 1}


def test_requeue_job_uses_a_deadline() -> None:
    runner = RecordingRunner(fail=DISABLED)
    with pytest.raises(SlurmError):
        checkpoint.requeue_job("5", runner=runner)


def test_a_full_disk_names_the_directory_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG, as a full filesystem would."""
    import subprocess
    import sys
    import textwrap

    directory = tmp_path / "ck"
    script = textwrap.dedent(
        f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from hpcplat.checkpoint import Checkpointer, CheckpointWriteError
        cp = Checkpointer({str(directory)!r}, rank=0, world_size=1, handle_signals=False)
        cp.save({{"w": "small"}}, 1, format="pickle")
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            cp.save({{"w": "x" * 1_000_000}}, 2, format="pickle")
        except CheckpointWriteError as exc:
            print("ERROR:", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "ERROR: cannot write checkpoint step 2 in " + str(directory) in out.stdout, out.stderr
    assert "File too large" in out.stdout and "step 1 is still the latest complete one" in out.stdout
    from hpcplat.checkpoint import latest

    restored = latest(directory)
    assert restored is not None and restored.step == 1
    assert restored.load() == {"w": "small"}
    assert not [p for p in directory.rglob("*") if ".tmp" in p.name]


PREEMPTING = "JobId=4242 JobState=RUNNING Requeue=1 PreemptTime=2026-11-23T17:31:20 Restarts=0"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (PREEMPTING, "job 4242 is being preempted: requeued it with no saved step known"),
        (
            "JobId=4242 JobState=CANCELLED Requeue=1 PreemptTime=None Restarts=0",
            "stopping on SIGTERM with no saved step known (job 4242 is CANCELLED, not being preempted)",
        ),
    ],
)
def test_preempted_requeue_without_a_saved_step_says_so(
    record: str, expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m hpcplat.checkpoint requeue --signal TERM`` knows no step: no "saved step None"."""
    slurm_env(monkeypatch, restarts=0, cap=3)
    checkpoint.preempted_requeue(runner=RecordingRunner({("scontrol", "show", "job"): record}))
    err = capsys.readouterr().err
    assert expected in err
    assert "None" not in err
    checkpoint.preempted_requeue(runner=RecordingRunner({("scontrol", "show", "job"): record}), saved=12)
    assert "step 12" in capsys.readouterr().err


def test_requeue_cli_outside_slurm_does_not_print_a_step_of_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    status = checkpoint.main(["requeue", "--signal", "TERM", "--rank", "0", "--dir", str(tmp_path)])
    assert status == checkpoint.EXIT_PREEMPTED
    err = capsys.readouterr().err
    assert "stopping on SIGTERM with no saved step known (not inside a Slurm job)" in err
    assert "None" not in err


def test_sigterm_of_a_job_preempted_past_the_cap_is_not_requeued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slurm_env(monkeypatch, restarts=2, cap=2)
    runner = RecordingRunner({("scontrol", "show", "job"): PREEMPTING})
    assert stop_after_save(make(tmp_path, runner=runner), StopReason.PREEMPTED) == checkpoint.EXIT_PREEMPTED
    assert [c[1] for c in runner.calls] == ["show"]


@pytest.mark.parametrize("status", [0, 1, 143])
def test_a_job_script_being_preempted_is_requeued_whatever_the_program_returned(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    slurm_env(monkeypatch, restarts=0, cap=3)
    runner = RecordingRunner({("scontrol", "show", "job"): PREEMPTING})
    assert checkpoint.requeue_if_preempted(status, runner=runner) == 0
    assert runner.calls == [("scontrol", "show", "job", "4242"), ("scontrol", "requeue", "4242")]


@pytest.mark.parametrize(
    "record",
    [
        "JobId=4242 JobState=RUNNING Requeue=1 PreemptTime=None Restarts=0",  # it just ended
        "JobId=4242 JobState=CANCELLED Requeue=1 PreemptTime=None Restarts=0",  # scancel
        "JobId=4242 JobState=REQUEUED Requeue=1 PreemptTime=2026-11-23T17:31:20 Restarts=0",  # requeued
    ],
)
def test_a_job_script_not_being_preempted_keeps_the_program_status(
    record: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slurm_env(monkeypatch, restarts=0, cap=3)
    runner = RecordingRunner({("scontrol", "show", "job"): record})
    assert checkpoint.requeue_if_preempted(7, runner=runner) == 7
    assert [c[1] for c in runner.calls] == ["show"]


def test_a_job_script_preempted_at_the_cap_ends_with_a_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    slurm_env(monkeypatch, restarts=3, cap=3)
    runner = RecordingRunner({("scontrol", "show", "job"): PREEMPTING})
    assert checkpoint.requeue_if_preempted(0, runner=runner) == checkpoint.EXIT_PREEMPTED
    assert [c[1] for c in runner.calls] == ["show"]
    assert "not requeued (requeued 3 time(s) already" in capsys.readouterr().err


def test_a_job_script_whose_slurm_query_fails_keeps_the_program_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slurm_env(monkeypatch, restarts=0, cap=3)
    assert checkpoint.requeue_if_preempted(5, runner=RecordingRunner(fail=DISABLED)) == 5


def test_outside_slurm_the_job_script_status_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    runner = RecordingRunner()
    assert checkpoint.requeue_if_preempted(3, runner=runner) == 3
    assert runner.calls == []
