"""Site configuration: priority tiers, default account, catalog URL, submission settings.

TOML files merged in this order, later ones winning key by key:

1. the system file ``/etc/hpcplat/hpcplat.toml`` (``$HPCPLAT_SYSTEM_CONFIG`` names another);
2. the user file ``$XDG_CONFIG_HOME/hpcplat/hpcplat.toml`` (``~/.config/hpcplat/hpcplat.toml``);
3. the file named by ``$HPCPLAT_CONFIG`` (the sandbox exports its own);
4. environment overrides: ``HPCPLAT_ACCOUNT``, ``HPCPLAT_TIER``, ``HPCPLAT_CATALOG_URL``.

Shape::

    [cluster]    name = "hpcsb"
    [defaults]   account = "vision"  tier = "normal"  partition = "gpu"
    [catalog]    url = "sqlite:////abs/path/catalog.db"
    [tiers.preemptible]  partition = "gpu"  qos = "preemptible"  preemptible = true
                         warn_seconds = 120  max_requeues = 5      # optional, per tier
    [submission] job_root = "~/hpcplat-jobs"  warn_seconds = 90  max_requeues = 3
                 python = "/opt/hpcplat/bin/python"  lmod_init = ["/usr/share/lmod/lmod/init/bash"]
                 cache_seconds = 300

Other sections (``[node_agent]``, ``[policy]``...) belong to other parts of hpcplat; they are kept
as they are and read with :meth:`SiteConfig.section`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcplat.errors import UsageError

SYSTEM_CONFIG = "/etc/hpcplat/hpcplat.toml"
DEFAULT_WARN_SECONDS = 90
DEFAULT_MAX_REQUEUES = 3
DEFAULT_CACHE_SECONDS = 300
DEFAULT_JOB_ROOT = "~/.hpcplat/jobs"
DEFAULT_LMOD_INIT = (
    "/usr/share/lmod/lmod/init/bash",
    "/usr/share/lmod/lmod/init/profile",
    "/etc/profile.d/lmod.sh",
    "/opt/apps/lmod/lmod/init/bash",
)

ENV_OVERRIDES = {
    "HPCPLAT_ACCOUNT": ("defaults", "account"),
    "HPCPLAT_TIER": ("defaults", "tier"),
    "HPCPLAT_CATALOG_URL": ("catalog", "url"),
}


@dataclass(frozen=True)
class Tier:
    """A priority tier: where its jobs go and whether they can be preempted."""

    name: str
    partition: str | None
    qos: str | None
    preemptible: bool = False
    warn_seconds: int | None = None
    """Seconds of SIGUSR1 warning before the time limit (preemptible tiers); site default if unset."""
    max_requeues: int | None = None


@dataclass(frozen=True)
class SiteConfig:
    cluster_name: str | None = None
    default_account: str | None = None
    default_tier: str | None = None
    default_partition: str | None = None
    catalog_url: str | None = None
    tiers: Mapping[str, Tier] = field(default_factory=dict)
    job_root: str = DEFAULT_JOB_ROOT
    """Under it, one private directory per user (:meth:`job_root_path`) holds that user's job
    directories (``<job id>/``) and outputs (``<job id>.out``)."""
    warn_seconds: int = DEFAULT_WARN_SECONDS
    max_requeues: int = DEFAULT_MAX_REQUEUES
    python: str | None = None
    """Interpreter that runs ``hpcplat.launch`` in jobs; ``None`` is the one submitting."""
    lmod_init: tuple[str, ...] = DEFAULT_LMOD_INIT
    cache_seconds: int = DEFAULT_CACHE_SECONDS
    """How long facts about the cluster (partitions, nodes, QOS) are reused between submissions."""
    sources: tuple[str, ...] = ()
    """The files that were read, in merge order, plus ``env`` when an override applied."""
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The whole merged TOML data."""

    def tier(self, name: str | None) -> Tier | None:
        """The named tier, the default tier for ``None``, or ``None`` when no tier is in play.

        Raises :class:`UsageError` listing the configured tiers when ``name`` is unknown."""
        chosen = name or self.default_tier
        if chosen is None:
            return None
        found = self.tiers.get(chosen)
        if found is None:
            allowed = ", ".join(sorted(self.tiers)) or "(none configured)"
            where = ", ".join(self.sources) or "no configuration file"
            raise UsageError(
                f"unknown tier {chosen!r}; allowed tiers: {allowed}",
                hint=f"pick one with --tier, or define [tiers.{chosen}] in the site configuration ({where})",
            )
        return found

    def section(self, name: str) -> dict[str, Any]:
        """A section of the configuration as plain data (empty when absent)."""
        value = self.raw.get(name, {})
        return dict(value) if isinstance(value, Mapping) else {}

    def shared_job_root(self) -> Path:
        """The configured ``job_root`` (one directory for every user of the site)."""
        return Path(os.path.expanduser(self.job_root)).absolute()

    def job_root_path(self, user: str | None = None) -> Path:
        """This user's job root, ``<job_root>/<user>``: every job directory, log, checkpoint and sweep
        of the user lives under it, private to them (0700; see ``submission.service.ensure_job_root``),
        so nobody else can plant a directory or checkpoint a job of theirs would use."""
        return self.shared_job_root() / (user or current_user())


