"""The node agent's configuration: the ``[node_agent]`` section of the site TOML file.

The file is the one named by ``--config`` or ``$HPCPLAT_CONFIG`` (the site configuration every
hpcplat tool reads). Only ``[node_agent]`` belongs to the agent; it also reads ``[catalog] url``
(where events and GPU usage go) and ``[tiers.<name>] qos`` (to know a job's tier from its QOS).
Every key is checked: an unknown key, a wrong type or a value out of range raises
:class:`ConfigError` naming the key, what is allowed and the file.

Idle-reclaim settings can be overridden per tier and per partition::

    [node_agent.tiers.preemptible.idle]
    act_after_s = 1800
    [node_agent.partitions.debug.idle]
    enabled = false

A partition override wins over a tier override, which wins over ``[node_agent.idle]``. An
``act_after_s`` set without ``warn_after_s`` keeps the inherited warnings at the same fractions of
``act_after_s`` (the defaults warn at 1/2 and 7/8 of it); an explicit ``warn_after_s`` is taken
as written and must come before ``act_after_s``.
"""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hpcplat.errors import UsageError

MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 60.0
DEFAULT_SPOOL_DIR = "/var/spool/hpcplat-node-agent"


class ConfigError(UsageError):
    """The agent's configuration is malformed."""


class BackendChoice(enum.StrEnum):
    NVML = "nvml"
    EMULATED = "emulated"
    AUTO = "auto"


@dataclass(frozen=True)
class IdlePolicy:
    """Idle-GPU reclaim. Defaults follow real sites: warn at 60 and 105 minutes of zero
    utilization, act at 120; interactive jobs exempt."""

    enabled: bool = True
    warn_after_s: tuple[float, ...] = (3600.0, 6300.0)
    act_after_s: float = 7200.0
    requeue_grace_s: float = 300.0
    """After the checkpoint signal (USR1), how long the job has before the agent requeues it."""
    exempt_interactive: bool = True
    interactive_names: tuple[str, ...] = ("interactive", "bash", "sh", "zsh", "fish")
    include_multi_node: bool = False
    """Each agent sees only its own node's GPUs; a multi-node job is left alone unless this is set."""
    max_gap_s: float = 0.0
    """A hole in the samples longer than this restarts the idle clock (0: three intervals)."""
    dry_run: bool | None = None
    """Per tier or partition: ``true`` only reports what would be done (``None``: the global one)."""
    only_job_names: tuple[str, ...] = ()
    """Shell patterns (``fnmatch``): reclaim only jobs whose name matches one (a gradual roll-out).
    Empty: every job."""


@dataclass(frozen=True)
class OrphanPolicy:
    enabled: bool = True
    grace_s: float = 60.0
    """A process must be seen as an orphan for this long, twice, before it is signalled."""
    kill_wait_s: float = 10.0
    """Seconds between SIGTERM and SIGKILL."""
    scan_interval_s: float = 30.0
    kill_unattributed: bool = False
    """Also kill processes on a GPU that carry no Slurm job at all (a stray login-node tool, say).
    Off by default: such a process may be a system daemon, so the agent only reports it."""


@dataclass(frozen=True)
class SiteCheck:
    """An executable run periodically: a non-zero exit means unhealthy, its output is the reason."""

    path: str
    args: tuple[str, ...] = ()
    timeout_s: float = 30.0

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass(frozen=True)
class HealthPolicy:
    enabled: bool = True
    drain: bool = True
    """Drain the node when unhealthy (off: only report)."""
    resume: bool = True
    """Resume a node this agent drained once it has been healthy for ``resume_after_s``."""
    resume_after_s: float = 120.0
    max_temperature_c: float = 90.0
    max_uncorrected_ecc: int = 0
    """More volatile uncorrected ECC errors than this is unhealthy."""
    critical_xids: tuple[int, ...] = (48, 63, 64, 74, 79, 92, 94, 95, 119, 120)
    expected_gpus: int | None = None
    """How many GPUs the node must show; default: the GPU count Slurm has for the node."""
    check_interval_s: float = 60.0
    checks: tuple[SiteCheck, ...] = ()


