"""Secret environment variables: passed to the job, never in its script, the catalog or the output.

The values of a spec's :attr:`~hpcplat.spec.Environment.secrets` are written to
``<job_root>/<user>/secrets/<run id>.env`` (mode 0600, in a 0700 directory of the user's private
job root) just before ``sbatch``; the job script sources that file after checking it is the user's
own regular file. So neither the script recorded in the catalog (``run show --script``), nor the
script Slurm keeps (``scontrol write batch_script``), nor ``--dry-run`` holds a value. The file
stays for requeues and reruns of the same job; ``hpcplat`` never reads it back.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from hpcplat.errors import UsageError
from hpcplat.private import FILE_MODE, make_private_dir
from hpcplat.siteconfig import SiteConfig
from hpcplat.spec import JobSpec

SECRETS_DIR = "secrets"


def secrets_path(config: SiteConfig, run_id: str) -> Path:
    """Where the secret values of run (or sweep) ``run_id`` are kept for its job."""
    return config.job_root_path() / SECRETS_DIR / f"{run_id}.env"


def resolve(spec: JobSpec, environ: Mapping[str, str] | None = None) -> JobSpec:
    """``spec`` with every secret value known: one a recorded spec lacks (a rerun) is taken from
    ``environ`` (default: this process's environment) under the same name, else :class:`UsageError`."""
    secrets = spec.environment.secrets
    missing = [name for name, value in secrets.items() if value is None]
    if not missing:
        return spec
    env = os.environ if environ is None else environ
    absent = [name for name in missing if name not in env]
    if absent:
        names = ", ".join(sorted(absent))
        raise UsageError(
            f"the job needs the secret environment variable(s) {names}, whose values are never recorded",
            hint=f"set them in your environment ({absent[0]}=...) or give --secret-env {absent[0]}=...",
        )
    filled = {name: (env[name] if value is None else value) for name, value in secrets.items()}
    from dataclasses import replace

    return spec.replace(environment=replace(spec.environment, secrets=filled))


def write(path: Path, secrets: Mapping[str, str | None]) -> None:
    """Write ``export NAME=VALUE`` lines (shell-quoted) to ``path``, mode 0600, replacing it."""
    make_private_dir(path.parent)
    lines = []
    for name, value in sorted(secrets.items()):
        if value is None:
            raise ValueError(f"no value for the secret {name}: resolve() the spec first")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(lines))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["resolve", "secrets_path", "write"]