def current_user() -> str:
    """The name of the user this process runs as, from the kernel's uid (never ``$USER``)."""
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (a container): its number is still unique
        return str(uid)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(
            f"malformed site configuration {path}: {exc}", hint="fix the TOML syntax on the line named"
        ) from None
    except PermissionError:
        raise UsageError(f"cannot read site configuration {path}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"cannot read site configuration {path}: {exc.strerror or exc}") from None


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merged key by key; any other value of ``top`` replaces ``base``'s."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def config_paths(env: Mapping[str, str] | None = None) -> list[tuple[Path, bool]]:
    """The files to read, in merge order, each with whether it must exist."""
    env = os.environ if env is None else env
    system = Path(env.get("HPCPLAT_SYSTEM_CONFIG") or SYSTEM_CONFIG)
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    paths = [(system, False), (Path(xdg) / "hpcplat" / "hpcplat.toml", False)]
    named = env.get("HPCPLAT_CONFIG")
    if named:
        paths.append((Path(named), True))
    return paths


def load(env: Mapping[str, str] | None = None) -> SiteConfig:
    """Read and merge the site configuration (see the module docstring for the order)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    sources: list[str] = []
    for path, required in config_paths(env):
        if not path.is_file():
            if required:
                raise UsageError(
                    f"$HPCPLAT_CONFIG names {path}, which does not exist",
                    hint="unset HPCPLAT_CONFIG or point it at a TOML file",
                )
            continue
        data = merge(data, _read_toml(path))
        sources.append(str(path))
    overridden = False
    for var, (section, key) in ENV_OVERRIDES.items():
        value = env.get(var)
        if value:
            table = dict(data.get(section) or {})
            table[key] = value
            data[section] = table
            overridden = True
    if overridden:
        sources.append("env")
    return from_data(data, sources=tuple(sources))


def _typed(
    data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, problems: list[str]
) -> Any:
    """``data[key]`` when it is of ``kind`` (or absent: ``None``); otherwise the problem is added to
    ``problems`` and ``None`` returned, so that every wrong key is reported at once."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        problems.append(f"{where}.{key} must be a {names}, got {value!r}")
        return None
    return value


TIER_KEYS = ("partition", "qos", "preemptible", "warn_seconds", "max_requeues", "description")


def from_data(data: Mapping[str, Any], *, sources: tuple[str, ...] = ()) -> SiteConfig:
    """A :class:`SiteConfig` from merged TOML data (checks the types of the keys hpcplat reads;
    every problem is reported in one :class:`UsageError`)."""
    problems: list[str] = []

    def table(name: str) -> Mapping[str, Any]:
        value = data.get(name) or {}
        if not isinstance(value, Mapping):
            problems.append(f"[{name}] must be a table, got {value!r}")
            return {}
        return value

    cluster, defaults, catalog, submission = (
        table("cluster"),
        table("defaults"),
        table("catalog"),
        table("submission"),
    )
    tiers: dict[str, Tier] = {}
    for name, spec in table("tiers").items():
        where = f"tiers.{name}"
        if not isinstance(spec, Mapping):
            problems.append(f"[{where}] must be a table")
            continue
        unknown = set(spec) - set(TIER_KEYS)
        if unknown:
            problems.append(
                f"unknown key(s) in [{where}]: {', '.join(sorted(unknown))} (allowed: {', '.join(TIER_KEYS)})"
            )
        tiers[name] = Tier(
            name=name,
            partition=_typed(spec, "partition", str, where, problems),
            qos=_typed(spec, "qos", str, where, problems),
            preemptible=bool(_typed(spec, "preemptible", bool, where, problems) or False),
            warn_seconds=_typed(spec, "warn_seconds", int, where, problems),
            max_requeues=_typed(spec, "max_requeues", int, where, problems),
        )
    lmod = _typed(submission, "lmod_init", (list, str), "submission", problems)
    if isinstance(lmod, str):
        lmod = [lmod]
    job_root = _typed(submission, "job_root", str, "submission", problems) or DEFAULT_JOB_ROOT
    if any(ord(c) < 32 for c in job_root):
        problems.append("submission.job_root must not contain control characters")
    config = SiteConfig(
        cluster_name=_typed(cluster, "name", str, "cluster", problems),
        default_account=_typed(defaults, "account", str, "defaults", problems),
        default_tier=_typed(defaults, "tier", str, "defaults", problems),
        default_partition=_typed(defaults, "partition", str, "defaults", problems),
        catalog_url=_typed(catalog, "url", str, "catalog", problems),
        tiers=tiers,
        job_root=job_root,
        warn_seconds=_typed(submission, "warn_seconds", int, "submission", problems) or DEFAULT_WARN_SECONDS,
        max_requeues=(
            m
            if (m := _typed(submission, "max_requeues", int, "submission", problems)) is not None
            else DEFAULT_MAX_REQUEUES
        ),
        python=_typed(submission, "python", str, "submission", problems),
        lmod_init=tuple(str(p) for p in lmod) if lmod else DEFAULT_LMOD_INIT,
        cache_seconds=(
            c
            if (c := _typed(submission, "cache_seconds", int, "submission", problems)) is not None
            else DEFAULT_CACHE_SECONDS
        ),
        sources=sources,
        raw=dict(data),
    )
    if problems:
        hint = f"fix it in {', '.join(sources) or 'the configuration'}"
        if len(problems) == 1:
            raise UsageError(f"site configuration: {problems[0]}", hint=hint)
        lines = "\n".join(f"  - {p}" for p in problems)
        raise UsageError(f"site configuration, {len(problems)} problems:\n{lines}", hint=hint)
    return config
