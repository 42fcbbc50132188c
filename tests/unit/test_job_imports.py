"""In-job code stays cheap to import on a compute node, and the public names stay the same modules.

Each import runs in a fresh interpreter and the test looks at what ended up in ``sys.modules``:
a behavioural check (which libraries got loaded), not a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "sqlmodel", "click", "jinja2", "paramiko", "torch")
"""What a compute node must not pay for at import: the catalog's ORM, the CLI, templates, SSH, and
torch (which every in-job module imports only inside the functions that need it)."""

IN_JOB = (
    "hpcplat.job",
    "hpcplat.job.environment",
    "hpcplat.job.checkpoint",
    "hpcplat.track",
    "hpcplat.checkpoint",
    "hpcplat.launch",
    "hpcplat.distributed",
)


def loaded_after(statement: str) -> set[str]:
    """The top-level packages in ``sys.modules`` of a fresh interpreter after ``statement``."""
    listing = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    code = f"import sys, json\n{statement}\n{listing}"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", IN_JOB)
def test_in_job_modules_import_no_heavy_library(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert "hpcplat" in loaded  # the import did happen
    assert sorted(loaded & set(HEAVY)) == []


def test_the_public_in_job_names_together_import_no_heavy_library() -> None:
    loaded = loaded_after("from hpcplat import checkpoint, distributed, launch, track")
    assert sorted(loaded & set(HEAVY)) == []


def test_the_check_sees_a_heavy_import() -> None:
    """The check itself works: a module that does import click is caught."""
    assert "click" in loaded_after("import hpcplat.cli.main")


@pytest.mark.parametrize("name", ["track", "launch", "distributed", "checkpoint"])
def test_public_names_are_the_in_job_modules(name: str) -> None:
    """``hpcplat.<name>`` is the module object of ``hpcplat.job.<name>``, whichever is imported
    first, so a module attribute set through one name is seen through the other."""
    code = (
        f"import importlib; public = importlib.import_module('hpcplat.{name}');"
        f"import hpcplat.job.{name} as real; from hpcplat import {name} as attr;"
        "print(public is real is attr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "True", result.stderr
