"""Who is asking: a munge credential bound to one request, or a Unix socket's peer credentials.

A client proves its uid and gid with a munge credential (``munge``: munged takes them from the
kernel) sent as ``Authorization: Munge <credential>``. Its payload binds it to one request
(:func:`request_payload`: method, path with query and the SHA-256 of the body), so a captured
credential cannot be spent on another request; munged refuses a credential decoded twice
(replay) or after its time to live. On the server's Unix socket the kernel's peer credentials
(``SO_PEERCRED``) are accepted too. Names and groups come from the uid and gid through
``pwd``/``grp``; nothing is taken from the client's environment (``USER``, ``LOGNAME``).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass

from hpcplat.errors import CommandError, HpcplatError
from hpcplat.runner import CommandResult, run

SCHEME = "Munge"
MUNGE_TIMEOUT_S = 10.0
MAX_CREDENTIAL_LEN = 8192
_CREDENTIAL = re.compile(r"MUNGE:[A-Za-z0-9+/=]+:\Z")
# unmunge exits with munge's error code; these say the credential itself is bad (munge.h).
_REFUSED = {
    8: "not a valid credential",
    9: "unsupported credential version",
    10: "unsupported cipher",
    11: "unsupported MAC",
    12: "unsupported compression",
    13: "unsupported security realm",
    14: "invalid credential (forged, or made with another key)",
    15: "expired credential",
    16: "credential from the future (rewound clock)",
    17: "replayed credential (each credential is good for one request)",
    18: "credential not for this server",
}


class AuthError(HpcplatError):
    """The request carries no valid proof of identity (HTTP 401)."""


class AuthUnavailable(HpcplatError):
    """The server cannot check identities right now: munged does not answer (HTTP 503)."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    user: str
    groups: frozenset[str]
    """Names of the user's Unix groups (primary and supplementary), as this host knows them."""
    via: str
    """``munge`` or ``peer`` (the Unix socket's peer credentials)."""


def identity_of(uid: int, gid: int, *, via: str) -> Identity:
    """The identity of ``uid``/``gid`` with its user name and groups from ``pwd``/``grp``."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        return Identity(uid, gid, str(uid), frozenset({_group_name(gid)}), via)
    try:
        gids = os.getgrouplist(user, gid)
    except OSError:
        gids = [gid]
    return Identity(uid, gid, user, frozenset(_group_name(g) for g in gids), via)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def request_payload(method: str, target: str, body: bytes) -> str:
    """What a credential for this request carries: ``target`` is the path with its query string."""
    return f"hpcplat-api-v1\n{method.upper()}\n{target}\n{hashlib.sha256(body).hexdigest()}"


def parse_authorization(header: str) -> str:
    """The credential of an ``Authorization: Munge <credential>`` header, or :class:`AuthError`."""
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != SCHEME.lower():
        raise AuthError(f"unsupported authorization scheme {scheme[:20]!r}", hint="send 'Munge <credential>'")
    if len(credential) > MAX_CREDENTIAL_LEN or not _CREDENTIAL.match(credential):
        raise AuthError("malformed munge credential", hint="send the output of `munge` as it is")
    return credential


RunFn = Callable[..., CommandResult]


@dataclass(frozen=True)
class MungeVerifier:
    """Decodes credentials with ``unmunge`` against munged's socket (``None``: munge's default)."""

    socket: str | None = None
    timeout_s: float = MUNGE_TIMEOUT_S
    runner: RunFn = run

    def verify(self, credential: str, expected_payload: str) -> Identity:
        argv = ["unmunge", "--numeric"]
        if self.socket:
            argv.append(f"--socket={self.socket}")
        try:
            result = self.runner(argv, input=credential + "\n", timeout=self.timeout_s, check=False)
        except CommandError as exc:
            raise AuthUnavailable(f"cannot check munge credentials: {exc.message}") from exc
        if result.returncode in _REFUSED:
            raise AuthError(f"munge credential refused: {_REFUSED[result.returncode]}")
        if result.returncode != 0:
            detail = result.stderr.strip() or f"unmunge exit code {result.returncode}"
            raise AuthUnavailable(f"cannot check munge credentials: {detail}")
        head, sep, payload = result.stdout.partition("\n\n")
        fields = dict(line.split(":", 1) for line in head.splitlines() if ":" in line)
        try:
            uid, gid = int(fields["UID"].strip()), int(fields["GID"].strip())
        except (KeyError, ValueError):
            raise AuthUnavailable("cannot read unmunge's answer (no numeric UID/GID)") from None
        if not sep or payload != expected_payload:
            raise AuthError(
                "munge credential was made for another request",
                hint="make a new credential for each request (payload: method, path, body hash)",
            )
        return identity_of(uid, gid, via="munge")
