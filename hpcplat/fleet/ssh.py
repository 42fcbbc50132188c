"""SSH sessions to the site's machines (paramiko), each step with a deadline.

Rules kept here so no caller has to remember them:

- Host keys are checked against one known_hosts file. A host whose key is not there is refused
  (:class:`HostKeyUnknown`) unless new keys are accepted (``accept_new``, the CLI's
  ``--accept-new``), and then the key is appended to the file, as OpenSSH's
  ``StrictHostKeyChecking=accept-new`` does. A changed key is always refused.
- Authentication uses keys only: the host's ``ansible_ssh_private_key_file``, ``--identity``, the
  SSH agent, or ``~/.ssh/id_*``. No password is ever sent, asked for or stored.
- Connecting (TCP, banner, key exchange, authentication) has one deadline, enforced by the step
  timeouts and by a watchdog that closes the socket when it passes; a remote command has its own
  deadline, after which it is stopped (its whole process group is killed through a second channel)
  and :class:`RemoteCommandTimeout` is raised with what it printed so far.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from hpcplat.fleet.errors import (
    AuthFailed,
    ConnectTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    HostSshError,
    HostUnreachable,
    RemoteCommandTimeout,
    SshProtocolError,
)

if TYPE_CHECKING:
    import paramiko

    from hpcplat.fleet.inventory import Host

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_COMMAND_TIMEOUT_S = 60.0
MAX_OUTPUT_BYTES = 1 << 20
_PID_MARKER = "hpcplat-remote-pid:"
_KILL_TIMEOUT_S = 5.0
PARAMIKO_LOG_CHANNEL = "hpcplat.fleet.paramiko"
"""Where paramiko's transport logs. It logs every failed handshake from its own thread as a
twenty-line traceback at ERROR; the cause reaches the caller as one typed error, so its records
here are lowered to DEBUG (shown with ``-vv``)."""


class _ToDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(PARAMIKO_LOG_CHANNEL).isEnabledFor(logging.DEBUG)


def _quiet_paramiko(client: paramiko.SSHClient) -> None:
    client.set_log_channel(PARAMIKO_LOG_CHANNEL)
    channel = logging.getLogger(PARAMIKO_LOG_CHANNEL)
    if not any(isinstance(f, _ToDebug) for f in channel.filters):
        channel.addFilter(_ToDebug())


def _closed_by_peer(exc: BaseException) -> bool:
    """Whether the SSH handshake failed because the other side closed the connection (paramiko
    raises ``SSHException("Error reading SSH protocol banner")`` from an ``EOFError``)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, EOFError | ConnectionResetError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def default_known_hosts() -> Path:
    return Path(os.environ.get("HPCPLAT_KNOWN_HOSTS", "~/.ssh/known_hosts")).expanduser()


@dataclass(frozen=True)
class SshOptions:
    """How to reach the fleet; the same for every host of one command."""

    known_hosts: Path = field(default_factory=default_known_hosts)
    accept_new: bool = False
    identity: str | None = None
    """A private key file to offer, overriding the hosts' ``ansible_ssh_private_key_file``."""
    allow_agent: bool = True
    look_for_keys: bool = True
    """Also offer ``~/.ssh/id_*`` when no key file is given."""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    max_output_bytes: int = MAX_OUTPUT_BYTES


@dataclass(frozen=True)
class RemoteResult:
    host: str
    command: str
    exit_code: int
    """The command's exit status; -1 when it died of a signal and no status came back."""
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form: ``SHA256:...`` (what ``ssh-keygen -lf`` prints)."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def known_hosts_name(address: str, port: int) -> str:
    """How known_hosts names a host: ``addr`` on port 22, ``[addr]:port`` otherwise."""
    return address if port == 22 else f"[{address}]:{port}"


