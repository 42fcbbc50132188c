"""``hpcplat fleet check``: the health of every machine at a glance.

Per host, over one SSH connection: reachable, the daemons its groups need (munged everywhere;
slurmctld on the controller, slurmdbd on dbd hosts, slurmd and the node agent on compute hosts),
free disk, load, clock skew against this machine, and the GPUs the node agent sees (read from its
``/metrics`` endpoint on the host). Slurm's view of each compute node comes from one ``nodes()``
call on this side; when Slurm cannot be reached that probe is skipped, not failed.

Collecting facts (SSH) and judging them (:func:`evaluate`) are separate so the rules are tested
without machines.
"""

from __future__ import annotations

import enum
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpcplat.errors import HpcplatError
from hpcplat.fleet.errors import HostSshError
from hpcplat.fleet.inventory import Host
from hpcplat.fleet.pool import DEFAULT_WORKERS, map_hosts
from hpcplat.fleet.ssh import KnownHosts, SshOptions, connect

if TYPE_CHECKING:
    from hpcplat.slurm.client import SlurmClient
    from hpcplat.slurm.models import NodeInfo

DEFAULT_CHECK_TIMEOUT_S = 20.0
DISK_WARN_FREE_PCT = 10.0
DISK_FAIL_FREE_PCT = 3.0
SKEW_WARN_S = 0.5
SKEW_FAIL_S = 30.0
"""munge rejects credentials older than its TTL (300 s by default); well before that, Slurm's
timestamps and job accounting drift. Beyond this the node is reported broken."""
LOAD_WARN_PER_CPU = 2.0
AGENT_PROCESS_PATTERN = "[h]pcplat-node-agent|-m [n]ode_agent"
"""``pgrep -f`` pattern of the node agent. The brackets keep it from matching the probe's own shell."""

_METRICS_BEGIN = "--- hpcplat metrics begin ---"
_METRICS_END = "--- hpcplat metrics end ---"


class Health(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"

    @property
    def rank(self) -> int:
        return {Health.SKIP: 0, Health.OK: 1, Health.WARN: 2, Health.FAIL: 3}[self]


@dataclass(frozen=True)
class Probe:
    name: str
    health: Health
    detail: str
    value: float | int | str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"health": self.health.value, "detail": self.detail, "value": self.value}


