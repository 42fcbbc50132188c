"""The disk holding the job's checkpoints fills up: the job fails clearly and the previous checkpoint
stays intact and loadable.

Trial 1 puts the checkpoint directory on a 1 MiB tmpfs (``mount -t tmpfs -o size=1m``; when the
tests may not mount, it falls back to trial 2's method); trial 2 sets ``RLIMIT_FSIZE`` in the job
(what ``ulimit -f`` does), so writing past the limit fails with EFBIG. The workload's checkpoints
grow (400 kB, then 800 kB): the first fits, the second does not.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcplat import checkpoint
from hpcplat.catalog import RunStatus
from hpcplat.errors import CommandError
from hpcplat.runner import run
from hpcplat.sandbox import Sandbox
from tests.faults.helpers import (
    REPEATS,
    Events,
    FaultReport,
    fault_report,
    harness,
    wait_for,
    workload_command,
)
from tests.faults.workload import padding, reference

__all__ = ["fault_report"]

pytestmark = pytest.mark.sandbox

PAD = 400_000
STEPS = 30
EVERY = 5
FSIZE_LIMIT = 700_000
ERRORS = {"tmpfs": "No space left on device", "rlimit": "File too large"}


@contextlib.contextmanager
def small_tmpfs(path: Path, wanted: bool) -> Iterator[bool]:
    """A 1 MiB tmpfs on ``path`` when ``wanted``; yields whether it is mounted (False also when this
    machine does not let the tests mount)."""
    path.mkdir()
    if not wanted:
        yield False
        return
    try:
        run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(path)], timeout=30)
    except CommandError:
        yield False
        return
    try:
        yield True
    finally:
        run(["umount", "-l", str(path)], timeout=30, check=False)


@pytest.mark.parametrize("rep", range(REPEATS))
def test_disk_full_in_the_checkpoint_directory_fails_the_job_and_keeps_the_last_checkpoint(
    rep: int, sandbox: Sandbox, tmp_path: Path, fault_report: FaultReport
) -> None:
    with (
        fault_report.trial("disk-full", rep) as trial,
        harness(sandbox, tmp_path) as h,
        small_tmpfs(tmp_path / "ckpt", wanted=rep % 2 == 0) as mounted,
    ):
        method = "tmpfs" if mounted else "rlimit"
        trial.note(f"trial {rep + 1}: {'1 MiB tmpfs' if method == 'tmpfs' else 'RLIMIT_FSIZE (ulimit -f)'}")
        ckpt = tmp_path / "ckpt"
        events = Events(tmp_path / "events.jsonl")
        command = workload_command(
            steps=STEPS,
            events=events.path,
            step_sleep=0.05,
            checkpoint_every=EVERY,
            pad_bytes=PAD,
            file_size_limit=FSIZE_LIMIT if method == "rlimit" else 0,
        )
        sub = h.submit(h.spec(command, name="diskfull", checkpoint_dir=str(ckpt)))
        assert h.final_state(sub.job_id) == "FAILED", h.output(sub.job_id)
        output = h.output(sub.job_id)
        assert ERRORS[method] in output, output
        if str(ckpt) not in output:
            trial.note("the job's error does not name the checkpoint directory that is full")

        # The previous checkpoint is still the latest complete one, and loads with its state.
        saved = [e["step"] for e in events.of("checkpoint")]
        assert saved == [EVERY - 1], events.all()
        latest = checkpoint.latest(ckpt)
        assert latest is not None and latest.step == EVERY - 1, checkpoint.scan(ckpt)
        state = latest.load()
        intact = state["x"] == reference(STEPS)[EVERY - 1] and state["pad"] == padding(1, PAD)
        trial.count("previous checkpoint intact", expected=1, found=int(intact))
        assert intact
        with latest.shard.open("rb") as handle:
            assert pickle.load(handle)["step"] == EVERY - 1
        leftovers = [p.name for p in ckpt.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, f"temporary files left in the full directory: {leftovers}"
        failed_step = [s for s in checkpoint.scan(ckpt) if s.step == 2 * EVERY - 1]
        assert all(not s.complete for s in failed_step), failed_step

        # The catalog agrees with Slurm, and has every point the job logged before it failed.
        def failed() -> bool:
            h.reconcile()
            return bool(h.catalog().run(sub.run_id).status is RunStatus.FAILED)

        wait_for("the catalog to see the run fail", failed, timeout=60, every=1)
        series = h.catalog().metric_series(sub.run_id, "x")
        logged = 2 * EVERY
        expected = reference(STEPS)
        trial.count(
            "metric points logged before the failure",
            expected=logged,
            found=sum(1 for step, value in series if step < logged and value == expected[step]),
            duplicated=len(series) - len({s for s, _ in series}),
        )
