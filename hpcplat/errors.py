"""The typed errors of hpcplat.

Every error a user can see carries what was wrong and, where there is one, what to do next
(``hint``). The CLI turns them into a message and an exit code: 2 for bad input
(:class:`UsageError`), 1 for everything else.
"""

from __future__ import annotations

from collections.abc import Sequence


class HpcplatError(Exception):
    """Base of every error hpcplat raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(HpcplatError):
    """The user's input is wrong: nothing was submitted or written."""

    exit_code = 2


class CommandError(HpcplatError):
    """An external program failed (non-zero exit, missing, or past its deadline)."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str],
        returncode: int | None,
        stderr: str = "",
        stdout: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout


class CommandTimeout(CommandError):
    """An external program did not finish within its deadline and was killed."""


class CommandNotFound(CommandError):
    """The program to run is not installed (or not on PATH)."""


class SlurmError(CommandError):
    """A Slurm command or RPC failed; ``stderr`` holds Slurm's own words."""


class SandboxError(HpcplatError):
    """The local sandbox cluster could not be brought up, queried or stopped."""


class CatalogError(HpcplatError):
    """The catalog database cannot be reached, is out of date, or refused a write."""


class SshError(HpcplatError):
    """An SSH connection or remote command failed."""
