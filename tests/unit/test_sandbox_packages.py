"""The Debian package check: what is missing, and the message for a user who is not root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpcplat.sandbox import packages


def test_every_program_the_sandbox_runs_is_installed_here() -> None:
    assert packages.missing_packages() == []


def test_install_command_is_non_interactive() -> None:
    assert packages.install_command(["munge", "slurmdbd"]) == [
        "apt-get", "install", "-y", "--no-install-recommends", "munge", "slurmdbd",
    ]  # fmt: skip


def test_a_missing_package_is_reported_with_the_command_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(packages.REQUIRED_PROGRAMS, "hpcplat-no-such-program", "hpcplat-no-such-package")
    assert packages.missing_packages() == ["hpcplat-no-such-package"]


def test_not_root_and_packages_missing_is_a_clear_error() -> None:
    """Run as the unprivileged user 'nobody' (a real non-root process)."""
    code = (
        "from hpcplat.sandbox import packages\n"
        "packages.REQUIRED_PROGRAMS['hpcplat-no-such-program'] = 'hpcplat-no-such-package'\n"
        "packages.ensure_installed()\n"
    )
    root = Path(__file__).parents[2]
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(root), "HOME": "/nonexistent"},
        check=False,
    )
    if "Permission denied" in proc.stderr and "SandboxError" not in proc.stderr:
        pytest.skip(f"user nobody cannot read the checkout: {proc.stderr.strip()[-200:]}")
    assert proc.returncode != 0
    assert "SandboxError" in proc.stderr
    assert "hpcplat-no-such-package" in proc.stderr
    assert "apt-get update && apt-get install -y" in proc.stderr
