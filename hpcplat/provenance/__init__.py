"""Provenance of a run: the code, the environment and the datasets it used.

:func:`capture` is called at submit time and its result goes into ``RunIntent.provenance``; the
catalog stores the diff and the package list content-addressed. Pure stdlib, no heavy imports.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpcplat.provenance.code import CodeState, capture_code
from hpcplat.provenance.environment import capture_environment, selected_env
from hpcplat.provenance.manifest import FileEntry, Manifest, build_manifest, verify_manifest
from hpcplat.runner import Runner, run

__all__ = [
    "CodeState",
    "FileEntry",
    "Manifest",
    "build_manifest",
    "capture",
    "capture_code",
    "capture_environment",
    "selected_env",
    "verify_manifest",
]


def capture(
    cwd: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    runner: Runner = run,
) -> dict[str, Any]:
    """``{"code": {...}, "env": {...}}`` for the checkout at ``cwd`` and this process's environment."""
    env = os.environ if environ is None else environ
    return {
        "code": capture_code(cwd, runner=runner).to_dict(),
        "env": capture_environment(env),
    }
