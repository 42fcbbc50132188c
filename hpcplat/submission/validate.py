"""A job spec checked against the live cluster before anything is submitted or recorded.

Every problem is collected and reported at once, each saying what is allowed: an unknown tier or
partition, a QOS the partition or the account does not allow, more GPUs/CPUs/memory per node or
more nodes than the partition has, a time limit over the partition's or QOS's maximum, more than a
quota or a per-job limit of the QOS or the account tree allows (``GrpTRES``, ``MaxTRES``,
``MaxTRESPU``, ``MaxWall``: a job over one of them would wait forever), an unknown dataset
version, an Lmod module or a virtual environment that does not exist. Where a check cannot be
certain from this machine (no Lmod here, a venv on a filesystem this machine does not mount) it
warns instead of refusing. A request whose spec is itself invalid is still checked for the rest
(:func:`with_cluster_problems`), so that one mistake does not hide the others. Nothing here writes
anything.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hpcplat.errors import CommandError, HpcplatError, UsageError
from hpcplat.runner import Runner, run
from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.client import SlurmClient
from hpcplat.spec import JobSpec, SpecError, format_memory_mb, format_time_minutes, parse_memory_mb
from hpcplat.spec.model import PLACEHOLDER_COMMAND
from hpcplat.submission.facts import AssociationFacts, ClusterFacts, QosFacts, cluster_facts
from hpcplat.submission.placement import Placement, place

log = logging.getLogger(__name__)

LMOD_TIMEOUT_S = 20.0
"""Deadline for asking Lmod (one ``bash`` sourcing its init script) whether the modules exist."""
SET_BY = "set by the Slurm admin with sacctmgr"


class DatasetResolver(Protocol):
    def resolve_dataset(self, name: str, version: str = ..., **kw: Any) -> Any: ...


@dataclass(frozen=True)
class Checked:
    """A spec that passed validation, with what validation worked out."""

    spec: JobSpec
    placement: Placement
    datasets: dict[str, str | None] = field(default_factory=dict)
    """``name@version`` as written → the dataset's location (``None`` when unknown)."""
    resolved_datasets: list[tuple[str, str]] = field(default_factory=list)
    """(name, concrete version) pairs for the catalog."""
    warnings: list[str] = field(default_factory=list)
    """What could not be checked for certain from here (also logged as warnings)."""


@dataclass(frozen=True)
class Finding:
    """One problem, with the spec fields it was judged on (``resources.nodes``, ``tier``...): a
    finding about a field the user got wrong anyway is left out of :func:`with_cluster_problems`."""

    message: str
    fields: frozenset[str] = frozenset()


def _finding(message: str, *fields: str) -> Finding:
    return Finding(message, frozenset(fields))


