"""slurm_templates/: headers, rendering, golden files.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/unit/test_template_library.py``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hpcplat.errors import UsageError
from hpcplat.submission import library

GOLDEN = Path(__file__).parents[1] / "golden" / "templates"
NAMES = ["array-sweep", "multi-node-ddp", "preemptible", "single-gpu"]

VALUES: dict[str, dict[str, str]] = {
    "single-gpu": {"command": "python train.py --lr 0.1", "modules": "cuda/12.1", "venv": "/opt/venvs/torch"},
    "multi-node-ddp": {
        "command": "python ddp.py --epochs 3",
        "nodes": "2",
        "gpus_per_node": "2",
        "qos": "normal",
    },
    "array-sweep": {
        "command": "python train.py",
        "params_file": "/shared/sweep/params.jsonl",
        "tasks": "20",
        "max_concurrent": "4",
    },
    "preemptible": {
        "command": "python train.py --resume",
        "warn_seconds": "120",
        "max_requeues": "5",
        "checkpoint_dir": "/scratch/ckpt",
    },
}


def rendered(name: str) -> str:
    return library.render(name, {**VALUES[name], "python": "/opt/hpcplat/bin/python"})


def test_every_template_is_listed_with_a_documented_header() -> None:
    templates = library.list_templates()
    assert [t.name for t in templates] == NAMES
    for t in templates:
        assert t.summary
        assert any(v.name == "command" and v.required for v in t.variables)
        assert all(v.help for v in t.variables), f"{t.name}: every variable documents itself"


@pytest.mark.parametrize("name", NAMES)
def test_golden(name: str) -> None:
    text = rendered(name)
    path = GOLDEN / f"{name}.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; if intended, run with UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", NAMES)
def test_bash_accepts_and_the_catalog_registration_is_guarded(name: str) -> None:
    text = rendered(name)
    assert text.startswith("#!/bin/bash\n")
    result = subprocess.run(
        ["bash", "-n"], check=False, input=text, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stderr
    assert "-m hpcplat.catalog.selfregister" in text and "it runs anyway" in text


def test_preemptible_has_the_checkpoint_trap() -> None:
    text = rendered("preemptible")
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@120" in text
    assert "trap 'forward USR1' USR1" in text and "trap 'forward TERM' TERM" in text
    assert '-m hpcplat.checkpoint requeue --rank 0 --world-size 1 --signal "$checkpoint_signal"' in text


def test_ddp_runs_launch_under_srun() -> None:
    assert "srun --kill-on-bad-exit=1 --ntasks-per-node=2" in rendered("multi-node-ddp")
    assert "-m hpcplat.launch --" in rendered("multi-node-ddp")


def test_render_errors_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="needs command"):
        library.render("single-gpu", {})
    with pytest.raises(UsageError, match="has no variable 'gpu'; its variables: job_name, command, gpus"):
        library.render("single-gpu", {"command": "x", "gpu": "2"})
    with pytest.raises(UsageError, match="gpus must be a whole number"):
        library.render("single-gpu", {"command": "x", "gpus": "two"})
    with pytest.raises(UsageError, match="did you mean 'single-gpu'"):
        library.get_template("single-gpus")
    with pytest.raises(UsageError, match="control characters"):
        library.render("single-gpu", {"command": "x", "job_name": "a\n#SBATCH --uid=0"})
    with pytest.raises(UsageError, match="KEY=VALUE"):
        library.parse_assignments(["novalue"])


def test_sbatch_directives_are_read_as_sbatch_reads_them() -> None:
    script = (
        "#!/bin/bash\n"
        "# a comment\n"
        '#SBATCH --job-name="a b # c"\n'
        "#SBATCH -N 2\n"
        "#SBATCH --gres=gpu:a100:2 -c4\n"
        "#SBATCH --mem 8G  # per node\n"
        "\n"
        "echo run\n"
        "#SBATCH --nodes=9\n"
    )
    assert library.sbatch_directives(script) == {
        "job-name": "a b # c",
        "nodes": "2",
        "gres": "gpu:a100:2",
        "cpus-per-task": "4",
        "mem": "8G",
    }


def test_documented_ddp_example_fits_a_four_cpu_four_gpu_node() -> None:
    # docs/submission.md: --set nodes=2 --set gpus_per_node=4 (the sandbox's nodes: 4 CPUs, 4 GPUs)
    script = library.render(
        "multi-node-ddp", {"command": "python ddp.py", "nodes": "2", "gpus_per_node": "4"}
    )
    r = library.requested("multi-node-ddp", script).resources
    assert (r.nodes, r.tasks_per_node, r.gpus_per_node, r.memory_mb) == (2, 4, 4, None)
    assert r.tasks_per_node * r.cpus_per_task <= 4


@pytest.mark.parametrize("name", NAMES)
def test_defaults_leave_memory_to_the_cluster(name: str) -> None:
    values = {"command": "python train.py", "params_file": "/p.jsonl"} if name == "array-sweep" else {}
    script = library.render(name, values or {"command": "python train.py"})
    request = library.requested(name, script)
    assert request.resources.memory_mb is None  # no --mem, or --mem=0 (all of each node): always fits
    assert request.resources.tasks_per_node * request.resources.cpus_per_task <= 4


def test_requested_names_a_value_slurm_cannot_read() -> None:
    with pytest.raises(UsageError, match=r"--mem: not a memory size: 'lots'"):
        library.requested("single-gpu", library.render("single-gpu", {"command": "x", "mem": "lots"}))
    with pytest.raises(UsageError, match=r"resources.nodes: must be at least 1, got 0"):
        library.requested("multi-node-ddp", library.render("multi-node-ddp", {"command": "x", "nodes": "0"}))