@dataclass(frozen=True)
class EmulatedConfig:
    gres_conf: str | None = None
    """Slurm's gres.conf listing the emulated device files (default: next to ``$SLURM_CONF``)."""
    devices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Explicit device files per node, overriding gres.conf: ``n1 = ["/path/n1gpu0", ...]``."""
    memory_total_mb: float = 16384.0


@dataclass(frozen=True)
class NvmlConfig:
    index_by: str = "minor"
    """How an NVML device maps to Slurm's GRES index: ``minor`` (the /dev/nvidiaN number, right
    for gres.conf ``File=/dev/nvidia[0-N]`` and AutoDetect=nvml) or ``nvml`` (NVML's own order)."""


@dataclass(frozen=True)
class AgentConfig:
    interval_s: float = 10.0
    backend: BackendChoice = BackendChoice.AUTO
    dry_run: bool = False
    metrics_port: int = 9810
    """0 turns the Prometheus endpoint off."""
    metrics_address: str = "127.0.0.1"
    """The address /metrics listens on: loopback by default; set the node's management address
    for a Prometheus elsewhere (an IP address, never a name)."""
    metrics_max_connections: int = 32
    """Connections served at once; the oldest is closed to make room for a new one."""
    metrics_timeout_s: float = 5.0
    """A client has this long in all to send its request and read the answer."""
    spool_dir: str = DEFAULT_SPOOL_DIR
    flush_interval_s: float = 60.0
    report_window_s: float = 300.0
    """GPU samples are down-sampled into per-job, per-GPU windows of this length."""
    slurm_timeout_s: float = 10.0
    slurm_poll_s: float = 30.0
    """Ask Slurm for the node's jobs at least this often; also at once whenever the set of jobs
    with processes on the node changes (a job started or ended)."""
    notify_owner: bool = True
    """Append a line about every action to the job's stdout file and its HPCPLAT_JOB_DIR events file."""
    catalog_url: str | None = None
    tier_of_qos: Mapping[str, str] = field(default_factory=dict)
    idle: IdlePolicy = field(default_factory=IdlePolicy)
    orphans: OrphanPolicy = field(default_factory=OrphanPolicy)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    idle_by_tier: Mapping[str, IdlePolicy] = field(default_factory=dict)
    idle_by_partition: Mapping[str, IdlePolicy] = field(default_factory=dict)
    emulated: EmulatedConfig = field(default_factory=EmulatedConfig)
    nvml: NvmlConfig = field(default_factory=NvmlConfig)
    source: str = "(defaults)"
    observe_only: bool = False
    """Set when the file could not be read: sample and export, never act."""

    def idle_policy_for(self, *, qos: str, partition: str) -> IdlePolicy:
        """The idle policy of a job: partition override, else tier override, else the default."""
        if partition in self.idle_by_partition:
            return self.idle_by_partition[partition]
        tier = self.tier_of_qos.get(qos)
        if tier is not None and tier in self.idle_by_tier:
            return self.idle_by_tier[tier]
        return self.idle

    def tier_of(self, qos: str) -> str:
        return self.tier_of_qos.get(qos, "")

    def with_overrides(self, **changes: Any) -> AgentConfig:
        return replace(self, **changes)


# --- validation -------------------------------------------------------------------------------


class _Reader:
    """Reads one TOML table, checking each key's type and range; collects unknown keys."""

    def __init__(self, table: Mapping[str, Any], where: str, source: str) -> None:
        self.table = table
        self.where = where
        self.source = source
        self.used: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {self.where}.{key} {message}",
            hint=f"fix {self.where}.{key} in {self.source}; see docs/node-agent.md for every setting",
        )

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.table.get(key)

    def number(self, key: str, default: float, *, lo: float, hi: float | None = None) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {value!r}")
        upper = "" if hi is None else f" and {hi:g}"
        if value < lo or (hi is not None and value > hi):
            raise self.fail(key, f"must be between {lo:g}{upper or ' and more'}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int | None, *, lo: int, hi: int | None = None) -> int | None:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise self.fail(key, f"must be {bound}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def optional_boolean(self, key: str) -> bool | None:
        value = self._get(key)
        if value is not None and not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def string(self, key: str, default: str, *, choices: tuple[str, ...] = ()) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, f"must be a list of non-empty strings, got {value!r}")
        return tuple(value)

    def numbers(self, key: str, default: tuple[float, ...], *, lo: float) -> tuple[float, ...]:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v >= lo for v in value
        ):
            raise self.fail(key, f"must be a list of numbers of at least {lo:g}, got {value!r}")
        return tuple(sorted(float(v) for v in value))

    def integers(self, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise self.fail(key, f"must be a list of whole numbers, got {value!r}")
        return tuple(value)

    def table_at(self, key: str) -> Mapping[str, Any]:
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table ([{self.where}.{key}]), got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            allowed = ", ".join(sorted(self.used))
            raise ConfigError(
                f"{self.source}: unknown setting(s) in [{self.where}]: {', '.join(unknown)}",
                hint=f"allowed in [{self.where}]: {allowed}",
            )


def _idle(table: Mapping[str, Any], where: str, source: str, base: IdlePolicy) -> IdlePolicy:
    r = _Reader(table, where, source)
    act_after_s = r.number("act_after_s", base.act_after_s, lo=1.0)
    # An act_after_s set without warn_after_s moves the inherited warnings with it, at the same
    # fractions of act_after_s (60 and 105 of 120 minutes become 30 and 52.5 of 60).
    inherited = base.warn_after_s
    if act_after_s != base.act_after_s:
        inherited = tuple(w * act_after_s / base.act_after_s for w in base.warn_after_s)
    policy = IdlePolicy(
        enabled=r.boolean("enabled", base.enabled),
        warn_after_s=r.numbers("warn_after_s", inherited, lo=0.0),
        act_after_s=act_after_s,
        requeue_grace_s=r.number("requeue_grace_s", base.requeue_grace_s, lo=0.0),
        exempt_interactive=r.boolean("exempt_interactive", base.exempt_interactive),
        interactive_names=r.strings("interactive_names", base.interactive_names),
        include_multi_node=r.boolean("include_multi_node", base.include_multi_node),
        max_gap_s=r.number("max_gap_s", base.max_gap_s, lo=0.0),
        dry_run=r.optional_boolean("dry_run") if "dry_run" in table else base.dry_run,
        only_job_names=r.strings("only_job_names", base.only_job_names),
    )
    r.finish()
    late = [w for w in policy.warn_after_s if w >= policy.act_after_s]
    if late:
        raise ConfigError(
            f"{source}: [{where}] warn_after_s {late} must all come before "
            f"act_after_s ({policy.act_after_s:g})",
            hint="warnings come before the action: lower warn_after_s or raise act_after_s",
        )
    return policy


def _orphans(table: Mapping[str, Any], source: str) -> OrphanPolicy:
    r = _Reader(table, "node_agent.orphans", source)
    base = OrphanPolicy()
    policy = OrphanPolicy(
        enabled=r.boolean("enabled", base.enabled),
        grace_s=r.number("grace_s", base.grace_s, lo=0.0),
        kill_wait_s=r.number("kill_wait_s", base.kill_wait_s, lo=0.0, hi=600.0),
        scan_interval_s=r.number("scan_interval_s", base.scan_interval_s, lo=MIN_INTERVAL_S, hi=3600.0),
        kill_unattributed=r.boolean("kill_unattributed", base.kill_unattributed),
    )
    r.finish()
    return policy


def _checks(value: Any, source: str) -> tuple[SiteCheck, ...]:
    where = "node_agent.health.checks"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            f"{source}: {where} must be a list of tables, got {value!r}",
            hint='write checks = [{ path = "/etc/hpcplat/checks/ib.sh", timeout_s = 10 }]',
        )
    checks: list[SiteCheck] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: {where}[{i}] must be a path or a table, got {item!r}")
        r = _Reader(item, f"{where}[{i}]", source)
        path = r.string("path", "")
        if not path:
            raise r.fail("path", "is required (an executable file)")
        if not os.path.isabs(path):
            raise r.fail("path", f"must be an absolute path, got {path!r}")
        check = SiteCheck(
            path=path,
            args=r.strings("args", ()),
            timeout_s=r.number("timeout_s", 30.0, lo=0.1, hi=600.0),
        )
        r.finish()
        checks.append(check)
    return tuple(checks)