class KnownHosts:
    """One known_hosts file shared by every connection of a command (threads included)."""

    def __init__(self, path: Path, *, accept_new: bool) -> None:
        self.path = path
        self.accept_new = accept_new
        self.added: list[str] = []
        """``name keytype fingerprint`` of every key accepted and written during this command."""
        self._lock = threading.Lock()

    def load_into(self, client: paramiko.SSHClient) -> None:
        with self._lock:
            if self.path.exists():
                try:
                    client.get_host_keys().load(str(self.path))
                except (OSError, UnicodeDecodeError) as exc:
                    raise HostSshError(
                        "known_hosts",
                        f"cannot read {self.path}: {exc}",
                        hint="fix its permissions or pass --known-hosts PATH",
                    ) from exc

    def record(self, name: str, key: paramiko.PKey) -> None:
        """Append ``name``'s key to the file (created with mode 600 if missing)."""
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(line)
            self.added.append(f"{name} {key.get_name()} {fingerprint(key)}")
        log.warning("added host key %s %s for %s to %s", key.get_name(), fingerprint(key), name, self.path)


def _policy(known: KnownHosts, host: str) -> paramiko.MissingHostKeyPolicy:
    import paramiko

    class NewHostKeyPolicy(paramiko.MissingHostKeyPolicy):
        """Refuse a host whose key is unknown, or record it when new keys are accepted."""

        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            if not known.accept_new:
                raise HostKeyUnknown(
                    host,
                    f"host key {key.get_name()} {fingerprint(key)} of {hostname} is not in {known.path}",
                    hint="check the fingerprint on the machine (`ssh-keygen -lf /etc/ssh/ssh_host_*.pub`), "
                    "then run again with --accept-new to record it",
                )
            known.record(hostname, key)
            client.get_host_keys().add(hostname, key.get_name(), key)

    return NewHostKeyPolicy()


class SshSession:
    """An authenticated connection to one host; run commands with :meth:`run`; close it after."""

    def __init__(self, host: Host, client: paramiko.SSHClient, options: SshOptions) -> None:
        self.host = host
        self._client = client
        self._options = options

    def __enter__(self) -> SshSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def run(self, command: str, *, timeout: float = DEFAULT_COMMAND_TIMEOUT_S) -> RemoteResult:
        """Run ``command`` through the remote ``/bin/sh -c`` and wait at most ``timeout`` seconds.

        stdin is closed at once. Past the deadline the command's process group is killed and
        :class:`RemoteCommandTimeout` raised. Output beyond ``max_output_bytes`` per stream keeps
        its tail.
        """
        import paramiko

        name = self.host.name
        started = time.monotonic()
        deadline = started + timeout
        # The session's shell leads its own process group (sshd calls setsid), and `exec` keeps
        # its pid, so the pid printed first is the group to kill on timeout.
        wrapped = f'echo "{_PID_MARKER}$$"; exec /bin/sh -c {shlex.quote(command)}'
        out = _Tail(self._options.max_output_bytes)
        err = _Tail(self._options.max_output_bytes)
        pid: int | None = None
        try:
            transport = self._transport()
            chan = transport.open_session(timeout=max(deadline - time.monotonic(), 0.1))
            try:
                chan.exec_command(wrapped)
                chan.shutdown_write()
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    select.select([chan], [], [], min(remaining, 1.0))
                    while chan.recv_ready():
                        out.add(chan.recv(65536))
                    while chan.recv_stderr_ready():
                        err.add(chan.recv_stderr(65536))
                    if pid is None:
                        pid = out.take_marker()
                    finished = chan.exit_status_ready() and (chan.eof_received or chan.closed)
                    if finished and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    if not transport.is_active():
                        raise SshProtocolError(name, f"connection lost while running {_short(command)}")
                if pid is None:
                    pid = out.take_marker()
                if time.monotonic() >= deadline and not chan.exit_status_ready():
                    chan.close()
                    killed = self._kill_group(pid)
                    raise RemoteCommandTimeout(
                        name,
                        f"{_short(command)} did not finish within {timeout:g} s; "
                        + ("it was killed" if killed else "it could not be killed and may still run"),
                        stdout=out.text(),
                        stderr=err.text(),
                        hint="raise --timeout if the command is legitimately slow, or check the host's load",
                    )
                code = chan.recv_exit_status()
            finally:
                chan.close()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SshProtocolError(name, f"{_short(command)} failed: {exc or type(exc).__name__}") from exc
        return RemoteResult(
            host=name,
            command=command,
            exit_code=code,
            stdout=out.text(),
            stderr=err.text(),
            duration_s=time.monotonic() - started,
        )

    def _transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshProtocolError(self.host.name, "the connection is closed", hint="connect again")
        return transport

    def _kill_group(self, pid: int | None) -> bool:
        """Kill the process group of a timed-out command over a fresh channel; True if done."""
        import paramiko

        if pid is None or pid <= 1:
            return False
        script = f"kill -TERM -- -{pid} 2>/dev/null; sleep 0.3; kill -KILL -- -{pid} 2>/dev/null; true"
        try:
            chan = self._transport().open_session(timeout=_KILL_TIMEOUT_S)
            try:
                chan.settimeout(_KILL_TIMEOUT_S)
                chan.exec_command(script)
                return chan.recv_exit_status() == 0
            finally:
                chan.close()
        except (paramiko.SSHException, OSError, HostSshError) as exc:
            log.warning("%s: could not kill process group %s: %s", self.host.name, pid, exc)
            return False