@dataclass(frozen=True)
class HostReport:
    host: str
    address: str
    groups: tuple[str, ...]
    probes: tuple[Probe, ...]

    @property
    def health(self) -> Health:
        ranked = [p.health for p in self.probes if p.health is not Health.SKIP]
        return max(ranked, key=lambda h: h.rank) if ranked else Health.SKIP

    def probe(self, name: str) -> Probe | None:
        return next((p for p in self.probes if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "groups": list(self.groups),
            "health": self.health.value,
            "probes": {p.name: p.to_dict() for p in self.probes},
        }


@dataclass(frozen=True)
class FleetReport:
    hosts: tuple[HostReport, ...]
    slurm: str
    """How Slurm's view was obtained: ``ok`` or why it was skipped."""
    added_host_keys: tuple[str, ...] = ()

    def healthy(self, *, strict: bool = False) -> bool:
        bad = {Health.FAIL, Health.WARN} if strict else {Health.FAIL}
        return not any(h.health in bad for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy(),
            "slurm": self.slurm,
            "added_host_keys": list(self.added_host_keys),
            "hosts": [h.to_dict() for h in self.hosts],
        }


@dataclass(frozen=True)
class SlurmView:
    """Slurm's nodes by name, or why they are not known (``error``)."""

    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    error: str | None = None


def slurm_view(client: SlurmClient | None) -> SlurmView:
    if client is None:
        return SlurmView(error="no Slurm client")
    try:
        return SlurmView(nodes={n.name: n for n in client.nodes()})
    except HpcplatError as exc:
        return SlurmView(error=f"Slurm not reachable: {exc.message}")


def daemons_for(host: Host) -> dict[str, str]:
    """Probe name -> how to find the process (``pgrep -x`` name, or ``-f`` pattern for the agent)."""
    wanted: dict[str, str] = {}
    if host.groups & {"controller", "dbd", "compute", "login"}:
        wanted["munged"] = "munged"
    if host.in_group("controller"):
        wanted["slurmctld"] = "slurmctld"
    if host.in_group("dbd"):
        wanted["slurmdbd"] = "slurmdbd"
    if host.in_group("compute"):
        wanted["slurmd"] = "slurmd"
        wanted["node_agent"] = AGENT_PROCESS_PATTERN
    return wanted


def disk_paths(host: Host) -> list[str]:
    paths = host.vars.get("fleet_disk_paths", ["/"])
    return [str(p) for p in paths] if isinstance(paths, list) else ["/"]


def facts_script(host: Host) -> str:
    """The one shell script that gathers a host's facts as ``key=value`` lines."""
    lines = []
    for probe, what in daemons_for(host).items():
        flag = "-f" if probe == "node_agent" else "-x"
        lines.append(
            f"if pgrep {flag} {shlex.quote(what)} >/dev/null 2>&1; then echo proc.{probe}=1; "
            f"else echo proc.{probe}=0; fi"
        )
    lines.append("echo load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null)")
    lines.append("echo cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)")
    for path in disk_paths(host):
        lines.append(
            f'df -Pk {shlex.quote(path)} 2>/dev/null | awk \'NR==2 {{print "disk=" $2 " " $4 " " $6}}\''
        )
    if host.in_group("compute"):
        url = shlex.quote(f"http://127.0.0.1:{host.node_agent_port}/metrics")
        fetch_py = (
            "import sys,urllib.request as u; "
            "sys.stdout.write(u.urlopen(sys.argv[1], timeout=3).read(200000).decode())"
        )
        lines.append(f"echo {shlex.quote(_METRICS_BEGIN)}")
        lines.append(
            "if command -v curl >/dev/null 2>&1; then "
            f"curl -fsS --max-time 3 --max-filesize 2000000 {url} 2>/dev/null; "
            f"else python3 -c {shlex.quote(fetch_py)} {url} 2>/dev/null; fi"
            " || echo metrics.error=unreachable"
        )
        lines.append(f"echo; echo {shlex.quote(_METRICS_END)}")
    return "\n".join(lines)


@dataclass
class Facts:
    processes: dict[str, bool] = field(default_factory=dict)
    load1: float | None = None
    cpus: int | None = None
    disks: list[tuple[str, int, int]] = field(default_factory=list)
    """(mount point, size KiB, free KiB)."""
    metrics: str | None = None
    metrics_error: str | None = None


def parse_facts(text: str) -> Facts:
    facts = Facts()
    in_metrics = asked_metrics = False
    metrics: list[str] = []
    for line in text.splitlines():
        if line == _METRICS_BEGIN:
            in_metrics = asked_metrics = True
            continue
        if line == _METRICS_END:
            in_metrics = False
            continue
        if in_metrics:
            if line.startswith("metrics.error="):
                facts.metrics_error = line.partition("=")[2]
            else:
                metrics.append(line)
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.startswith("proc."):
            facts.processes[key[5:]] = value.strip() == "1"
        elif key == "load":
            facts.load1 = _float(value)
        elif key == "cpus":
            number = _float(value)
            facts.cpus = int(number) if number else None
        elif key == "disk":
            parts = value.split()
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                facts.disks.append((parts[2], int(parts[0]), int(parts[1])))
    if any(m.strip() for m in metrics):
        facts.metrics = "\n".join(metrics)
    elif asked_metrics and facts.metrics_error is None:
        facts.metrics_error = "empty answer"
    return facts


def _float(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_GPU_LABELS = ("gpu_uuid", "uuid", "gpu", "gpu_index", "index", "minor_number")
_GPU_COUNT_METRICS = ("hpcplat_node_gpus", "hpcplat_gpu_count", "hpcplat_node_agent_gpus")


def gpus_in_metrics(text: str) -> int | None:
    """How many GPUs a Prometheus text exposition describes.

    An explicit count gauge wins (``hpcplat_node_gpus`` ...); otherwise the distinct values of the
    first GPU-identifying label (``gpu_uuid``, ``uuid``, ``gpu``, ``index``...) on metrics whose name
    mentions ``gpu``. ``None`` when the text says nothing about GPUs.
    """
    seen: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        name, labels, value = match.groups()
        if name in _GPU_COUNT_METRICS:
            number = _float(value)
            if number is not None:
                return int(number)
        if "gpu" not in name.lower() or not labels:
            continue
        found = dict(_LABEL.findall(labels))
        for label in _GPU_LABELS:
            if label in found:
                seen.setdefault(label, set()).add(found[label])
                break
    for label in _GPU_LABELS:
        if label in seen:
            return len(seen[label])
    return None


def evaluate(host: Host, facts: Facts, skew_s: float | None, view: SlurmView) -> list[Probe]:
    """Judge a reachable host's facts. Pure: every rule of ``fleet check`` is here."""
    probes: list[Probe] = []
    for probe, what in daemons_for(host).items():
        running = facts.processes.get(probe)
        if running is None:
            probes.append(Probe(probe, Health.WARN, "not checked (no answer from pgrep)"))
        elif running:
            probes.append(Probe(probe, Health.OK, "running", 1))
        else:
            shown = "the node agent" if probe == "node_agent" else what
            probes.append(Probe(probe, Health.FAIL, f"{shown} is not running", 0))

    if host.in_group("compute"):
        probes.append(_slurm_probe(host, view))
        probes.append(_gpu_probe(host, facts))

    probes.extend(_disk_probes(facts))

    if skew_s is None:
        probes.append(Probe("clock", Health.WARN, "remote time not readable"))
    else:
        health = Health.OK
        if abs(skew_s) >= SKEW_FAIL_S:
            health = Health.FAIL
        elif abs(skew_s) >= SKEW_WARN_S:
            health = Health.WARN
        detail = f"{skew_s:+.3f} s from this machine"
        if health is not Health.OK:
            detail += "; fix NTP/chrony on the host (munge and Slurm need agreeing clocks)"
        probes.append(Probe("clock", health, detail, round(skew_s, 4)))

    if facts.load1 is None:
        probes.append(Probe("load", Health.WARN, "load average not readable"))
    else:
        cpus = facts.cpus or 1
        per_cpu = facts.load1 / cpus
        health = Health.WARN if per_cpu >= LOAD_WARN_PER_CPU else Health.OK
        probes.append(Probe("load", health, f"{facts.load1:.2f} on {cpus} CPU(s)", facts.load1))
    return probes


def _slurm_probe(host: Host, view: SlurmView) -> Probe:
    name = host.slurm_node_name
    if view.error is not None:
        return Probe("slurm", Health.SKIP, view.error)
    node = view.nodes.get(name)
    if node is None:
        return Probe(
            "slurm",
            Health.FAIL,
            f"Slurm has no node {name!r}; add it to slurm.conf (re-run the slurm roles) "
            "or set slurm_node_name",
        )
    state = node.status.state.value.lower()
    shown = state + "".join(f"+{f.lower()}" for f in sorted(node.status.flags))
    reason = f" ({node.reason})" if node.reason else ""
    if node.status.not_responding or not (node.status.state.usable or node.status.drained_or_draining):
        return Probe("slurm", Health.FAIL, f"{shown}{reason}", shown)
    if node.status.drained_or_draining:
        return Probe(
            "slurm", Health.WARN, f"{shown}{reason}; `hpcplat fleet resume {host.name}` when fixed", shown
        )
    if host.gpu_count and node.gpus != host.gpu_count:
        return Probe(
            "slurm",
            Health.WARN,
            f"{shown}, but Slurm has {node.gpus} GPU(s) and the inventory {host.gpu_count}",
            shown,
        )
    return Probe("slurm", Health.OK, shown, shown)


def _gpu_probe(host: Host, facts: Facts) -> Probe:
    if facts.metrics is None:
        why = facts.metrics_error or "no answer"
        detail = f"node agent metrics on port {host.node_agent_port} not readable ({why})"
        return Probe("gpus", Health.WARN if host.gpu_count else Health.SKIP, detail)
    seen = gpus_in_metrics(facts.metrics)
    if seen is None:
        return Probe("gpus", Health.WARN, "the node agent's metrics name no GPU")
    if seen != host.gpu_count:
        return Probe(
            "gpus",
            Health.FAIL,
            f"the node agent sees {seen} GPU(s), the inventory says gpu_count={host.gpu_count}; "
            "check `nvidia-smi` on the host (a lost GPU) or correct the inventory",
            seen,
        )
    return Probe("gpus", Health.OK, f"{seen} seen by the node agent", seen)


def _disk_probes(facts: Facts) -> list[Probe]:
    if not facts.disks:
        return [Probe("disk", Health.WARN, "df gave no answer")]
    probes = []
    for mount, size_kib, free_kib in facts.disks:
        pct = 100.0 * free_kib / size_kib if size_kib else 0.0
        health = Health.OK
        if pct < DISK_FAIL_FREE_PCT:
            health = Health.FAIL
        elif pct < DISK_WARN_FREE_PCT:
            health = Health.WARN
        name = "disk" if mount == "/" else f"disk:{mount}"
        probes.append(
            Probe(name, health, f"{free_kib / 1048576:.1f} GiB free ({pct:.0f}%) on {mount}", round(pct, 1))
        )
    return probes


def check_host(
    host: Host, options: SshOptions, known: KnownHosts, view: SlurmView, *, timeout: float
) -> HostReport:
    """Check one host; SSH failures become a failed ``ssh`` probe, never an exception."""
    groups = tuple(sorted(host.groups))
    try:
        with connect(host, options, known) as session:
            sent = time.time()
            clock = session.run("date +%s.%N", timeout=timeout)
            back = time.time()
            remote = _float(clock.stdout)
            skew = remote - (sent + back) / 2 if remote is not None and clock.ok else None
            result = session.run(facts_script(host), timeout=timeout)
    except HostSshError as exc:
        # One line: the cause (the report already names the host), then what to do.
        detail = f"{exc.reason}; hint: {exc.hint}" if exc.hint else exc.reason
        return HostReport(host.name, host.address, groups, (Probe("ssh", Health.FAIL, detail, exc.kind),))
    probes = [Probe("ssh", Health.OK, f"{host.user}@{host.address}:{host.port}")]
    probes.extend(evaluate(host, parse_facts(result.stdout), skew, view))
    return HostReport(host.name, host.address, groups, tuple(probes))


def check_fleet(
    hosts: Sequence[Host],
    options: SshOptions,
    *,
    client: SlurmClient | None,
    timeout: float = DEFAULT_CHECK_TIMEOUT_S,
    workers: int = DEFAULT_WORKERS,
) -> FleetReport:
    view = (
        slurm_view(client)
        if any(h.in_group("compute") for h in hosts)
        else SlurmView(error="no compute host")
    )
    known = KnownHosts(options.known_hosts, accept_new=options.accept_new)
    outcomes = map_hosts(
        hosts, lambda h: check_host(h, options, known, view, timeout=timeout), workers=workers
    )
    reports = []
    for outcome in outcomes:
        if outcome.value is not None:
            reports.append(outcome.value)
        else:
            error = str(outcome.error)
            host = outcome.host
            reports.append(
                HostReport(
                    host.name, host.address, tuple(sorted(host.groups)), (Probe("ssh", Health.FAIL, error),)
                )
            )
    return FleetReport(hosts=tuple(reports), slurm=view.error or "ok", added_host_keys=tuple(known.added))
