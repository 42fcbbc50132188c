"""hpcplat: a training platform for bare-metal Slurm GPU clusters.

Imports are lazy so that ``import hpcplat`` (and ``hpcplat --help``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Executor": "hpcplat.executor",
    "AutoExecutor": "hpcplat.executor",
    "JobSpec": "hpcplat.spec",
}

if TYPE_CHECKING:  # pragma: no cover
    from hpcplat.executor import AutoExecutor, Executor
    from hpcplat.spec import JobSpec

__all__ = ["AutoExecutor", "Executor", "JobSpec", "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcplat' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
