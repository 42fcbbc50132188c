"""Tiers (QOS), teams (accounts) and the user associations of the sandbox, set with sacctmgr.

Every step first reads what exists, so running it again changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from hpcplat.errors import SlurmError
from hpcplat.runner import run

log = logging.getLogger(__name__)

SACCTMGR_TIMEOUT_S = 30.0
USER = "root"


@dataclass(frozen=True)
class Tier:
    """A QOS: its priority, whom it may preempt, and how it is preempted itself."""

    name: str
    priority: int
    preempt: str = ""
    preempt_mode: str = ""
    grace_time_s: int = 0

    @property
    def preemptible(self) -> bool:
        return self.preempt_mode == "requeue"

    def settings(self) -> list[str]:
        values = [f"priority={self.priority}", f"preempt={self.preempt}"]
        if self.preempt_mode:
            values.append(f"preemptmode={self.preempt_mode}")
        values.append(f"gracetime={self.grace_time_s}")
        return values

    def shown(self) -> str:
        """The line ``sacctmgr -P show qos format=name,priority,preempt,preemptmode,gracetime``
        prints once these settings are in place."""
        grace = (
            f"{self.grace_time_s // 3600:02d}:{self.grace_time_s // 60 % 60:02d}:{self.grace_time_s % 60:02d}"
        )
        return "|".join([self.name, str(self.priority), self.preempt, self.preempt_mode or "cluster", grace])


@dataclass(frozen=True)
class Team:
    """An account under root, with an optional GPU quota (GrpTRES=gres/gpu=N)."""

    name: str
    gpu_quota: int | None = None


TIERS = (
    Tier("urgent", priority=1000, preempt="preemptible"),
    Tier("normal", priority=100, preempt="preemptible"),
    Tier("preemptible", priority=0, preempt_mode="requeue", grace_time_s=10),
)
TEAMS = (Team("vision"), Team("nlp", gpu_quota=8))
DEFAULT_TEAM = "vision"
DEFAULT_TIER = "normal"


class Accounts:
    """sacctmgr for one cluster, with the environment that points at the sandbox."""

    def __init__(self, cluster: str, env: Mapping[str, str]) -> None:
        self.cluster = cluster
        self.env = dict(env)

    def sacctmgr(self, *args: str) -> str:
        result = run(["sacctmgr", "-i", *args], timeout=SACCTMGR_TIMEOUT_S, env=self.env, error=SlurmError)
        return result.stdout

    def names(self, entity: str, field: str, *where: str) -> set[str]:
        out = self.sacctmgr("-n", "-P", "show", entity, *where, f"format={field}")
        return {line.strip() for line in out.splitlines() if line.strip()}

    def ensure_cluster(self) -> None:
        if self.cluster not in self.names("cluster", "cluster"):
            self.sacctmgr("add", "cluster", self.cluster)

    def gpu_tres_known(self) -> bool:
        """True once slurmctld has registered gres/gpu (AccountingStorageTRES) with slurmdbd."""
        out = self.sacctmgr("-n", "-P", "show", "tres", "format=type,name")
        return "gres|gpu" in out.split()

    def ensure_all(self) -> None:
        """Cluster, QOS tiers, teams with quotas, and the user's associations.

        GPU quotas need the gres/gpu TRES, which slurmctld registers when it starts.
        """
        self.ensure_cluster()
        existing_qos = self.names("qos", "name")
        for tier in TIERS:
            if tier.name not in existing_qos:
                self.sacctmgr("add", "qos", tier.name)
        # Modify only what differs: sacctmgr reports a "preemption loop" when asked to set a
        # preempt list that is already set.
        shown = set(self.names("qos", "name,priority,preempt,preemptmode,gracetime"))
        for tier in TIERS:
            if tier.shown() not in shown:
                self.sacctmgr("modify", "qos", "where", f"name={tier.name}", "set", *tier.settings())
        existing_accounts = self.names("account", "account")
        for team in TEAMS:
            if team.name not in existing_accounts:
                self.sacctmgr(
                    "add", "account", team.name, f"cluster={self.cluster}", "parent=root",
                    f"description=team {team.name}", "organization=sandbox",
                )  # fmt: skip
        assocs = self.names("assoc", "account,user,grptres,qos,defaultqos", f"cluster={self.cluster}")
        for team in TEAMS:
            quota = f"gres/gpu={team.gpu_quota}" if team.gpu_quota is not None else ""
            if f"{team.name}||{quota}" not in {a.rsplit("|", 2)[0] for a in assocs}:
                self.sacctmgr(
                    "modify", "account", "where", f"name={team.name}", f"cluster={self.cluster}",
                    "set", f"grptres={quota or 'gres/gpu=-1'}",
                )  # fmt: skip
        user_accounts = {a.split("|")[0] for a in assocs if a.split("|")[1] == USER}
        missing = [team.name for team in TEAMS if team.name not in user_accounts]
        if missing:
            self.sacctmgr(
                "add", "user", USER, f"account={','.join(missing)}", f"cluster={self.cluster}",
                f"defaultaccount={DEFAULT_TEAM}",
            )  # fmt: skip
        qos = ",".join(sorted(t.name for t in TIERS))
        wanted = {f"{team.name}|{USER}||{qos}|{DEFAULT_TIER}" for team in TEAMS}
        default_account = self.names("user", "defaultaccount", USER)
        if missing or not wanted <= assocs or default_account != {DEFAULT_TEAM}:
            self.sacctmgr(
                "modify", "user", "where", f"name={USER}", f"cluster={self.cluster}", "set",
                f"qos={qos}", f"defaultqos={DEFAULT_TIER}", f"defaultaccount={DEFAULT_TEAM}",
            )  # fmt: skip