class _Tail:
    """Bytes from a stream, keeping the last ``limit``; finds and removes our pid marker line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.truncated += excess

    def take_marker(self) -> int | None:
        marker = _PID_MARKER.encode()
        at = self.data.find(marker)
        if at < 0:
            return None
        end = self.data.find(b"\n", at)
        if end < 0:
            return None
        text = self.data[at + len(marker) : end].decode(errors="replace").strip()
        del self.data[at : end + 1]
        return int(text) if text.isdigit() else None

    def text(self) -> str:
        body = self.data.decode(errors="replace")
        if self.truncated:
            return f"[... {self.truncated} bytes cut ...]\n{body}"
        return body


def _short(command: str, limit: int = 80) -> str:
    return repr(command if len(command) <= limit else command[: limit - 3] + "...")


def connect(host: Host, options: SshOptions, known: KnownHosts | None = None) -> SshSession:
    """Open an authenticated session to ``host`` within ``options.connect_timeout`` seconds."""
    import paramiko

    known = known or KnownHosts(options.known_hosts, accept_new=options.accept_new)
    name, address, port = host.name, host.address, host.port
    where = f"{address}:{port}"
    limit = options.connect_timeout
    deadline = time.monotonic() + limit

    def remaining() -> float:
        return max(deadline - time.monotonic(), 0.05)

    sock = _open_socket(name, address, port, limit=limit, timeout=remaining())
    client = paramiko.SSHClient()
    _quiet_paramiko(client)
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        sock.close()

    watchdog = threading.Timer(remaining(), expire)
    watchdog.daemon = True
    watchdog.start()
    key_file = options.identity or host.key_file
    try:
        known.load_into(client)
        client.set_missing_host_key_policy(_policy(known, name))
        client.connect(
            address,
            port=port,
            username=host.user,
            sock=sock,
            timeout=remaining(),
            banner_timeout=remaining(),
            auth_timeout=remaining(),
            channel_timeout=remaining(),
            key_filename=key_file,
            allow_agent=options.allow_agent,
            look_for_keys=options.look_for_keys and key_file is None,
            password=None,
        )
    except HostSshError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise _host_key_mismatch(name, address, port, known, exc) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        raise _auth_refused(host, where, options, key_file, exc) from exc
    except (paramiko.SSHException, EOFError, OSError) as exc:
        client.close()
        took = limit - (deadline - time.monotonic())
        raise _handshake_failed(host, where, exc, fired=fired.is_set(), limit=limit, took=took) from exc
    finally:
        watchdog.cancel()
    if fired.is_set():
        client.close()
        raise ConnectTimeout(name, f"SSH to {where} did not finish within {limit:g} s")
    return SshSession(host, client, options)


def _open_socket(name: str, address: str, port: int, *, limit: float, timeout: float) -> socket.socket:
    """A TCP connection to ``address:port``; a typed error saying why there is none."""
    where = f"{address}:{port}"
    try:
        return socket.create_connection((address, port), timeout=timeout)
    except socket.gaierror as exc:
        raise HostUnreachable(
            name, f"cannot resolve {address!r}: {exc.strerror}", hint="check the host's ansible_host"
        ) from exc
    except ConnectionRefusedError as exc:
        raise HostUnreachable(
            name,
            f"connection refused at {where}",
            hint="sshd is not running there or ansible_port is wrong; check the machine's console",
        ) from exc
    except TimeoutError as exc:
        raise ConnectTimeout(
            name,
            f"no answer from {where} within {limit:g} s",
            hint="the machine is down or a firewall drops SSH; check its console or BMC",
        ) from exc
    except OSError as exc:
        raise HostUnreachable(name, f"cannot reach {where}: {exc.strerror or exc}") from exc


def _host_key_mismatch(
    name: str, address: str, port: int, known: KnownHosts, exc: paramiko.BadHostKeyException
) -> HostKeyMismatch:
    where = f"{address}:{port}"
    entry = known_hosts_name(address, port)
    return HostKeyMismatch(
        name,
        f"host key of {where} changed: it presents {exc.key.get_name()} {fingerprint(exc.key)}, "
        f"{known.path} holds {fingerprint(exc.expected_key)}; refusing to connect",
        hint="if the machine was reinstalled, remove the old key with "
        f"`ssh-keygen -R '{entry}' -f {known.path}` and connect again with --accept-new; "
        "otherwise treat it as a possible interception",
    )


def _auth_refused(
    host: Host, where: str, options: SshOptions, key_file: str | None, exc: BaseException
) -> AuthFailed:
    name = host.name
    offered = [f"key {key_file}" if key_file else "~/.ssh/id_* keys" if options.look_for_keys else ""]
    if options.allow_agent:
        offered.append("the SSH agent's keys")
    return AuthFailed(
        name,
        f"{host.user}@{where} refused authentication ({', '.join(o for o in offered if o) or 'no key'} "
        f"offered; passwords are never used): {exc}",
        hint=f"add your public key to ~{host.user}/.ssh/authorized_keys on {name}, "
        "or pass --identity KEY / set ansible_ssh_private_key_file in the inventory",
    )


def _handshake_failed(
    host: Host, where: str, exc: BaseException, *, fired: bool, limit: float, took: float
) -> HostSshError:
    """What an SSH handshake that broke off means: closed by the peer, too slow, no key, other."""
    name = host.name
    text = str(exc)
    if not fired and _closed_by_peer(exc):
        return SshProtocolError(
            name,
            f"{where} closed the connection during the SSH handshake (after {took:.1f} s)",
            hint="something other than sshd may listen on that port, or sshd refused the "
            "connection (MaxStartups, tcp wrappers); check the host's sshd log",
        )
    if fired or "banner" in text or isinstance(exc, TimeoutError):
        return ConnectTimeout(
            name,
            f"{where} accepted the connection but the SSH handshake did not finish within {limit:g} s"
            + (f" ({text})" if text and not fired else ""),
            hint="something other than sshd may listen on that port, or sshd is overloaded",
        )
    if "No authentication methods available" in text:
        return AuthFailed(
            name,
            f"no key to offer to {host.user}@{where} (no key file, no agent, no ~/.ssh/id_*)",
            hint="pass --identity KEY or set ansible_ssh_private_key_file in the inventory",
        )
    return SshProtocolError(name, f"SSH to {where} failed: {text or type(exc).__name__}")