def _health(table: Mapping[str, Any], source: str) -> HealthPolicy:
    r = _Reader(table, "node_agent.health", source)
    base = HealthPolicy()
    policy = HealthPolicy(
        enabled=r.boolean("enabled", base.enabled),
        drain=r.boolean("drain", base.drain),
        resume=r.boolean("resume", base.resume),
        resume_after_s=r.number("resume_after_s", base.resume_after_s, lo=0.0),
        max_temperature_c=r.number("max_temperature_c", base.max_temperature_c, lo=0.0, hi=200.0),
        max_uncorrected_ecc=r.integer("max_uncorrected_ecc", base.max_uncorrected_ecc, lo=0) or 0,
        critical_xids=r.integers("critical_xids", base.critical_xids),
        expected_gpus=r.integer("expected_gpus", base.expected_gpus, lo=0),
        check_interval_s=r.number("check_interval_s", base.check_interval_s, lo=MIN_INTERVAL_S, hi=86400.0),
        checks=_checks(r._get("checks"), source),
    )
    r.finish()
    return policy


def _emulated(table: Mapping[str, Any], source: str) -> EmulatedConfig:
    r = _Reader(table, "node_agent.emulated", source)
    gres = r.string("gres_conf", "") or None
    devices_table = r.table_at("devices")
    devices: dict[str, tuple[str, ...]] = {}
    dr = _Reader(devices_table, "node_agent.emulated.devices", source)
    for node in devices_table:
        devices[node] = dr.strings(node, ())
    dr.finish()
    config = EmulatedConfig(
        gres_conf=gres,
        devices=devices,
        memory_total_mb=r.number("memory_total_mb", 16384.0, lo=1.0),
    )
    r.finish()
    return config


