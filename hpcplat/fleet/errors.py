"""Typed SSH errors of the fleet layer: each names the host and says what to do next.

They all derive from :class:`hpcplat.errors.SshError`, so callers that only care that "SSH to a host
failed" catch that; ``fleet check`` reports each kind as its own reason.
"""

from __future__ import annotations

from hpcplat.errors import SshError


class HostSshError(SshError):
    """An SSH failure on one host. ``kind`` is a short machine-readable word for reports."""

    kind = "ssh"

    def __init__(self, host: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{host}: {message}", hint=hint)
        self.host = host
        self.reason = message


class HostUnreachable(HostSshError):
    """Nothing answers at the host's address (refused, no route, name not resolved)."""

    kind = "unreachable"


class ConnectTimeout(HostSshError):
    """The TCP connect, the SSH banner or the key exchange did not finish within its deadline."""

    kind = "timeout"


class HostKeyUnknown(HostSshError):
    """The host's key is not in known_hosts and new keys are not accepted."""

    kind = "unknown-host-key"


class HostKeyMismatch(HostSshError):
    """The host presented a key different from the one known_hosts holds for it."""

    kind = "host-key-mismatch"


class AuthFailed(HostSshError):
    """The host refused every key offered (key files and agent)."""

    kind = "auth-failed"


class RemoteCommandTimeout(HostSshError):
    """A remote command did not finish within its deadline; it was stopped."""

    kind = "command-timeout"

    def __init__(
        self, host: str, message: str, *, stdout: str = "", stderr: str = "", hint: str | None = None
    ) -> None:
        super().__init__(host, message, hint=hint)
        self.stdout = stdout
        self.stderr = stderr


class SshProtocolError(HostSshError):
    """Any other SSH-level failure (the connection dropped, a channel could not be opened)."""

    kind = "ssh-error"
