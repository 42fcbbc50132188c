"""hpcplat.launch: the distributed environment from Slurm's variables, signals, exit status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from hpcplat import launch
from hpcplat.errors import UsageError
from tests.fixtures.runner import RecordingRunner


def hostnames(hosts: Sequence[str]) -> RecordingRunner:
    """A runner answering ``scontrol show hostnames`` the way Slurm prints it (one host a line)."""
    return RecordingRunner(default="".join(f"{h}\n" for h in hosts))


SLURM = {
    "SLURM_JOB_ID": "123457",
    "SLURM_PROCID": "3",
    "SLURM_NTASKS": "4",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_TASKS_PER_NODE": "2(x2)",
    "SLURM_JOB_NODELIST": "n[1-2]",
}


def test_task_env_from_slurm_variables() -> None:
    runner = hostnames(["n1", "n2"])
    env = launch.task_env(SLURM, runner=runner)
    assert env == launch.TaskEnv(3, 4, 1, 2, 1, "n1", 20000 + 123457 % 10000)
    assert runner.calls == [("scontrol", "show", "hostnames", "n[1-2]")]
    assert env.as_environ()["RANK"] == "3" and env.as_environ()["LOCAL_WORLD_SIZE"] == "2"


def test_step_variables_win_and_overrides_apply() -> None:
    env = dict(SLURM, SLURM_STEP_TASKS_PER_NODE="3,1", SLURM_STEP_NODEID="0", SLURM_STEP_NODELIST="n7")
    env.update(HPCPLAT_MASTER_PORT="31000")
    runner = hostnames(["n7"])
    got = launch.task_env(env, runner=runner)
    assert (got.local_world_size, got.master_addr, got.master_port) == (3, "n7", 31000)
    got = launch.task_env(dict(env, HPCPLAT_MASTER_ADDR="10.0.0.5"), runner=RecordingRunner(missing=True))
    assert got.master_addr == "10.0.0.5"


def test_outside_slurm_it_is_a_world_of_one() -> None:
    assert launch.task_env({}) == launch.TaskEnv(0, 1, 0, 1, 0, "127.0.0.1", launch.DEFAULT_PORT)


def test_master_port_is_stable_and_in_range() -> None:
    ports = {launch.master_port(j) for j in range(1, 30000, 7)}
    assert min(ports) >= 20000 and max(ports) <= 29999
    assert launch.master_port("98765") == launch.master_port(98765)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("4", [4]), ("2(x3)", [2, 2, 2]), ("2(x2),1", [2, 2, 1]), ("1,3(x2)", [1, 3, 3])],
)
def test_expand_tasks_per_node(spec: str, expected: list[int]) -> None:
    assert launch.expand_tasks_per_node(spec) == expected


def test_expand_tasks_per_node_rejects_garbage() -> None:
    with pytest.raises(UsageError, match="tasks-per-node"):
        launch.expand_tasks_per_node("two")


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("n1", ["n1"]),
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("gpu[01-02,7],cpu5", ["gpu01", "gpu02", "gpu7", "cpu5"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
    ],
)
def test_nodelist_fallback_without_scontrol(nodelist: str, hosts: list[str]) -> None:
    assert launch.expand_nodelist(nodelist) == hosts
    assert launch.first_host(nodelist, runner=RecordingRunner(missing=True)) == hosts[0]


def test_exit_status_of_a_signalled_child() -> None:
    assert launch.exit_status(-15) == 143 and launch.exit_status(3) == 3


def run_launch(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "hpcplat.launch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )


def test_main_sets_the_variables_and_returns_the_child_status(tmp_path: Path) -> None:
    child = (
        "import json, os, sys; json.dump({k: os.environ[k] for k in sys.argv[1:]}, sys.stdout); sys.exit(7)"
    )
    names = [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "NODE_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
    ]
    env = dict(SLURM, HPCPLAT_MASTER_ADDR="n1")
    proc = run_launch(["--master-port", "24680", "--", sys.executable, "-c", child, *names], env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    assert json.loads(out) == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "NODE_RANK": "1",
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "24680",
    }


def test_main_without_a_command_or_with_a_missing_one_is_a_usage_error() -> None:
    proc = run_launch(["--"], {})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no command to run" in err
    proc = run_launch(["--", "/nonexistent/prog"], {})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "command not found" in err


def test_signals_reach_the_child_and_launch_outlives_them(tmp_path: Path) -> None:
    """USR1 and TERM sent to launch alone are forwarded; launch waits for the child's own exit."""
    marker = tmp_path / "got"
    child = textwrap.dedent(
        f"""
        import signal, sys, time
        got = []
        signal.signal(signal.SIGUSR1, lambda s, f: got.append("USR1"))
        signal.signal(signal.SIGTERM, lambda s, f: got.append("TERM"))
        open({str(tmp_path / "ready")!r}, "w").close()
        while "TERM" not in got:
            time.sleep(0.05)
        time.sleep(0.3)  # "saving a checkpoint" after TERM: launch must still be waiting
        open({str(marker)!r}, "w").write(",".join(got))
        sys.exit(0)
        """
    )
    proc = run_launch(["--", sys.executable, "-c", child], {})
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert marker.read_text() == "USR1,TERM"


def test_importing_launch_does_not_import_torch() -> None:
    code = (
        "import sys, hpcplat.launch, hpcplat.distributed, hpcplat.checkpoint; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
