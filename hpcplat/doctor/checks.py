"""The checks of ``hpcplat doctor``: parsers of what Slurm prints and judgements over them.

Everything here is pure (text and the site file in, :class:`Check` out), so it is tested on output
recorded from a real Slurm (``tests/data/slurm/``). Each check says what it found and, when it is
not ``ok``, the exact setting to change (``fix``) and why hpcplat needs it (``why``).

Statuses: ``ok``; ``degraded`` (hpcplat works, something it offers does not); ``missing``
(something hpcplat relies on is absent: the cluster is broken for it); ``skipped`` (not measurable
here, with the reason). :func:`exit_code`: 0 all ok, 1 something degraded, 2 something missing.
"""

from __future__ import annotations

import enum
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.parse.gres import _split_top_level

NULLS = frozenset({"(null)", "(null type)", "N/A", "none"})
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_()/.-]*$")
_GRACE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")
SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001
CLOCK_SKEW_TOLERANCE_S = 2.0
"""The node agents' ``Date`` headers have one-second resolution: more than this is real skew."""


class Status(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    MISSING = "missing"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    name: str
    """A stable identifier (``cgroup``, ``tier-qos``...): scripts match on it."""
    title: str
    status: Status
    detail: str
    fix: str | None = None
    """The exact setting to change (``None`` when ok)."""
    why: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
            "why": self.why,
        }


def overall(checks: Iterable[Check]) -> Status:
    """``missing`` if any is, else ``degraded`` if any is, else ``ok``; skipped ones do not count."""
    found = {c.status for c in checks}
    for status in (Status.MISSING, Status.DEGRADED):
        if status in found:
            return status
    return Status.OK


def exit_code(checks: Iterable[Check]) -> int:
    """0 ok, 1 degraded, 2 broken (something missing)."""
    return {Status.OK: 0, Status.DEGRADED: 1, Status.MISSING: 2}[overall(checks)]


