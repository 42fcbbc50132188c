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
