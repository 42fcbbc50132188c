"""Environment provenance: Lmod modules, Python and its packages, container, CUDA stack, env vars.

Nothing here starts a program or imports torch: capture runs at every submit on a login node and
must stay cheap. CUDA/NCCL versions come from the environment NVIDIA's containers set, from the
driver's ``/proc`` file, from already-imported torch, or from the ``nvidia-*`` wheels.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpcplat.redact import REDACTED as _REDACTED
from hpcplat.redact import is_secret_name as _is_secret_name
from hpcplat.redact import redact_text

SELECTED_PREFIXES = (
    "SLURM_",
    "HPCPLAT_",
    "CUDA",
    "NCCL_",
    "NVIDIA_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "TORCH",
    "PYTORCH_",
    "PYTHON",
    "HF_",
    "TRANSFORMERS_",
    "CONDA_",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "PATH",
    "MODULEPATH",
    "LOADEDMODULES",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "APPTAINER_",
    "SINGULARITY_",
    "ENROOT_",
)
REDACTED = _REDACTED
"""What stands in place of a secret (:data:`hpcplat.redact.REDACTED`)."""


def is_secret_name(name: str) -> bool:
    """Whether the variable ``name`` looks secret (:func:`hpcplat.redact.is_secret_name`)."""
    return _is_secret_name(name)


def redact_value(value: str) -> str:
    """Hide the credentials of any ``scheme://user:password@host`` inside ``value``."""
    return redact_text(value)


def selected_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables that matter for reproducing a run, secrets redacted."""
    chosen: dict[str, str] = {}
    for name in sorted(environ):
        if not name.startswith(SELECTED_PREFIXES):
            continue
        chosen[name] = REDACTED if is_secret_name(name) else redact_value(environ[name])
    return chosen


def loaded_modules(environ: Mapping[str, str]) -> list[str]:
    """Lmod's ``$LOADEDMODULES`` (``gcc/12:cuda/12.2``) as a list, in load order."""
    return [m for m in environ.get("LOADEDMODULES", "").split(":") if m]


def installed_packages() -> dict[str, str]:
    """Every installed distribution of this interpreter: normalized name → version."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        packages[normalize_name(name)] = dist.version
    return dict(sorted(packages.items()))


def normalize_name(name: str) -> str:
    """PEP 503 normalization: ``Foo_Bar.baz`` → ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def driver_version(proc_file: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    try:
        text = proc_file.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else None


def _torch_versions() -> tuple[str | None, str | None]:
    """(torch.version.cuda, NCCL version) when torch is ALREADY imported; never imports it."""
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return None, None
    cuda = getattr(getattr(torch, "version", None), "cuda", None)
    nccl: str | None = None
    try:
        if cuda and torch.cuda.is_available():
            raw = torch.cuda.nccl.version()
            nccl = ".".join(str(p) for p in raw) if isinstance(raw, tuple) else str(raw)
    except (RuntimeError, AttributeError):
        nccl = None
    return (str(cuda) if cuda else None), nccl


def _first_package(packages: Mapping[str, str], prefix: str) -> str | None:
    for name, version in packages.items():
        if name.startswith(prefix):
            return version
    return None


def capture_environment(
    environ: Mapping[str, str], *, packages: dict[str, str] | None = None
) -> dict[str, Any]:
    """A flat dict with the columns of :class:`hpcplat.catalog.models.EnvSnapshot`."""
    pkgs = installed_packages() if packages is None else packages
    torch_cuda, torch_nccl = _torch_versions()
    return {
        "hostname": socket.gethostname(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "modules": loaded_modules(environ),
        "modulepath": environ.get("MODULEPATH", ""),
        "packages": pkgs,
        "container_image": environ.get("HPCPLAT_CONTAINER_IMAGE")
        or environ.get("APPTAINER_CONTAINER")
        or environ.get("SINGULARITY_CONTAINER")
        or environ.get("SLURM_CONTAINER")
        or None,
        "container_digest": environ.get("HPCPLAT_CONTAINER_DIGEST")
        or environ.get("CONTAINER_DIGEST")
        or None,
        "cuda_version": environ.get("CUDA_VERSION")
        or torch_cuda
        or _first_package(pkgs, "nvidia-cuda-runtime"),
        "driver_version": driver_version(),
        "nccl_version": environ.get("NCCL_VERSION") or torch_nccl or _first_package(pkgs, "nvidia-nccl"),
        "torch_version": pkgs.get("torch"),
        "env_vars": selected_env(environ),
    }