# -- parsing -------------------------------------------------------------------------------------


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` as ``{key: value}``: the first occurrence of a key wins (the
    plugin sections at the end repeat some names), Slurm's ``(null)`` is an empty value."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _KEY.match(key) or key in config:
            continue
        config[key] = "" if value in NULLS else value
    return config


@dataclass(frozen=True)
class QosRow:
    name: str
    preempt: tuple[str, ...]
    preempt_mode: str
    grace_seconds: int | None
    """``None`` when Slurm printed something this parser does not read."""


QOS_FORMAT = "format=Name,Preempt,PreemptMode,GraceTime"


def parse_duration(text: str) -> int | None:
    """Slurm's ``[D-][HH:]MM:SS`` (GraceTime) in seconds; a plain number is seconds."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    match = _GRACE.match(text)
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_qos(text: str) -> dict[str, QosRow]:
    """``sacctmgr --noheader --parsable2 show qos`` with :data:`QOS_FORMAT`."""
    rows: dict[str, QosRow] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, preempt, mode, grace = ([*line.split("|"), "", "", ""])[:4]
        rows[name] = QosRow(
            name=name,
            preempt=tuple(p for p in preempt.split(",") if p),
            preempt_mode=mode.strip(),
            grace_seconds=parse_duration(grace) if grace.strip() else 0,
        )
    return rows


@dataclass(frozen=True)
class NodeRow:
    name: str
    address: str
    gpus: int
    gpu_types: tuple[str, ...]
    """Typed GPUs' types (``a100``); empty when the node's GPUs have no type."""


SINFO_FORMAT = "%N|%o|%G"


def parse_gpu_gres(gres: str) -> tuple[int, tuple[str, ...]]:
    """(GPU count, GPU types) of one node's GRES (``gpu:a100:2(S:0),gpu:4`` → ``(6, ("a100",))``)."""
    count, types = 0, []
    for item in _split_top_level("" if gres in NULLS else gres):
        parts = item.split("(")[0].split(":")
        if parts[0] != "gpu":
            continue
        number = parts[-1] if len(parts) > 1 else "1"
        count += int(number) if number.isascii() and number.isdigit() else 0
        if len(parts) == 3 and parts[1] not in types:
            types.append(parts[1])
    return count, tuple(types)


def parse_sinfo_nodes(text: str) -> list[NodeRow]:
    """``sinfo -h -N -o '%N|%o|%G'``: one row per node (sinfo repeats a node per partition)."""
    nodes: dict[str, NodeRow] = {}
    for line in text.splitlines():
        if line.count("|") < 2:
            continue
        name, address, gres = line.split("|", 2)
        if name in nodes:
            continue
        gpus, types = parse_gpu_gres(gres.strip())
        nodes[name] = NodeRow(name=name, address=address.strip(), gpus=gpus, gpu_types=types)
    return list(nodes.values())


def _words(value: str) -> set[str]:
    return {w.strip().lower() for w in value.split(",") if w.strip()}


# -- scontrol show config ------------------------------------------------------------------------


SLURM_CONF = "slurm.conf"


def accounting(cfg: Mapping[str, str]) -> list[Check]:
    why = "hpcplat reads history, usage and quotas from Slurm's accounting (sacct, sacctmgr)"
    kind = cfg.get("AccountingStorageType", "")
    if kind != "accounting_storage/slurmdbd":
        return [
            Check(
                "accounting",
                "accounting",
                Status.MISSING,
                f"AccountingStorageType = {kind or '(none)'}",
                fix=f"AccountingStorageType=accounting_storage/slurmdbd in {SLURM_CONF} (slurmdbd running)",
                why=why,
            )
        ]
    checks = [Check("accounting", "accounting", Status.OK, f"AccountingStorageType = {kind}")]
    enforce = _words(cfg.get("AccountingStorageEnforce", ""))
    lacking = [] if "all" in enforce else [w for w in ("associations", "limits", "qos") if w not in enforce]
    shown = cfg.get("AccountingStorageEnforce") or "(none)"
    if lacking:
        wanted = ",".join(sorted(enforce | {"associations", "limits", "qos"}))
        checks.append(
            Check(
                "accounting-enforce",
                "accounting enforcement",
                Status.DEGRADED,
                f"AccountingStorageEnforce = {shown} (lacks {', '.join(lacking)})",
                fix=f"AccountingStorageEnforce={wanted} in {SLURM_CONF}",
                why="without it a job may run under a QOS or account it may not use, past its team's quota",
            )
        )
    else:
        checks.append(
            Check(
                "accounting-enforce",
                "accounting enforcement",
                Status.OK,
                f"AccountingStorageEnforce = {shown}",
            )
        )
    return checks


def preemption(cfg: Mapping[str, str], site: SiteConfig) -> Check:
    kind = cfg.get("PreemptType", "") or "preempt/none"
    detail = f"PreemptType = {kind}, PreemptMode = {cfg.get('PreemptMode') or '(none)'}"
    if not any(t.preemptible for t in site.tiers.values()):
        return Check("preempt-type", "preemption", Status.OK, detail + " (no preemptible tier)")
    why = "the site file has preemptible tiers: higher tiers take their GPUs by preempting them by QOS"
    fix = f"PreemptType=preempt/qos and PreemptMode=REQUEUE in {SLURM_CONF}"
    if kind == "preempt/qos":
        return Check("preempt-type", "preemption", Status.OK, detail)
    status = Status.MISSING if kind == "preempt/none" else Status.DEGRADED
    return Check("preempt-type", "preemption", status, detail, fix=fix, why=why)


def preempt_signal(cfg: Mapping[str, str]) -> Check:
    params = cfg.get("SlurmctldParameters", "")
    words = _words(params)
    detail = f"SlurmctldParameters = {params or '(none)'}"
    if "preempt_send_user_signal" in words:
        return Check("preempt-signal", "preempt_send_user_signal", Status.OK, detail)
    wanted = ",".join([*(w for w in params.split(",") if w.strip()), "preempt_send_user_signal"])
    return Check(
        "preempt-signal",
        "preempt_send_user_signal",
        Status.DEGRADED,
        detail,
        fix=f"SlurmctldParameters={wanted} in {SLURM_CONF}",
        why="a preempted job then gets its --signal warning (SIGUSR1) at once and checkpoints within the "
        "grace time; without it only SIGTERM arrives",
    )


def requeue(cfg: Mapping[str, str]) -> Check:
    value = cfg.get("JobRequeue", "")
    if value == "1":
        return Check("requeue", "requeue allowed", Status.OK, "JobRequeue = 1")
    return Check(
        "requeue",
        "requeue allowed",
        Status.DEGRADED,
        f"JobRequeue = {value or '(unset)'}",
        fix=f"JobRequeue=1 in {SLURM_CONF}",
        why="jobs of non-preemptible tiers are then requeued after a node failure and can requeue themselves "
        "to resume from their checkpoint (preemptible tiers pass --requeue anyway)",
    )


def gres_types(cfg: Mapping[str, str]) -> Check:
    value = cfg.get("GresTypes", "")
    if "gpu" in _words(value):
        return Check("gres-types", "GRES types", Status.OK, f"GresTypes = {value}")
    wanted = ",".join([*(w for w in value.split(",") if w.strip()), "gpu"])
    return Check(
        "gres-types",
        "GRES types",
        Status.MISSING,
        f"GresTypes = {value or '(none)'}",
        fix=f"GresTypes={wanted} in {SLURM_CONF}, and Gres=gpu:TYPE:N on each GPU node with a gres.conf",
        why="hpcplat asks for GPUs as GRES (--gpus-per-node) and counts GPU-hours from gres/gpu",
    )


def cgroup(cfg: Mapping[str, str]) -> Check:
    task, proctrack = cfg.get("TaskPlugin", ""), cfg.get("ProctrackType", "")
    detail = f"TaskPlugin = {task or '(none)'}, ProctrackType = {proctrack or '(none)'}"
    wanted = []
    if "task/cgroup" not in _words(task):
        tasks = [w for w in task.split(",") if w.strip() and w.strip() != "task/none"]
        wanted.append(f"TaskPlugin={','.join([*tasks, 'task/cgroup'])}")
    if proctrack != "proctrack/cgroup":
        wanted.append("ProctrackType=proctrack/cgroup")
    if not wanted:
        return Check("cgroup", "cgroup confinement", Status.OK, detail)
    return Check(
        "cgroup",
        "cgroup confinement",
        Status.DEGRADED,
        detail,
        fix=f"{' and '.join(wanted)} in {SLURM_CONF}, with ConstrainDevices=yes in cgroup.conf",
        why="without cgroups a job can use GPUs and cores it was not given, and its processes can outlive "
        "it; the node agent then attributes GPUs by scontrol listpids only",
    )


def memory(cfg: Mapping[str, str]) -> Check:
    value = cfg.get("SelectTypeParameters", "")
    detail = f"SelectTypeParameters = {value or '(none)'}"
    if any(w.endswith("_memory") for w in _words(value)):
        return Check("memory", "memory scheduling", Status.OK, detail)
    return Check(
        "memory",
        "memory scheduling",
        Status.DEGRADED,
        detail,
        fix=f"SelectTypeParameters=CR_Core_Memory in {SLURM_CONF} (and RealMemory on each node)",
        why="without it --mem is not scheduled: jobs sharing a node can take each other's memory",
    )


def array_size(cfg: Mapping[str, str]) -> Check:
    value = cfg.get("MaxArraySize", "")
    size = int(value) if value.isascii() and value.isdigit() else None
    detail = f"MaxArraySize = {value or '(unset)'}"
    fix = f"MaxArraySize={SLURM_DEFAULT_MAX_ARRAY_SIZE} (or more) in {SLURM_CONF}"
    if size is None or size >= SLURM_DEFAULT_MAX_ARRAY_SIZE:
        return Check("array-size", "MaxArraySize", Status.OK, detail)
    if size <= 1:
        return Check(
            "array-size",
            "MaxArraySize",
            Status.MISSING,
            detail,
            fix=fix,
            why="sweeps are job arrays: with MaxArraySize 0 or 1 no sweep can be submitted",
        )
    return Check(
        "array-size",
        "MaxArraySize",
        Status.DEGRADED,
        detail,
        fix=fix,
        why="a sweep over more points than this is split into several arrays",
    )


def config_checks(cfg: Mapping[str, str], site: SiteConfig) -> list[Check]:
    """Every check over ``scontrol show config``."""
    return [
        *accounting(cfg),
        preemption(cfg, site),
        preempt_signal(cfg),
        requeue(cfg),
        gres_types(cfg),
        cgroup(cfg),
        memory(cfg),
        array_size(cfg),
    ]


# -- QOS -----------------------------------------------------------------------------------------


def tier_qos(qos: Mapping[str, QosRow], cfg: Mapping[str, str], site: SiteConfig) -> list[Check]:
    """The tiers' QOS exist; higher tiers preempt the preemptible ones; those requeue and have a
    grace time."""
    tiers = [t for t in site.tiers.values() if t.qos]
    if not tiers:
        reason = "the site file names no tier with a QOS"
        return [Check("tier-qos", "tiers' QOS", Status.SKIPPED, reason)]
    absent = [t for t in tiers if t.qos not in qos]
    checks = []
    if absent:
        names = ", ".join(f"{t.qos} (tier {t.name})" for t in absent)
        checks.append(
            Check(
                "tier-qos",
                "tiers' QOS",
                Status.MISSING,
                f"no such QOS: {names}",
                fix="; ".join(f"sacctmgr add qos {t.qos}" for t in absent)
                + " (and add it to the accounts' QOS lists)",
                why="each tier submits with --qos=<its QOS>: Slurm refuses a job whose QOS does not exist",
            )
        )
    else:
        checks.append(
            Check("tier-qos", "tiers' QOS", Status.OK, ", ".join(f"{t.name}={t.qos}" for t in tiers))
        )
    present = [t for t in tiers if t.qos in qos]
    victims = [t for t in present if t.preemptible]
    if not victims:
        return checks
    checks.append(_preempt_lists(qos, present, victims))
    checks.append(_preempt_modes(qos, cfg, victims))
    checks.append(_grace(qos, victims))
    return checks


def _preempt_lists(qos: Mapping[str, QosRow], present: Sequence[Any], victims: Sequence[Any]) -> Check:
    lacking = []
    for tier in present:
        if tier.preemptible:
            continue
        missing = [v.qos for v in victims if v.qos not in qos[tier.qos].preempt]
        if missing:
            lacking.append((tier.qos, missing))
    detail = "; ".join(f"{t.qos} preempts {','.join(qos[t.qos].preempt) or '(nothing)'}" for t in present)
    if not lacking:
        return Check("preempt-list", "QOS preempt lists", Status.OK, detail)
    return Check(
        "preempt-list",
        "QOS preempt lists",
        Status.DEGRADED,
        detail,
        fix="; ".join(f"sacctmgr modify qos {name} set Preempt+={','.join(m)}" for name, m in lacking),
        why="jobs of a higher tier take GPUs from a preemptible tier only when their QOS lists its QOS",
    )


def _preempt_modes(qos: Mapping[str, QosRow], cfg: Mapping[str, str], victims: Sequence[Any]) -> Check:
    cluster = cfg.get("PreemptMode", "")
    wrong, shown = [], []
    for tier in victims:
        own = qos[tier.qos].preempt_mode
        mode = cluster if own.lower() in ("", "cluster") else own
        shown.append(f"{tier.qos}: {mode or '(none)'}")
        if "requeue" not in _words(mode):
            wrong.append(tier.qos)
    detail = "; ".join(shown)
    if not wrong:
        return Check("preempt-mode", "preempt mode", Status.OK, detail)
    return Check(
        "preempt-mode",
        "preempt mode",
        Status.MISSING,
        detail,
        fix="; ".join(f"sacctmgr modify qos {name} set PreemptMode=requeue" for name in wrong)
        + f" (or PreemptMode=REQUEUE in {SLURM_CONF})",
        why="a preempted job must be requeued to resume from its checkpoint; otherwise it is cancelled "
        "or suspended holding its GPUs",
    )


def _grace(qos: Mapping[str, QosRow], victims: Sequence[Any]) -> Check:
    shown, zero = [], []
    for tier in victims:
        grace = qos[tier.qos].grace_seconds
        shown.append(f"{tier.qos}: GraceTime {'?' if grace is None else grace} s")
        if not grace:
            zero.append(tier.qos)
    detail = "; ".join(shown)
    if not zero:
        return Check("grace-time", "grace time", Status.OK, detail)
    return Check(
        "grace-time",
        "grace time",
        Status.DEGRADED,
        detail,
        fix="; ".join(f"sacctmgr modify qos {name} set GraceTime=120" for name in zero),
        why="the grace time is how long a preempted job has between SIGTERM and SIGKILL to save a "
        "checkpoint; with none, its work since the last checkpoint is lost",
    )


# -- nodes ---------------------------------------------------------------------------------------


def gpu_nodes(nodes: Sequence[NodeRow]) -> Check:
    with_gpus = [n for n in nodes if n.gpus]
    if not with_gpus:
        return Check(
            "gpu-gres",
            "GPU GRES on nodes",
            Status.MISSING,
            f"none of {len(nodes)} nodes reports gpu GRES",
            fix=f"Gres=gpu:TYPE:N on each GPU node's NodeName line in {SLURM_CONF}, and a gres.conf "
            "(AutoDetect=nvml) on the nodes",
            why="Slurm gives a job only GPUs it knows as GRES",
        )
    types = sorted({t for n in with_gpus for t in n.gpu_types})
    total = sum(n.gpus for n in with_gpus)
    kinds = f"types {', '.join(types)}" if types else "untyped (users cannot ask for a GPU model)"
    return Check(
        "gpu-gres", "GPU GRES on nodes", Status.OK, f"{total} GPUs on {len(with_gpus)} nodes, {kinds}"
    )


# -- the job root ------------------------------------------------------------------------------


def job_root(site: SiteConfig, st: Any, user_st: Any, *, user: str, uid: int, writable: bool) -> Check:
    """``st``: ``os.stat`` of the shared root (``None``: absent); ``user_st``: of ``<root>/<user>``;
    ``writable``: whether this user may create entries in the root."""
    root = site.shared_job_root()
    mine = root / user
    name, title = "job-root", "job root"
    why_shared = "every user's jobs live under <job_root>/<user>, on a file system all nodes mount"
    if st is None:
        return Check(
            name,
            title,
            Status.MISSING,
            f"{root} does not exist",
            fix=f"a shared root: install -d -m 1777 {root}; or per-user: install -d -m 0755 {root} "
            f"and install -d -o USER -m 0700 {root}/USER for each user ([submission] job_root names it)",
            why=why_shared,
        )
    if not stat.S_ISDIR(st.st_mode):
        return Check(
            name, title, Status.MISSING, f"{root} is not a directory", fix=f"make {root} a directory"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o002:
        if mode & stat.S_ISVTX:
            return Check(name, title, Status.OK, f"{root}: shared root, mode {mode:04o}")
        return Check(
            name,
            title,
            Status.DEGRADED,
            f"{root}: mode {mode:04o}, writable by all without the sticky bit",
            fix=f"chmod 1777 {root}",
            why="without the sticky bit anyone can rename or delete other users' job directories",
        )
    if user_st is None:
        if writable:
            return Check(name, title, Status.OK, f"{root}: mode {mode:04o}; {mine} is made on first submit")
        return Check(
            name,
            title,
            Status.MISSING,
            f"{root}: mode {mode:04o}, no {mine} and {user} cannot create it",
            fix=f"install -d -o {user} -m 0700 {mine} (one per user), or chmod 1777 {root}",
            why=why_shared,
        )
    user_mode = stat.S_IMODE(user_st.st_mode)
    if user_st.st_uid != uid:
        return Check(
            name,
            title,
            Status.MISSING,
            f"{mine} belongs to uid {user_st.st_uid}, not {user}",
            fix=f"chown {user} {mine}",
            why="hpcplat refuses a user root that is someone else's",
        )
    if user_mode & 0o077:
        return Check(
            name,
            title,
            Status.DEGRADED,
            f"{mine}: mode {user_mode:04o}",
            fix=f"chmod 0700 {mine}",
            why="a user's job root is private: others could read outputs or plant checkpoints",
        )
    return Check(name, title, Status.OK, f"{root}: mode {mode:04o}; {mine} is {user_mode:04o}")


__all__ = [
    "Check",
    "NodeRow",
    "QosRow",
    "Status",
    "config_checks",
    "exit_code",
    "gpu_nodes",
    "job_root",
    "overall",
    "parse_config",
    "parse_duration",
    "parse_gpu_gres",
    "parse_qos",
    "parse_sinfo_nodes",
    "tier_qos",
]
