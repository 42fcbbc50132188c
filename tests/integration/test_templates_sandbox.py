"""Every sbatch template, rendered, is accepted by ``sbatch --test-only`` on the sandbox; a hostile
job name goes through real sbatch unchanged."""

from __future__ import annotations

import pytest

from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.submission import library
from hpcplat.submission.render import sbatch_arg

pytestmark = pytest.mark.sandbox

SANDBOX_VALUES: dict[str, dict[str, str]] = {
    "single-gpu": {
        "command": "python3 train.py",
        "mem": "1000",
        "time": "00:10:00",
        "partition": "gpu",
        "qos": "normal",
        "account": "vision",
    },
    "multi-node-ddp": {
        "command": "python3 ddp.py",
        "nodes": "2",
        "gpus_per_node": "2",
        "cpus_per_task": "1",
        "mem": "1000",
        "time": "00:10:00",
        "qos": "normal",
    },
    "array-sweep": {
        "command": "python3 train.py",
        "params_file": "/tmp/params.jsonl",
        "tasks": "20",
        "max_concurrent": "4",
        "mem": "500",
        "time": "00:10:00",
    },
    "preemptible": {"command": "python3 train.py", "mem": "1000", "time": "00:10:00", "partition": "gpu"},
}


@pytest.mark.parametrize("name", sorted(SANDBOX_VALUES))
def test_sbatch_test_only_accepts_each_template(name: str, sandbox: Sandbox) -> None:
    client = CliBackend(env=sandbox.env())
    script = library.render(name, SANDBOX_VALUES[name])
    client.submit(script, test_only=True)  # raises SlurmError with sbatch's words if refused


@pytest.mark.parametrize(
    "job_name",
    ["my job #1", 'it\'s "q" ; $(touch x) `y` a\\b', "--uid=0", "tab less 100% {a,b} ~"],
)
def test_hostile_job_name_survives_real_sbatch(job_name: str, sandbox: Sandbox) -> None:
    client = CliBackend(env=sandbox.env())
    script = library.render(
        "single-gpu", {**SANDBOX_VALUES["single-gpu"], "job_name": job_name, "output": "/dev/null"}
    )
    assert f"#SBATCH --job-name={sbatch_arg(job_name)}" in script
    job = client.submit(script, args=["--hold"]).job_id
    try:
        (info,) = client.jobs([job])
        assert info.name == job_name
    finally:
        client.cancel([job])
