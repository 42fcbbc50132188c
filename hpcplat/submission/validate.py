"""A job spec checked against the live cluster before anything is submitted or recorded.

Every problem is collected and reported at once, each saying what is allowed: an unknown tier or
partition, a QOS the partition or the account does not allow, more GPUs/CPUs/memory per node or
more nodes than the partition has, a time limit over the partition's or QOS's maximum, an unknown
dataset version. Nothing here writes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hpcplat.errors import UsageError
from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.client import SlurmClient
from hpcplat.spec import JobSpec, format_memory_mb, format_time_minutes
from hpcplat.submission.facts import ClusterFacts, cluster_facts
from hpcplat.submission.placement import Placement, place


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


def _list(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(sorted(names)) or "(none)"


def cluster_problems(spec: JobSpec, placement: Placement, facts: ClusterFacts) -> list[str]:
    """What the cluster would refuse (or never run), as sentences naming what is allowed."""
    problems: list[str] = []
    r = spec.resources
    part = facts.partition(placement.partition)
    if part is None:
        names = [p.name for p in facts.partitions]
        if placement.partition is None:
            problems.append(f"the cluster has no default partition; name one of: {_list(names)}")
        else:
            problems.append(f"unknown partition {placement.partition!r}; partitions: {_list(names)}")
    qos_names = [q.name for q in facts.qos]
    if placement.qos and facts.qos and placement.qos not in qos_names:
        problems.append(
            f"tier {placement.tier!r} uses QOS {placement.qos!r}, which Slurm does not know; "
            f"QOS: {_list(qos_names)}"
        )
    if part is not None and placement.qos and part.allowed_qos and placement.qos not in part.allowed_qos:
        problems.append(
            f"partition {part.name!r} does not allow QOS {placement.qos!r} (tier {placement.tier}); "
            f"it allows: {_list(part.allowed_qos)}"
        )
    if facts.associations:
        accounts = sorted({a.account for a in facts.associations})
        account = placement.account
        if account is not None and account not in accounts:
            problems.append(
                f"user {facts.user!r} cannot charge account {account!r}; your accounts: {_list(accounts)}"
            )
        elif placement.qos:
            chosen = [a for a in facts.associations if account is None or a.account == account]
            allowed = sorted({q for a in chosen for q in a.qos})
            if allowed and placement.qos not in allowed:
                problems.append(
                    f"account {account or '(default)'!r} may not use QOS {placement.qos!r} "
                    f"(tier {placement.tier}); allowed QOS for it: {_list(allowed)}"
                )
    if part is not None:
        if r.gpus_per_node > part.max_gpus_per_node:
            problems.append(
                f"{r.gpus_per_node} GPUs per node requested but the largest node of partition {part.name!r} "
                f"has {part.max_gpus_per_node}; ask for at most {part.max_gpus_per_node} per node "
                "(and more nodes) instead"
            )
        if part.node_count and r.nodes > part.node_count:
            problems.append(f"{r.nodes} nodes requested but partition {part.name!r} has {part.node_count}")
        cpus = r.tasks_per_node * r.cpus_per_task
        if part.max_cpus_per_node and cpus > part.max_cpus_per_node:
            problems.append(
                f"{cpus} CPUs per node requested ({r.tasks_per_node} tasks x {r.cpus_per_task} CPUs) but the "
                f"largest node of partition {part.name!r} has {part.max_cpus_per_node}"
            )
        if r.memory_mb is not None and part.max_memory_mb and r.memory_mb > part.max_memory_mb:
            problems.append(
                f"{format_memory_mb(r.memory_mb)} of memory per node requested but the largest node of "
                f"partition {part.name!r} has {format_memory_mb(part.max_memory_mb)}"
            )
        if part.max_time_minutes is not None and r.time_limit_min > part.max_time_minutes:
            problems.append(
                f"time limit {format_time_minutes(r.time_limit_min)} is over partition {part.name!r}'s "
                f"maximum of {format_time_minutes(part.max_time_minutes)}"
            )
    if placement.qos:
        qos = facts.qos_named(placement.qos)
        if qos is not None and qos.max_wall_minutes is not None and r.time_limit_min > qos.max_wall_minutes:
            problems.append(
                f"time limit {format_time_minutes(r.time_limit_min)} is over QOS {qos.name!r}'s maximum "
                f"of {format_time_minutes(qos.max_wall_minutes)}"
            )
    return problems


def validate(
    spec: JobSpec,
    *,
    client: SlurmClient,
    config: SiteConfig,
    catalog: Callable[[], DatasetResolver | None] | None = None,
) -> Checked:
    """Check ``spec`` against the cluster (and the catalog for datasets); raise one
    :class:`UsageError` listing every problem. ``catalog`` gives the catalog; it is called only
    when the spec names datasets."""
    problems: list[str] = []
    try:
        placement = place(spec, config)
    except UsageError as exc:
        raise UsageError(f"cannot submit {spec.name!r}: {exc.message}", hint=exc.hint) from None
    facts = cluster_facts(client, cluster=config.cluster_name, max_age_s=config.cache_seconds)
    found = cluster_problems(spec, placement, facts)
    if found and facts.fetched_at:
        # Never refuse on the strength of a cached answer: ask Slurm again.
        facts = cluster_facts(client, cluster=config.cluster_name, fresh=True)
        found = cluster_problems(spec, placement, facts)
    problems.extend(found)

    datasets: dict[str, str | None] = {}
    resolved: list[tuple[str, str]] = []
    if spec.datasets:
        resolver = catalog() if catalog is not None else None
        if resolver is None:
            problems.append(
                "the spec names datasets but no catalog is configured to resolve them "
                "(set [catalog] url in the site configuration or $HPCPLAT_CATALOG_URL)"
            )
        else:
            for ref in spec.datasets:
                try:
                    record = resolver.resolve_dataset(ref.name, ref.version, verify=False)
                except UsageError as exc:
                    problems.append(f"dataset {ref}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
                    continue
                location = getattr(record, "location", None)
                datasets[str(ref)] = str(location) if location else None
                resolved.append((ref.name, str(getattr(record, "version", ref.version))))
    if problems:
        head = f"cannot submit {spec.name!r}"
        if len(problems) == 1:
            message = f"{head}: {problems[0]}"
        else:
            message = f"{head}, {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
        raise UsageError(message, hint="nothing was submitted; fix the request (see `hpcplat submit --help`)")
    return Checked(spec=spec, placement=placement, datasets=datasets, resolved_datasets=resolved)