def _overrides(table: Mapping[str, Any], where: str, source: str, base: IdlePolicy) -> dict[str, IdlePolicy]:
    out: dict[str, IdlePolicy] = {}
    for name, sub in table.items():
        if not isinstance(sub, dict):
            raise ConfigError(
                f"{source}: [{where}.{name}] must be a table, got {sub!r}",
                hint=f"write [{where}.{name}.idle] with the idle settings to override",
            )
        r = _Reader(sub, f"{where}.{name}", source)
        out[name] = _idle(r.table_at("idle"), f"{where}.{name}.idle", source, base)
        r.finish()
    return out


def _metrics_address(r: _Reader, default: str) -> str:
    import ipaddress

    value = r.string("metrics_address", default)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise r.fail(
            "metrics_address",
            f"must be an IP address (127.0.0.1, or the node's management address), got {value!r}",
        ) from None
    return value


def from_mapping(document: Mapping[str, Any], *, source: str = "(config)") -> AgentConfig:
    """Build a validated :class:`AgentConfig` from a whole site-configuration document."""
    section = document.get("node_agent", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [node_agent] must be a table", hint="see docs/node-agent.md")
    r = _Reader(section, "node_agent", source)
    base = AgentConfig()
    interval = r.number("interval_s", base.interval_s, lo=MIN_INTERVAL_S, hi=MAX_INTERVAL_S)
    idle = _idle(r.table_at("idle"), "node_agent.idle", source, IdlePolicy())
    config = AgentConfig(
        interval_s=interval,
        backend=BackendChoice(
            r.string("backend", base.backend.value, choices=tuple(b.value for b in BackendChoice))
        ),
        dry_run=r.boolean("dry_run", base.dry_run),
        metrics_port=r.integer("metrics_port", base.metrics_port, lo=0, hi=65535) or 0,
        metrics_address=_metrics_address(r, base.metrics_address),
        metrics_max_connections=r.integer(
            "metrics_max_connections", base.metrics_max_connections, lo=1, hi=1024
        )
        or base.metrics_max_connections,
        metrics_timeout_s=r.number("metrics_timeout_s", base.metrics_timeout_s, lo=0.1, hi=60.0),
        spool_dir=r.string("spool_dir", base.spool_dir),
        flush_interval_s=r.number("flush_interval_s", base.flush_interval_s, lo=1.0, hi=86400.0),
        report_window_s=r.number("report_window_s", base.report_window_s, lo=interval, hi=86400.0),
        slurm_timeout_s=r.number("slurm_timeout_s", base.slurm_timeout_s, lo=0.5, hi=120.0),
        slurm_poll_s=r.number("slurm_poll_s", base.slurm_poll_s, lo=MIN_INTERVAL_S, hi=600.0),
        notify_owner=r.boolean("notify_owner", base.notify_owner),
        idle=idle,
        orphans=_orphans(r.table_at("orphans"), source),
        health=_health(r.table_at("health"), source),
        idle_by_tier=_overrides(r.table_at("tiers"), "node_agent.tiers", source, idle),
        idle_by_partition=_overrides(r.table_at("partitions"), "node_agent.partitions", source, idle),
        emulated=_emulated(r.table_at("emulated"), source),
        nvml=NvmlConfig(index_by=_nvml_index_by(r.table_at("nvml"), source)),
        catalog_url=_catalog_url(document, source),
        tier_of_qos=_tier_of_qos(document, source),
        source=source,
    )
    r.finish()
    return config


def _nvml_index_by(table: Mapping[str, Any], source: str) -> str:
    r = _Reader(table, "node_agent.nvml", source)
    value = r.string("index_by", "minor", choices=("minor", "nvml"))
    r.finish()
    return value


def _catalog_url(document: Mapping[str, Any], source: str) -> str | None:
    catalog = document.get("catalog", {})
    url = catalog.get("url") if isinstance(catalog, dict) else None
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"{source}: [catalog] url must be a string, got {url!r}")
    return url or os.environ.get("HPCPLAT_CATALOG_URL") or None


def _tier_of_qos(document: Mapping[str, Any], source: str) -> dict[str, str]:
    tiers = document.get("tiers", {})
    if not isinstance(tiers, dict):
        raise ConfigError(f"{source}: [tiers] must be a table")
    mapping: dict[str, str] = {}
    for name, table in tiers.items():
        if isinstance(table, dict):
            qos = table.get("qos", name)
            if isinstance(qos, str):
                mapping[qos] = name
    return mapping


def config_path(explicit: str | None) -> Path | None:
    """The file to read: ``--config``, else ``$HPCPLAT_CONFIG``, else none (defaults)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("HPCPLAT_CONFIG")
    return Path(env) if env else None


def load(path: Path | None) -> AgentConfig:
    """Read and validate the configuration; ``None`` gives the defaults."""
    if path is None:
        return AgentConfig(catalog_url=os.environ.get("HPCPLAT_CATALOG_URL") or None)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} does not exist",
            hint="pass --config PATH or set HPCPLAT_CONFIG to the site configuration file",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}",
            hint="fix the line and column named above; the agent keeps its previous settings until then",
        ) from exc
    return from_mapping(document, source=str(path))
