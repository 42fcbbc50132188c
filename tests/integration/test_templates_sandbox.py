"""Every sbatch template, rendered, is accepted by ``sbatch --test-only`` on the sandbox; a hostile
job name goes through real sbatch unchanged; a template job's output is found where Slurm wrote
it; the documented examples run; a request no node can hold is refused before sbatch."""

from __future__ import annotations

import json
import shlex
import sys
import uuid
from pathlib import Path

import pytest

from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.submission import library
from hpcplat.submission.render import sbatch_arg
from tests.fixtures.submission import invoke, write_site_file

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


# -- template jobs through the real sandbox: logs found, documented examples run, bad requests refused --


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    """The sandbox's environment with a private catalog and job root (not where sbatch writes)."""
    env = dict(sandbox.env())
    env["HPCPLAT_CONFIG"] = str(write_site_file(env, tmp_path))
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


def _sbatch_here(env: dict[str, str], script: str, where: Path) -> str:
    """Plain ``sbatch`` of ``script`` from directory ``where``, as a user would."""
    where.mkdir(parents=True, exist_ok=True)
    return CliBackend(env=env).submit(script, cwd=str(where)).job_id


def test_template_job_output_is_found_by_logs_and_show(env: dict[str, str], tmp_path: Path) -> None:
    marker = f"template-output-{uuid.uuid4().hex[:8]}"
    values = {**SANDBOX_VALUES["single-gpu"], "command": f"echo {marker}", "time": "00:02:00"}
    submit_dir = tmp_path / "submit dir"  # a space: the path must arrive whole
    job = _sbatch_here(env, library.render("single-gpu", values), submit_dir)
    try:
        waited = invoke(["wait", "--quiet", "--timeout", "240", job], env=env)
        assert waited.exit_code == 0, waited.output
        expected = submit_dir / f"slurm-{job}.out"
        assert expected.exists()
        logs = invoke(["logs", job], env=env)
        assert logs.exit_code == 0, logs.output
        assert marker in logs.output
        shown = invoke(["show", "--json", job], env=env)
        data = json.loads(shown.output)
        assert data["output"] == str(expected)
        assert data["output_guessed"] is None  # Slurm's own StdOut, not a guess
    finally:
        CliBackend(env=env).cancel([job])


def test_documented_multi_node_ddp_render_runs_to_completion(env: dict[str, str], tmp_path: Path) -> None:
    # docs/submission.md: hpcplat template render multi-node-ddp --set command='python ddp.py'
    #   --set nodes=2 --set gpus_per_node=4 > ddp.sbatch; only the program differs.
    code = 'import os; print("rank", os.environ["RANK"], "of", os.environ["WORLD_SIZE"])'
    program = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    rendered = invoke(
        [
            "template",
            "render",
            "multi-node-ddp",
            "--set",
            f"command={program}",
            "--set",
            "nodes=2",
            "--set",
            "gpus_per_node=4",
        ],
        env=env,
    )
    assert rendered.exit_code == 0, rendered.output
    job = _sbatch_here(env, rendered.output, tmp_path / "ddp")
    try:
        waited = invoke(["wait", "--quiet", "--timeout", "400", job], env=env)
        assert waited.exit_code == 0, waited.output + invoke(["show", job], env=env).output
        logs = invoke(["logs", job], env=env)
        assert logs.exit_code == 0, logs.output
        assert sorted(line for line in logs.output.splitlines() if line.startswith("rank ")) == [
            f"rank {rank} of 8" for rank in range(8)
        ]
    finally:
        CliBackend(env=env).cancel([job])


@pytest.mark.parametrize("name", sorted(SANDBOX_VALUES))
def test_the_example_template_show_prints_is_accepted(name: str, env: dict[str, str], tmp_path: Path) -> None:
    shown = invoke(["template", "show", name], env=env)
    example = shown.output.splitlines()[-1]
    assert example.startswith(f"example: hpcplat template render {name} ")
    argv = shlex.split(example.removeprefix("example: hpcplat ").split(" > ")[0])
    argv = [a.replace("params_file=...", f"params_file={tmp_path / 'p.jsonl'}") for a in argv]
    rendered = invoke(argv, env=env)
    assert rendered.exit_code == 0, rendered.output
    CliBackend(env=env).submit(rendered.output, cwd=str(tmp_path), test_only=True)


def test_impossible_template_requests_are_refused_naming_the_value(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "ddp.sbatch"
    refused = invoke(
        [
            "template",
            "render",
            "multi-node-ddp",
            "--set",
            "command=python3 ddp.py",
            "--set",
            "gpus_per_node=4",
            "--set",
            "cpus_per_task=4",
            "-o",
            str(out),
        ],
        env=env,
    )
    assert refused.exit_code == 2, refused.output
    assert "16 CPUs per node requested (4 tasks x 4 CPUs)" in refused.output
    assert "largest node of partition 'gpu' has 4" in refused.output
    assert "Traceback" not in refused.output and not out.exists()

    memory = invoke(["template", "render", "preemptible", "--set", "command=x", "--set", "mem=16G"], env=env)
    assert memory.exit_code == 2 and "#!/bin/bash" not in memory.output
    assert "16G of memory per node requested" in memory.output and "has 4000M" in memory.output

    name = f"refused-{uuid.uuid4().hex[:6]}"
    gpus = invoke(
        [
            "template",
            "submit",
            "single-gpu",
            "--set",
            "command=x",
            "--set",
            "gpus=5",
            "--set",
            f"job_name={name}",
        ],
        env=env,
    )
    assert gpus.exit_code == 2 and "5 GPUs per node requested" in gpus.output and "has 4" in gpus.output
    queued = CliBackend(env=env).jobs(None)
    assert all(j.name != name for j in queued), "nothing may be submitted"
