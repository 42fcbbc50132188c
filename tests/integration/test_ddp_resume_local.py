"""The digits example, two gloo ranks on this machine without Slurm: stopped by SIGUSR1 half-way,
it saves on both ranks, exits 75 (no Slurm to requeue it), and a second start resumes and ends
with the same final loss, bit for bit, as a run that was never stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcplat import checkpoint

pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_digits.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(ckpt: Path, result: Path, *extra: str) -> list[subprocess.Popen[str]]:
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HPCPLAT_"))}
        env.update(
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        argv = [sys.executable, str(EXAMPLE), "--epochs", "2", "--checkpoint-every", "5", "--seed", "1"]
        argv += ["--checkpoint-dir", str(ckpt), "--result", str(result), *extra]
        procs.append(
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    return procs


def finish(procs: list[subprocess.Popen[str]]) -> list[int]:
    codes = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        codes.append(proc.returncode)
        print(out)
    return codes


def test_stop_on_usr1_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    assert finish(start(tmp_path / "ck-base", tmp_path / "base.json")) == [0, 0]

    ckpt = tmp_path / "ck"
    procs = start(ckpt, tmp_path / "resumed.json", "--step-sleep", "0.1")
    deadline = time.monotonic() + 240
    while (found := checkpoint.latest(ckpt, world_size=2)) is None or found.step < 5:
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
        time.sleep(0.1)
    for proc in procs:
        proc.send_signal(signal.SIGUSR1)
    assert finish(procs) == [checkpoint.EXIT_NOT_REQUEUED] * 2
    stopped = checkpoint.latest(ckpt, world_size=2)
    assert stopped is not None and not (tmp_path / "resumed.json").exists()

    assert finish(start(ckpt, tmp_path / "resumed.json")) == [0, 0]
    base = json.loads((tmp_path / "base.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["resumed_from"] == [{"step": stopped.step, "saved_on": "signal"}]
    assert resumed["final_loss_hex"] == base["final_loss_hex"], (resumed["final_loss"], base["final_loss"])
