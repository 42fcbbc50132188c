"""Fleet operations: run a command everywhere, drain and resume nodes, read a host's logs.

``exec`` and ``logs`` go over SSH (:mod:`hpcplat.fleet.ssh`); ``drain`` and ``resume`` go through
Slurm (:class:`hpcplat.slurm.client.SlurmClient`), which owns node state, so they work even when
the machine itself is unreachable (the usual reason to drain it).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcplat.errors import HpcplatError, UsageError
from hpcplat.fleet.errors import HostSshError, RemoteCommandTimeout
from hpcplat.fleet.inventory import Host
from hpcplat.fleet.pool import DEFAULT_WORKERS, map_hosts
from hpcplat.fleet.ssh import DEFAULT_COMMAND_TIMEOUT_S, KnownHosts, RemoteResult, SshOptions, connect

if TYPE_CHECKING:
    from hpcplat.slurm.client import SlurmClient


@dataclass(frozen=True)
class ExecOutcome:
    """What one host did with the command. ``exit_code`` is None when it never ran to the end."""

    host: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "exit_code": self.exit_code,
            "ok": self.ok,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "error_kind": self.error_kind,
        }


def run_on(
    host: Host, command: str, options: SshOptions, known: KnownHosts, *, timeout: float
) -> RemoteResult:
    with connect(host, options, known) as session:
        return session.run(command, timeout=timeout)


def exec_fleet(
    hosts: Sequence[Host],
    command: str,
    options: SshOptions,
    *,
    timeout: float = DEFAULT_COMMAND_TIMEOUT_S,
    workers: int = DEFAULT_WORKERS,
) -> list[ExecOutcome]:
    """Run ``command`` on every host at once; one outcome per host, in the hosts' order."""
    if not command.strip():
        raise UsageError(
            "no command to run", hint="put the command after --: hpcplat fleet exec --on compute -- uptime"
        )
    known = KnownHosts(options.known_hosts, accept_new=options.accept_new)
    outcomes = map_hosts(
        hosts, lambda h: run_on(h, command, options, known, timeout=timeout), workers=workers
    )
    results = []
    for outcome in outcomes:
        if outcome.value is not None:
            r = outcome.value
            results.append(ExecOutcome(r.host, r.exit_code, r.stdout, r.stderr, r.duration_s))
            continue
        error = outcome.error
        kind = error.kind if isinstance(error, HostSshError) else "error"
        out = error.stdout if isinstance(error, RemoteCommandTimeout) else ""
        err = error.stderr if isinstance(error, RemoteCommandTimeout) else ""
        results.append(ExecOutcome(outcome.host.name, None, out, err, error=str(error), error_kind=kind))
    return results


@dataclass(frozen=True)
class NodeChange:
    """A drain or resume of one node: the Slurm node, its state after, or the error."""

    host: str
    node: str
    action: str
    state: str | None = None
    reason: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "node": self.node,
            "action": self.action,
            "ok": self.ok,
            "state": self.state,
            "reason": self.reason,
            "error": self.error,
        }


def slurm_nodes(hosts: Sequence[Host]) -> list[tuple[Host, str]]:
    """(host, Slurm node name) for each host; only compute hosts are Slurm nodes."""
    others = [h.name for h in hosts if not h.in_group("compute")]
    if others:
        raise UsageError(
            f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} not in the compute group, "
            "so Slurm has no node to drain or resume",
            hint="name compute hosts (or the group `compute`)",
        )
    return [(h, h.slurm_node_name) for h in hosts]


def _change_nodes(
    client: SlurmClient, hosts: Sequence[Host], *, action: str, state: str, reason: str | None
) -> list[NodeChange]:
    pairs = slurm_nodes(hosts)
    errors: dict[str, str] = {}
    for host, node in pairs:
        try:
            client.update_node(node, state=state, reason=reason)
        except HpcplatError as exc:
            errors[host.name] = exc.message
    try:
        after = {n.name: n for n in client.nodes()}
    except HpcplatError as exc:
        after = {}
        for host, _ in pairs:
            errors.setdefault(host.name, f"state not confirmed: {exc.message}")
    changes = []
    for host, node in pairs:
        info = after.get(node)
        shown = None
        if info is not None:
            shown = info.status.state.value.lower() + "".join(
                f"+{f.lower()}" for f in sorted(info.status.flags)
            )
        changes.append(
            NodeChange(host.name, node, action, shown, info.reason if info else "", errors.get(host.name))
        )
    return changes


def drain(client: SlurmClient, hosts: Sequence[Host], *, reason: str) -> list[NodeChange]:
    """Drain the hosts' Slurm nodes: running jobs finish, no new job starts there."""
    reason = reason.strip()
    if not reason or "\n" in reason:
        raise UsageError(
            "a drain needs a one-line reason (Slurm shows it to everyone: `sinfo -R`)",
            hint='hpcplat fleet drain gpu07 --reason "GPU 3 Xid 79, RMA ticket 1234"',
        )
    return _change_nodes(client, hosts, action="drain", state="drain", reason=reason)


def resume(client: SlurmClient, hosts: Sequence[Host]) -> list[NodeChange]:
    """Return drained hosts' Slurm nodes to service."""
    return _change_nodes(client, hosts, action="resume", state="resume", reason=None)


LOG_KINDS = ("agent", "slurmd")


def log_paths(host: Host, which: Sequence[str]) -> list[tuple[str, str]]:
    paths = {"agent": host.node_agent_log, "slurmd": host.slurmd_log.replace("%n", host.slurm_node_name)}
    units = {"agent": "hpcplat-node-agent", "slurmd": "slurmd"}
    return [(paths[w], units[w]) for w in which]


def logs_script(host: Host, *, lines: int, which: Sequence[str]) -> str:
    """Print the last ``lines`` of each log; fall back to the journal when the file is absent."""
    parts = []
    for path, unit in log_paths(host, which):
        p, u = shlex.quote(path), shlex.quote(unit)
        parts.append(
            f"if [ -r {p} ]; then echo '==> '{p}' <=='; tail -n {lines} {p}; "
            "elif command -v journalctl >/dev/null 2>&1 && "
            f'[ -n "$(journalctl -u {u} -n 1 --no-pager -q 2>/dev/null)" ]; '
            f"then echo '==> journal of '{u}' <=='; journalctl -u {u} -n {lines} --no-pager -q; "
            f"else echo '==> '{p}': not found (and no journal for '{u}')'; fi"
        )
    return "; echo; ".join(parts)


def tail_logs(
    host: Host,
    options: SshOptions,
    *,
    lines: int = 50,
    which: Sequence[str] = LOG_KINDS,
    timeout: float = 30.0,
) -> RemoteResult:
    unknown = [w for w in which if w not in LOG_KINDS]
    if unknown:
        raise UsageError(f"unknown log {', '.join(unknown)}", hint=f"choose from {', '.join(LOG_KINDS)}")
    if lines <= 0:
        raise UsageError(f"--lines must be positive, got {lines}")
    known = KnownHosts(options.known_hosts, accept_new=options.accept_new)
    return run_on(host, logs_script(host, lines=lines, which=which), options, known, timeout=timeout)
