"""A small client of the hpcplat server: the standard library only.

It talks HTTP/1.1 over the server's Unix socket or TCP and proves who it is with a munge
credential made for each request (``Authorization: Munge <credential>``; the payload binds it to
the method, path and body: see :func:`request_payload`). Being standard-library only, it also runs
as a plain script under any Python 3.11, for users whose interpreter cannot import hpcplat::

    python3 client.py [--socket PATH | --url http://HOST:PORT] [--munge-socket PATH] whoami
    python3 client.py ... get /api/v1/datasets/NAME
    python3 client.py ... post /api/v1/runs/ID/metrics '{"points": [...]}'

Inside hpcplat, ``munge`` runs through :mod:`hpcplat.runner` (deadline, typed errors).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MUNGE_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0


class ServerError(Exception):
    """The server refused or failed a request (``status``: the HTTP status; 0: unreachable)."""

    def __init__(self, message: str, *, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or message
        """The server's own words (its ``detail``), without the status."""


def request_payload(method: str, target: str, body: bytes) -> str:
    """The munge payload of a request (the same function as ``hpcplat.server.identity``'s)."""
    return f"hpcplat-api-v1\n{method.upper()}\n{target}\n{hashlib.sha256(body).hexdigest()}"


def _run_munge(argv: list[str], payload: str, timeout: float) -> str:
    """``munge`` through hpcplat.runner when hpcplat is importable, else subprocess (script use)."""
    try:
        from hpcplat.errors import CommandError
        from hpcplat.runner import run
    except ImportError:
        return _run_munge_plain(argv, payload, timeout)
    try:
        return run(argv, input=payload, timeout=timeout).stdout.strip()
    except CommandError as exc:
        raise ServerError(f"cannot make a munge credential: {exc.message}") from None


def _run_munge_plain(argv: list[str], payload: str, timeout: float) -> str:
    try:
        proc = subprocess.run(
            argv, input=payload, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise ServerError("munge: command not found (install munge)") from None
    except subprocess.TimeoutExpired:
        raise ServerError(f"munge: no answer within {timeout:g} s") from None
    if proc.returncode != 0:
        raise ServerError(f"munge failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.strip()


def munge_credential(
    payload: str, *, socket_path: str | None = None, timeout: float = MUNGE_TIMEOUT_S
) -> str:
    argv = ["munge"]
    if socket_path:
        argv.append(f"--socket={socket_path}")
    return _run_munge(argv, payload, timeout)


def _reachable(path: str) -> bool:
    import os

    return os.path.exists(path) and os.access(path, os.W_OK)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class Client:
    """``socket``: the server's Unix socket; else ``url`` (``http://host:port``)."""

    socket: str | None = None
    url: str | None = None
    munge_socket: str | None = None
    use_munge: bool = True
    """False: no credential (only the Unix socket's peer credentials identify the caller)."""
    timeout: float = REQUEST_TIMEOUT_S
    credential: Callable[[str], str] | None = None
    """Makes the credential for a payload (default: ``munge``); tests pass their own."""

    @classmethod
    def from_section(cls, section: dict[str, Any], **options: Any) -> Client:
        """The client of the server a site file's ``[server]`` section describes: its Unix socket
        when this process can reach it, else ``http://host:port``."""
        sock, port = section.get("socket"), section.get("port")
        munge = section.get("munge_socket")
        munge_socket = munge if isinstance(munge, str) else None
        if isinstance(sock, str) and _reachable(sock):
            return cls(socket=sock, munge_socket=munge_socket, **options)
        if isinstance(port, int):
            host = section.get("host") or "127.0.0.1"
            return cls(url=f"http://{host}:{port}", munge_socket=munge_socket, **options)
        if isinstance(sock, str):
            return cls(socket=sock, munge_socket=munge_socket, **options)
        raise ServerError("the site configuration has no [server] socket or port")

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket:
            return _UnixConnection(self.socket, self.timeout)
        if not self.url:
            raise ServerError("no server address: give a Unix socket or a URL")
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ServerError(f"server URL must look like http://HOST:PORT, got {self.url!r}")
        return http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=self.timeout)

    def request(self, method: str, target: str, body: Any = None) -> Any:
        """Send one request; returns the decoded JSON answer, or raises :class:`ServerError`."""
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.use_munge:
            payload = request_payload(method, target, data)
            make = self.credential or (lambda p: munge_credential(p, socket_path=self.munge_socket))
            headers["Authorization"] = f"Munge {make(payload)}"
        conn = self._connection()
        try:
            conn.request(method.upper(), target, body=data if body is not None else None, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except OSError as exc:
            where = self.socket or self.url
            raise ServerError(f"cannot reach the hpcplat server at {where}: {exc}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = raw.decode(errors="replace")
        if response.status >= 400:
            detail = answer.get("detail") if isinstance(answer, dict) else answer
            raise ServerError(
                f"server answered {response.status}: {detail}", status=response.status, detail=str(detail)
            )
        return answer

    def get(self, target: str) -> Any:
        return self.request("GET", target)

    def post(self, target: str, body: Any) -> Any:
        return self.request("POST", target, body)

    def whoami(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.get("/api/v1/whoami")
        return answer


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="client.py", description="Talk to an hpcplat server.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="the server's Unix socket")
    where.add_argument("--url", help="http://HOST:PORT")
    parser.add_argument("--munge-socket", help="munged's socket (default: munge's own)")
    parser.add_argument("--no-munge", action="store_true", help="send no credential (Unix socket peer only)")
    parser.add_argument("method", choices=["whoami", "get", "post"])
    parser.add_argument("target", nargs="?", default="/api/v1/whoami")
    parser.add_argument("body", nargs="?", help="JSON body of a post")
    args = parser.parse_args(argv)
    client = Client(
        socket=args.socket, url=args.url, munge_socket=args.munge_socket, use_munge=not args.no_munge
    )
    try:
        if args.method == "post":
            answer = client.post(args.target, json.loads(args.body or "null"))
        else:
            answer = client.get(args.target if args.method == "get" else "/api/v1/whoami")
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3 if exc.status in (401, 403) else 1
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
