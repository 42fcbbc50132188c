"""Where a job goes: its spec resolved against the site configuration (tier → partition/QOS)."""

from __future__ import annotations

from dataclasses import dataclass

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


def place(spec: JobSpec, config: SiteConfig) -> Placement:
    """Resolve tier, partition, QOS and account; raises ``UsageError`` for an unknown tier."""
    tier = config.tier(spec.tier)
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