def _list(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


_PLACE = ("tier", "partition")
_NODES = ("resources.nodes", *_PLACE)


def cluster_problems(spec: JobSpec, placement: Placement, facts: ClusterFacts) -> list[str]:
    """What the cluster would refuse (or never run), as sentences naming what is allowed."""
    return [f.message for f in cluster_findings(spec, placement, facts)]


def cluster_findings(spec: JobSpec, placement: Placement, facts: ClusterFacts) -> list[Finding]:
    """:func:`cluster_problems`, each with the fields it depends on."""
    problems: list[Finding] = []
    r = spec.resources
    part = facts.partition(placement.partition)
    if part is None:
        names = [p.name for p in facts.partitions]
        if placement.partition is None:
            problems.append(
                _finding(f"the cluster has no default partition; name one of: {_list(names)}", *_PLACE)
            )
        else:
            problems.append(
                _finding(f"unknown partition {placement.partition!r}; partitions: {_list(names)}", *_PLACE)
            )
    qos_names = [q.name for q in facts.qos]
    if placement.qos and facts.qos and placement.qos not in qos_names:
        problems.append(
            _finding(
                f"tier {placement.tier!r} uses QOS {placement.qos!r}, which Slurm does not know; "
                f"QOS: {_list(qos_names)}",
                "tier",
            )
        )
    if part is not None and placement.qos and part.allowed_qos and placement.qos not in part.allowed_qos:
        problems.append(
            _finding(
                f"partition {part.name!r} does not allow QOS {placement.qos!r} (tier {placement.tier}); "
                f"it allows: {_list(part.allowed_qos)}",
                *_PLACE,
            )
        )
    if facts.associations:
        accounts = sorted({a.account for a in facts.associations})
        account = placement.account
        if account is not None and account not in accounts:
            problems.append(
                _finding(
                    f"user {facts.user!r} cannot charge account {account!r}; "
                    f"your accounts: {_list(accounts)}",
                    "account",
                )
            )
        elif placement.qos:
            chosen = [a for a in facts.associations if account is None or a.account == account]
            allowed = sorted({q for a in chosen for q in a.qos})
            if allowed and placement.qos not in allowed:
                problems.append(
                    _finding(
                        f"account {account or '(default)'!r} may not use QOS {placement.qos!r} "
                        f"(tier {placement.tier}); allowed QOS for it: {_list(allowed)}",
                        "account",
                        "tier",
                    )
                )
    if part is not None:
        if r.gpus_per_node > part.max_gpus_per_node:
            problems.append(
                _finding(
                    f"{r.gpus_per_node} GPUs per node requested but the largest node of partition "
                    f"{part.name!r} has {part.max_gpus_per_node}; ask for at most {part.max_gpus_per_node} "
                    "per node (and more nodes) instead",
                    "resources.gpus_per_node",
                    *_PLACE,
                )
            )
        if part.node_count and r.nodes > part.node_count:
            problems.append(
                _finding(
                    f"{r.nodes} nodes requested but partition {part.name!r} has {part.node_count}", *_NODES
                )
            )
        cpus = r.tasks_per_node * r.cpus_per_task
        if part.max_cpus_per_node and cpus > part.max_cpus_per_node:
            problems.append(
                _finding(
                    f"{cpus} CPUs per node requested ({r.tasks_per_node} tasks x {r.cpus_per_task} CPUs) "
                    f"but the largest node of partition {part.name!r} has {part.max_cpus_per_node}",
                    "resources.tasks_per_node",
                    "resources.cpus_per_task",
                    *_PLACE,
                )
            )
        if r.memory_mb is not None and part.max_memory_mb and r.memory_mb > part.max_memory_mb:
            problems.append(
                _finding(
                    f"{format_memory_mb(r.memory_mb)} of memory per node requested but the largest node of "
                    f"partition {part.name!r} has {format_memory_mb(part.max_memory_mb)}",
                    "resources.memory",
                    *_PLACE,
                )
            )
        if part.max_time_minutes is not None and r.time_limit_min > part.max_time_minutes:
            problems.append(
                _finding(
                    f"time limit {format_time_minutes(r.time_limit_min)} is over partition {part.name!r}'s "
                    f"maximum of {format_time_minutes(part.max_time_minutes)}",
                    "resources.time",
                    *_PLACE,
                )
            )
    if placement.qos:
        qos = facts.qos_named(placement.qos)
        if qos is not None and qos.max_wall_minutes is not None and r.time_limit_min > qos.max_wall_minutes:
            problems.append(
                _finding(
                    f"time limit {format_time_minutes(r.time_limit_min)} is over QOS {qos.name!r}'s maximum "
                    f"of {format_time_minutes(qos.max_wall_minutes)}",
                    "resources.time",
                    "tier",
                )
            )
    problems.extend(limit_findings(spec, placement, facts))
    return problems


# -- quotas and per-job limits (sacctmgr) ---------------------------------------------------------

_TRES_FIELDS = {
    "gres/gpu": ("resources.gpus_per_node", "resources.nodes"),
    "cpu": ("resources.tasks_per_node", "resources.cpus_per_task", "resources.nodes"),
    "node": ("resources.nodes",),
    "mem": ("resources.memory", "resources.nodes"),
}


def parse_tres(text: str) -> dict[str, int]:
    """``gres/gpu=8,cpu=64,mem=100G`` → ``{"gres/gpu": 8, "cpu": 64, "mem": 102400}`` (memory in
    MB); TRES hpcplat does not request (``billing``, typed GPUs, licenses) are kept but never match."""
    out: dict[str, int] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            continue
        try:
            amount = parse_memory_mb(value) if key == "mem" else int(value)
        except ValueError:
            continue
        if amount >= 0:
            out[key] = amount
    return out


def job_tres(spec: JobSpec) -> dict[str, int]:
    """What the whole job holds at once, in sacctmgr's TRES names."""
    r = spec.resources
    tres = {"gres/gpu": r.total_gpus, "cpu": r.total_tasks * r.cpus_per_task, "node": r.nodes}
    if r.memory_mb is not None:
        tres["mem"] = r.memory_mb * r.nodes
    return tres


def node_tres(spec: JobSpec) -> dict[str, int]:
    """What the job holds on each node."""
    r = spec.resources
    tres = {"gres/gpu": r.gpus_per_node, "cpu": r.tasks_per_node * r.cpus_per_task}
    if r.memory_mb is not None:
        tres["mem"] = r.memory_mb
    return tres


def _amount(key: str, n: int) -> str:
    if key == "mem":
        return f"{format_memory_mb(n)} of memory"
    word = {"gres/gpu": "GPU", "cpu": "CPU", "node": "node"}.get(key, key)
    return f"{n} {word}" + ("" if n == 1 or key not in _TRES_FIELDS else "s")


def _asked(spec: JobSpec, key: str, n: int) -> str:
    r = spec.resources
    per_node = node_tres(spec).get(key)
    shown = format_memory_mb(n) if key == "mem" else str(n)
    if key != "node" and per_node is not None and r.nodes > 1:
        each = format_memory_mb(per_node) if key == "mem" else str(per_node)
        return f"{shown} ({r.nodes} nodes x {each})"
    return shown


@dataclass(frozen=True)
class _Holder:
    """Where a limit is set: a QOS, the user's association, or an account's."""

    what: str
    """``QOS 'normal' (tier normal)``, ``account 'nlp'``, ``user 'ana' in account 'nlp'``."""
    where: str
    """For the parenthesis: ``on QOS normal``, ``on account nlp's association``."""
    fields: tuple[str, ...]


def _qos_holder(qos: QosFacts, placement: Placement) -> _Holder:
    return _Holder(f"tier {placement.tier!r} (QOS {qos.name!r})", f"on QOS {qos.name}", ("tier",))


def _assoc_holder(assoc: AssociationFacts, account: str) -> _Holder:
    if assoc.user:
        return _Holder(
            f"user {assoc.user!r} in account {assoc.account!r}",
            f"on the association of user {assoc.user} with account {assoc.account}",
            ("account",),
        )
    if assoc.account == account:
        return _Holder(
            f"account {assoc.account!r}", f"on account {assoc.account}'s association", ("account",)
        )
    return _Holder(
        f"account {assoc.account!r} (which account {account!r} is part of)",
        f"on account {assoc.account}'s association",
        ("account",),
    )


def limit_findings(spec: JobSpec, placement: Placement, facts: ClusterFacts) -> list[Finding]:
    """Requests a QOS or association limit would keep pending forever (Slurm's reasons
    ``AssocGrpGRES``, ``QOSMaxGRESPerJob``...): more than a group quota (``GrpTRES`` of the QOS, of
    the user's association or of any account above it: every one of them holds), more than a
    per-job, per-node, per-user or per-account maximum (the first QOS or association that sets
    one wins, as in Slurm), or a time limit over an association's ``MaxWall``."""
    if not facts.limits_enforced:
        return []
    found: list[Finding] = []
    qos = facts.qos_named(placement.qos) if placement.qos else None
    account = placement.account
    chain = facts.association_chain(account) if account else []
    holders: list[tuple[_Holder, QosFacts | AssociationFacts]] = []
    if qos is not None:
        holders.append((_qos_holder(qos, placement), qos))
    holders.extend((_assoc_holder(a, account or ""), a) for a in chain)
    total = job_tres(spec)
    per_node = node_tres(spec)

    def over(holder: _Holder, key: str, limit: int, asked: int, *, text: str, name: str, tail: str) -> None:
        found.append(
            _finding(
                f"{holder.what} {text} {_amount(key, limit)}{tail} ({name} {key}={_raw(key, limit)} "
                f"{holder.where}, {SET_BY}); this job asks for "
                + (_raw(key, asked) if tail == " per node" else _asked(spec, key, asked)),
                *_TRES_FIELDS.get(key, ()),
                *holder.fields,
            )
        )

    # Group quotas: every level holds.
    for holder, source in holders:
        for key, limit in parse_tres(source.grp_tres).items():
            if total.get(key, 0) > limit:
                over(holder, key, limit, total[key], text="may use at most", name="GrpTRES", tail=" at once")
    if qos is not None:
        holder = _qos_holder(qos, placement)
        for name, text, limits in (
            ("MaxTRESPerUser", "lets one user hold at most", qos.max_tres_per_user),
            ("MaxTRESPerAccount", "lets one account hold at most", qos.max_tres_per_account),
        ):
            for key, limit in parse_tres(limits).items():
                if total.get(key, 0) > limit:
                    over(holder, key, limit, total[key], text=text, name=name, tail=" at once")
    # Per-job and per-node maximums: the first holder that sets one decides.
    for name, asked_tres, attr, text in (
        ("MaxTRES", total, "max_tres", "allows one job at most"),
        ("MaxTRESPerNode", per_node, "max_tres_per_node", "allows one job at most"),
    ):
        decided: set[str] = set()
        for holder, source in holders:
            for key, limit in parse_tres(getattr(source, attr)).items():
                if key in decided:
                    continue
                decided.add(key)
                if asked_tres.get(key, 0) > limit:
                    tail = " per node" if name == "MaxTRESPerNode" else ""
                    over(holder, key, limit, asked_tres[key], text=text, name=name, tail=tail)
    # MaxWall: the QOS's is checked with the partition's; an association's applies when the QOS
    # sets none.
    if qos is None or qos.max_wall_minutes is None:
        for holder, source in holders:
            wall = source.max_wall_minutes
            if wall is None:
                continue
            if spec.resources.time_limit_min > wall:
                found.append(
                    _finding(
                        f"time limit {format_time_minutes(spec.resources.time_limit_min)} is over the "
                        f"maximum of {format_time_minutes(wall)} for a job of {holder.what} (MaxWall "
                        f"{holder.where}, {SET_BY})",
                        "resources.time",
                        *holder.fields,
                    )
                )
            break
    return found


def _raw(key: str, n: int) -> str:
    return format_memory_mb(n) if key == "mem" else str(n)


# -- the software environment (checked on this machine) --------------------------------------------

_module_cache: dict[tuple[str, str, str], float] = {}
"""(module, MODULEPATH, init) → when Lmod last said it exists; only "exists" is remembered."""


def _lmod_init(config: SiteConfig, env: Mapping[str, str]) -> str | None:
    from hpcplat.provenance.lmod import find_lmod_init

    found = find_lmod_init(env)
    if found is not None:
        return found
    return next((p for p in config.lmod_init if Path(p).is_file()), None)


def environment_findings(
    spec: JobSpec,
    config: SiteConfig,
    *,
    environ: Mapping[str, str] | None = None,
    runner: Runner = run,
) -> tuple[list[Finding], list[str]]:
    """Lmod modules and the virtual environment, checked here: (problems, warnings)."""
    env = os.environ if environ is None else environ
    problems: list[Finding] = []
    warnings: list[str] = []
    e = spec.environment
    if e.modules:
        _check_modules(
            list(e.modules), config=config, env=env, runner=runner, problems=problems, warnings=warnings
        )
    if e.venv is not None:
        _check_venv(e.venv, spec.workdir, problems, warnings)
    return problems, warnings


def _check_modules(
    modules: list[str],
    *,
    config: SiteConfig,
    env: Mapping[str, str],
    runner: Runner,
    problems: list[Finding],
    warnings: list[str],
) -> None:
    from hpcplat.provenance.lmod import LmodUnavailable, module_availability

    shown = ", ".join(modules)
    modulepath = env.get("MODULEPATH", "")
    init = _lmod_init(config, env)
    if init is None:
        warnings.append(
            f"cannot check the modules {shown}: Lmod is not installed on this machine; "
            "they are loaded on the compute nodes when the job starts"
        )
        return
    if not modulepath.strip(":"):
        warnings.append(
            f"cannot check the modules {shown}: $MODULEPATH is empty on this machine; "
            "they are loaded on the compute nodes when the job starts"
        )
        return
    now = time.time()
    ttl = config.cache_seconds
    unknown = [m for m in modules if now - _module_cache.get((m, modulepath, init), -1e12) >= ttl]
    if not unknown:
        return
    try:
        available = module_availability(
            unknown, modulepath=modulepath, environ=env, runner=runner, init=init, timeout=LMOD_TIMEOUT_S
        )
    except (LmodUnavailable, CommandError) as exc:
        warnings.append(f"cannot check the modules {shown} with Lmod here ({exc.message})")
        return
    for i, module in enumerate(modules):
        if module not in available:
            continue
        if available[module]:
            _module_cache[(module, modulepath, init)] = now
        else:
            problems.append(
                _finding(
                    f"module {module!r} does not exist (Lmod `module is-avail` on this machine, "
                    f"MODULEPATH={modulepath}); `module spider {module.split('/')[0]}` lists the versions "
                    "there are",
                    f"environment.modules[{i}]",
                )
            )


def _check_venv(venv: str, workdir: str | None, problems: list[Finding], warnings: list[str]) -> None:
    path = Path(os.path.join(workdir or os.getcwd(), venv))
    fields = ("environment.venv", "workdir")
    if (path / "bin" / "activate").is_file():
        return
    if path.is_dir():
        problems.append(
            _finding(
                f"--venv {venv}: {path} is not a virtual environment (it has no bin/activate); "
                f"create one with `python3 -m venv {path}`",
                *fields,
            )
        )
        return
    if path.exists():
        problems.append(_finding(f"--venv {venv}: {path} is a file, not a virtual environment", *fields))
        return
    top = Path(path.anchor) / path.parts[1] if len(path.parts) > 1 else path
    if not top.exists():
        warnings.append(
            f"cannot check the virtual environment {path}: {top} does not exist on this machine; "
            "it must exist on the compute nodes"
        )
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    problems.append(
        _finding(
            f"--venv {venv}: no virtual environment at {path} (nothing there; {parent} exists); "
            f"create it with `python3 -m venv {path}` or fix the path",
            *fields,
        )
    )


def validate(
    spec: JobSpec,
    *,
    client: SlurmClient,
    config: SiteConfig,
    catalog: Callable[[], DatasetResolver | None] | None = None,
    runner: Runner = run,
    environ: Mapping[str, str] | None = None,
) -> Checked:
    """Check ``spec`` against the cluster (and the catalog for datasets, and this machine for
    modules and the venv); raise one :class:`UsageError` listing every problem. ``catalog`` gives
    the catalog; it is called only when the spec names datasets. What cannot be checked for certain
    is logged as a warning and kept in :attr:`Checked.warnings`."""
    checked, findings = _check(
        spec, client=client, config=config, catalog=catalog, runner=runner, environ=environ
    )
    if findings:
        raise refusal(spec, [f.message for f in findings])
    for warning in checked.warnings:
        log.warning("%s", warning)
    return checked


EXTRA_CHECK_TIMEOUT_S = 5.0
"""How long a request refused for other reasons waits for the cluster's problems to be added."""

T = TypeVar("T")


def _within(seconds: float, work: Callable[[], T]) -> T | None:
    """``work()``'s result if it finishes within ``seconds`` (in a daemon thread, whose commands
    keep their own deadlines), else ``None``; an :class:`HpcplatError` counts as no answer."""
    box: list[T] = []

    def target() -> None:
        try:
            box.append(work())
        except HpcplatError as exc:
            log.debug("cluster check failed: %s", exc)

    thread = threading.Thread(target=target, name="hpcplat-validate", daemon=True)
    thread.start()
    thread.join(seconds)
    return box[0] if box else None


def _cluster_check(
    spec: JobSpec, placement: Placement, client: SlurmClient, config: SiteConfig
) -> list[Finding]:
    facts = cluster_facts(client, cluster=config.cluster_name, max_age_s=config.cache_seconds)
    found = cluster_findings(spec, placement, facts)
    if found and facts.fetched_at:
        # Never refuse on the strength of a cached answer: ask Slurm again.
        facts = cluster_facts(client, cluster=config.cluster_name, fresh=True)
        found = cluster_findings(spec, placement, facts)
    return found


def _check(
    spec: JobSpec,
    *,
    client: SlurmClient,
    config: SiteConfig,
    catalog: Callable[[], DatasetResolver | None] | None,
    runner: Runner,
    environ: Mapping[str, str] | None,
    refused: bool = False,
) -> tuple[Checked, list[Finding]]:
    """Every check; nothing raised for what the user asked. ``refused``: the request is refused
    already (its spec is invalid), the cluster is only asked for more within a short deadline."""
    placing: list[str] = []
    placement = place(spec, config, placing)
    tier_problems = [_finding(p, "tier") for p in placing]
    software, warnings = environment_findings(spec, config, environ=environ, runner=runner)
    if refused or tier_problems or software:
        # Refused anyway: what the cluster adds must not hold the answer up (Slurm unreachable).
        found = _within(EXTRA_CHECK_TIMEOUT_S, lambda: _cluster_check(spec, placement, client, config))
        if found is None:
            log.debug(
                "no answer from the cluster within %s s: reporting the other problems", EXTRA_CHECK_TIMEOUT_S
            )
    else:
        found = _cluster_check(spec, placement, client, config)
    problems = [*tier_problems, *(found or []), *software]

    datasets: dict[str, str | None] = {}
    resolved: list[tuple[str, str]] = []
    if spec.datasets:
        resolver = catalog() if catalog is not None else None
        if resolver is None:
            problems.append(
                _finding(
                    "the spec names datasets but no catalog is configured to resolve them "
                    "(set [catalog] url in the site configuration or $HPCPLAT_CATALOG_URL)",
                    "datasets",
                )
            )
        else:
            for ref in spec.datasets:
                try:
                    record = resolver.resolve_dataset(ref.name, ref.version, verify=False)
                except UsageError as exc:
                    problems.append(
                        _finding(
                            f"dataset {ref}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""),
                            "datasets",
                        )
                    )
                    continue
                location = getattr(record, "location", None)
                datasets[str(ref)] = str(location) if location else None
                resolved.append((ref.name, str(getattr(record, "version", ref.version))))
    checked = Checked(
        spec=spec, placement=placement, datasets=datasets, resolved_datasets=resolved, warnings=warnings
    )
    return checked, problems


HINT = "nothing was submitted; fix the request (see `hpcplat submit --help`)"


def refusal(spec: JobSpec | None, problems: Sequence[str]) -> UsageError:
    """One error listing ``problems`` for the job ``spec`` (its name in the heading)."""
    named = spec is not None and spec.name and spec.command != PLACEHOLDER_COMMAND
    head = f"cannot submit {spec.name!r}" if spec is not None and named else "cannot submit the job"
    if len(problems) == 1:
        message = f"{head}: {problems[0]}"
    else:
        message = f"{head}, {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
    return UsageError(message, hint=HINT)


def _field_key(name: str) -> str:
    """``resources.nodes`` and ``environment.modules[2]`` as they are; ``environment.vars.X`` →
    ``environment.vars``; ``command[1]`` → ``command``."""
    parts = name.split("[", 1)[0].split(".")
    return ".".join(parts[:2]) if parts[0] in ("resources", "environment") else parts[0]


def with_cluster_problems(
    error: UsageError,
    shown: Sequence[str],
    spec_error: SpecError,
    *,
    client: SlurmClient,
    config: SiteConfig,
    catalog: Callable[[], DatasetResolver | None] | None = None,
    runner: Runner = run,
    environ: Mapping[str, str] | None = None,
) -> UsageError:
    """``error`` — a request whose spec is invalid, its problems ``shown`` as the user should read
    them — together with what validation finds in the rest of the request (judged on
    :attr:`SpecError.partial`, leaving out what depends on the invalid fields). ``error`` itself
    when there is nothing more, or when the cluster cannot be asked."""
    partial = spec_error.partial
    if partial is None:
        return error
    invalid = {_field_key(p.field) for p in spec_error.problems}
    try:
        _, findings = _check(
            partial,
            client=client,
            config=config,
            catalog=catalog,
            runner=runner,
            environ=environ,
            refused=True,
        )
    except HpcplatError as exc:
        log.debug("could not check the rest of an invalid request: %s", exc)
        return error
    more = [f.message for f in findings if not {_field_key(name) for name in f.fields} & invalid]
    if not more:
        return error
    return refusal(partial, [*shown, *more])
