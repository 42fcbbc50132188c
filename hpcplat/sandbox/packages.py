"""The Debian packages the sandbox needs: check by program, install with apt-get as root."""

from __future__ import annotations

import logging
import os
import shutil

from hpcplat.errors import SandboxError
from hpcplat.runner import run

log = logging.getLogger(__name__)

# program -> Debian package that provides it
REQUIRED_PROGRAMS: dict[str, str] = {
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
    "sacctmgr": "slurm-client",
    "slurmdbd": "slurmdbd",
    "munged": "munge",
    "mungekey": "munge",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-client",
}
# The meta package that pulls in slurmctld and slurmd.
EXTRA_PACKAGES = ("slurm-wlm",)
SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)
APT_UPDATE_TIMEOUT_S = 300.0
APT_INSTALL_TIMEOUT_S = 900.0


def find_program(program: str) -> str | None:
    return shutil.which(program, path=SEARCH_PATH)


def missing_packages() -> list[str]:
    """Packages whose programs are not installed, sorted, without duplicates."""
    missing = {pkg for program, pkg in REQUIRED_PROGRAMS.items() if find_program(program) is None}
    if missing & {"slurmctld", "slurmd"}:
        missing.update(EXTRA_PACKAGES)
    return sorted(missing)


def install_command(packages: list[str]) -> list[str]:
    return ["apt-get", "install", "-y", "--no-install-recommends", *packages]


def ensure_installed() -> list[str]:
    """Install what is missing (root only); returns the packages installed."""
    missing = missing_packages()
    if not missing:
        return []
    if os.geteuid() != 0:
        raise SandboxError(
            f"the sandbox needs Debian packages that are not installed: {' '.join(missing)}",
            hint=f"as root, run: apt-get update && {' '.join(install_command(missing))}",
        )
    log.warning("installing %s", " ".join(missing))
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update"], timeout=APT_UPDATE_TIMEOUT_S, env=env)
    run(install_command(missing), timeout=APT_INSTALL_TIMEOUT_S, env=env)
    still = missing_packages()
    if still:
        raise SandboxError(
            f"apt-get install finished but these are still missing: {' '.join(still)}",
            hint=f"run `{' '.join(install_command(still))}` and read its output",
        )
    return missing
