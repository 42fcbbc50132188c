"""Where a job goes: its spec resolved against the site configuration (tier → partition/QOS)."""

from __future__ import annotations

from dataclasses import dataclass

from hpcplat.errors import UsageError
from hpcplat.siteconfig import SiteConfig
from hpcplat.spec import JobSpec


@dataclass(frozen=True)
class Placement:
    """The Slurm-level choices for one spec: what ``#SBATCH`` lines and validation use."""

    tier: str | None
    partition: str | None
    """``None`` leaves the choice to Slurm (its default partition)."""
    qos: str | None
    account: str | None
    preemptible: bool
    warn_seconds: int
    max_requeues: int


def place(spec: JobSpec, config: SiteConfig, problems: list[str] | None = None) -> Placement:
    """Resolve tier, partition, QOS and account. An unknown tier raises ``UsageError``; given
    ``problems``, it is added there instead and the job is placed as if it named no tier (so that
    the other checks still run and every problem is reported at once)."""
    try:
        tier = config.tier(spec.tier)
    except UsageError as exc:
        if problems is None:
            raise
        problems.append(f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
        tier = None
    partition = spec.partition or (tier.partition if tier else None) or config.default_partition
    warn = spec.signal_warn_s or (tier.warn_seconds if tier else None) or config.warn_seconds
    if spec.max_requeues is not None:
        max_requeues = spec.max_requeues
    elif tier is not None and tier.max_requeues is not None:
        max_requeues = tier.max_requeues
    else:
        max_requeues = config.max_requeues
    return Placement(
        tier=tier.name if tier else None,
        partition=partition,
        qos=tier.qos if tier else None,
        account=spec.account or config.default_account,
        preemptible=bool(tier and tier.preemptible),
        warn_seconds=warn,
        max_requeues=max_requeues,
    )
