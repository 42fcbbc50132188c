"""GPU-hour accounting per team (Slurm account) and user, from Slurm's own accounting (slurmdbd).

One ``sacct`` call for the period and one ``sacctmgr`` call for the quotas; nothing is counted
twice: jobs are taken at the allocation level (``sacct -X``), each requeued attempt with its own
elapsed time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hpcplat.slurm.client import SlurmClient


@dataclass
class UsageRow:
    account: str
    user: str
    jobs: int = 0
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    states: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class UsageReport:
    since: datetime
    until: datetime | None
    rows: list[UsageRow]
    quotas: dict[str, str]
    """Account → its GrpTRES (``gres/gpu=8``), for accounts with a quota."""

    @property
    def total_gpu_hours(self) -> float:
        return sum(r.gpu_hours for r in self.rows)


def gpu_usage(
    client: SlurmClient,
    *,
    since: datetime,
    until: datetime | None = None,
    accounts: Sequence[str] = (),
    users: Sequence[str] = (),
    by_user: bool = True,
) -> UsageReport:
    """GPU- and CPU-hours per account (and user) over ``[since, until)``."""
    rows: dict[tuple[str, str], UsageRow] = {}
    for record in client.usage(since=since, until=until, accounts=accounts, users=users):
        key = (record.account, record.user if by_user else "")
        row = rows.setdefault(key, UsageRow(account=key[0], user=key[1]))
        row.jobs += 1
        row.gpu_hours += record.gpu_hours
        try:
            cpus = int(record.alloc_tres.get("cpu", "0"))
        except ValueError:
            cpus = 0
        row.cpu_hours += cpus * record.elapsed_s / 3600.0
        row.states[record.state.value] = row.states.get(record.state.value, 0) + 1
    quotas = {a.account: a.grp_tres for a in client.associations() if a.grp_tres and not a.user and a.account}
    ordered = sorted(rows.values(), key=lambda r: (-r.gpu_hours, r.account, r.user))
    return UsageReport(since=since, until=until, rows=ordered, quotas=quotas)
