"""What validation needs to know about the cluster, fetched once and reused for a few minutes.

Asking Slurm about partitions, nodes, QOS, associations and their limits (``GrpTRES``,
``MaxTRES``, ``MaxWall`` of the QOS, of the user's association and of the account tree above it)
takes several commands (``scontrol``, ``sacctmgr``, each with the client's deadline); a submission
loop must not repeat them for every job. The answer is kept in memory
and in a small JSON file under ``$XDG_CACHE_HOME/hpcplat/`` for ``submission.cache_seconds``
(default 300). A cached answer is only ever trusted to *accept* a job: before a job is rejected,
validation asks Slurm again (:func:`cluster_facts` with ``fresh=True``), so a stale cache never
refuses a valid job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpcplat import siteconfig
from hpcplat.errors import SlurmError
from hpcplat.files import atomic_write
from hpcplat.slurm.client import SlurmClient
from hpcplat.slurm.models import Association

log = logging.getLogger(__name__)

CACHE_FORMAT = 2


@dataclass(frozen=True)
class PartitionFacts:
    name: str
    default: bool
    state: str
    max_time_minutes: int | None
    allowed_qos: tuple[str, ...]
    node_count: int
    max_gpus_per_node: int
    max_cpus_per_node: int
    max_memory_mb: int


@dataclass(frozen=True)
class QosFacts:
    name: str
    max_wall_minutes: int | None
    grp_tres: str = ""
    """Limits as sacctmgr prints them (``gres/gpu=8,cpu=64``); empty when none is set."""
    max_tres: str = ""
    max_tres_per_node: str = ""
    max_tres_per_user: str = ""
    max_tres_per_account: str = ""


@dataclass(frozen=True)
class AssociationFacts:
    account: str
    qos: tuple[str, ...]
    user: str = ""
    """Empty for an account's own association (where a team's quota is set)."""
    parent: str = ""
    grp_tres: str = ""
    max_tres: str = ""
    max_tres_per_node: str = ""
    max_wall_minutes: int | None = None


@dataclass(frozen=True)
class ClusterFacts:
    user: str
    partitions: tuple[PartitionFacts, ...]
    qos: tuple[QosFacts, ...]
    associations: tuple[AssociationFacts, ...]
    """The user's own associations (empty when accounting is off)."""
    fetched_at: float = field(default=0.0)
    accounts: tuple[AssociationFacts, ...] = ()
    """The associations of the user's accounts themselves and of their parents up to ``root``."""
    limits_enforced: bool = True
    """``AccountingStorageEnforce`` includes ``limits`` (or ``safe``): QOS and association limits hold."""

    def partition(self, name: str | None) -> PartitionFacts | None:
        for p in self.partitions:
            if (name is None and p.default) or p.name == name:
                return p
        return None

    def qos_named(self, name: str) -> QosFacts | None:
        return next((q for q in self.qos if q.name == name), None)

    def association_chain(self, account: str) -> list[AssociationFacts]:
        """The user's association with ``account``, then the account's, then its parents' up to
        ``root``: the order in which Slurm looks for a limit."""
        chain = [a for a in self.associations if a.account == account]
        by_name = {a.account: a for a in self.accounts}
        name: str | None = account
        while name and name in by_name and all(a is not by_name[name] for a in chain):
            chain.append(by_name[name])
            name = by_name[name].parent
        return chain

    def to_json(self) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterFacts:
        if data.get("format") != CACHE_FORMAT:
            raise ValueError("old cache format")
        return cls(
            user=data["user"],
            partitions=tuple(
                PartitionFacts(**{**p, "allowed_qos": tuple(p["allowed_qos"])}) for p in data["partitions"]
            ),
            qos=tuple(QosFacts(**q) for q in data["qos"]),
            associations=tuple(_association(a) for a in data["associations"]),
            fetched_at=float(data["fetched_at"]),
            accounts=tuple(_association(a) for a in data["accounts"]),
            limits_enforced=bool(data["limits_enforced"]),
        )


def _association(data: dict[str, Any]) -> AssociationFacts:
    return AssociationFacts(**{**data, "qos": tuple(data["qos"])})


def _association_facts(a: Association) -> AssociationFacts:
    return AssociationFacts(
        account=a.account,
        qos=tuple(a.qos),
        user=a.user,
        parent=a.parent,
        grp_tres=a.grp_tres,
        max_tres=a.max_tres,
        max_tres_per_node=a.max_tres_per_node,
        max_wall_minutes=a.max_wall_minutes,
    )


MAX_ACCOUNT_DEPTH = 16


def _account_chain(client: SlurmClient, names: set[str]) -> tuple[AssociationFacts, ...]:
    """The account associations of ``names`` and of all their parents: one sacctmgr call per
    level of the account tree."""
    found: dict[str, AssociationFacts] = {}
    wanted = set(names)
    for _ in range(MAX_ACCOUNT_DEPTH):
        if not wanted:
            break
        for a in client.associations(accounts=sorted(wanted)):
            if not a.user and a.account in wanted:
                found[a.account] = _association_facts(a)
        wanted = {f.parent for f in found.values() if f.parent and f.parent not in found}
    return tuple(found[name] for name in sorted(found))


def _limits_enforced(client: SlurmClient) -> bool:
    enforce = client.config().get("AccountingStorageEnforce", "")
    return bool({"limits", "safe"} & {w.strip().lower() for w in enforce.split(",")})


def current_user() -> str:
    """The user from the kernel's uid (``siteconfig.current_user``), never from ``$USER``."""
    return siteconfig.current_user()


def fetch(client: SlurmClient, *, user: str | None = None) -> ClusterFacts:
    """Ask Slurm (several commands)."""
    user = user or current_user()
    nodes = client.nodes()
    partitions = []
    for part in client.partitions():
        members = [n for n in nodes if part.name in n.partitions]
        partitions.append(
            PartitionFacts(
                name=part.name,
                default=part.default,
                state=part.state,
                max_time_minutes=part.max_time_minutes,
                allowed_qos=tuple(part.allowed_qos),
                node_count=len(members),
                max_gpus_per_node=max([part.max_gpus_per_node, *(n.gpus for n in members)]),
                max_cpus_per_node=max((n.cpus for n in members), default=0),
                max_memory_mb=max((n.memory_mb for n in members), default=0),
            )
        )
    accounts: tuple[AssociationFacts, ...] = ()
    try:
        qos = tuple(
            QosFacts(
                q.name,
                q.max_wall_minutes,
                grp_tres=q.grp_tres,
                max_tres=q.max_tres,
                max_tres_per_node=q.max_tres_per_node,
                max_tres_per_user=q.max_tres_per_user,
                max_tres_per_account=q.max_tres_per_account,
            )
            for q in client.qos()
        )
        associations = tuple(_association_facts(a) for a in client.associations(user=user) if a.user == user)
        if associations:
            accounts = _account_chain(client, {a.account for a in associations})
    except SlurmError as exc:
        # No accounting (or sacctmgr unusable): account and QOS checks are left to sbatch itself.
        log.warning(
            "cannot read QOS and associations from accounting, skipping those checks: %s", exc.message
        )
        qos, associations, accounts = (), (), ()
    try:
        enforced = _limits_enforced(client)
    except SlurmError as exc:
        log.warning("cannot read AccountingStorageEnforce, assuming limits are enforced: %s", exc.message)
        enforced = True
    return ClusterFacts(
        user=user,
        partitions=tuple(partitions),
        qos=qos,
        associations=associations,
        fetched_at=time.time(),
        accounts=accounts,
        limits_enforced=enforced,
    )


_memory: dict[str, ClusterFacts] = {}


def _cache_file(key: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hpcplat" / f"cluster-facts-{key}.json"


def _cache_key(cluster: str | None, user: str) -> str:
    where = f"{cluster or ''}|{os.environ.get('SLURM_CONF', '')}|{user}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def cluster_facts(
    client: SlurmClient,
    *,
    cluster: str | None = None,
    max_age_s: float = 300.0,
    fresh: bool = False,
) -> ClusterFacts:
    """The cluster's facts, from memory, the cache file, or Slurm (``fresh`` forces Slurm)."""
    user = current_user()
    key = _cache_key(cluster, user)
    now = time.time()
    if not fresh and max_age_s > 0:
        held = _memory.get(key)
        if held is not None and now - held.fetched_at < max_age_s:
            return held
        path = _cache_file(key)
        try:
            facts = ClusterFacts.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            facts = None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("ignoring unreadable cluster cache %s: %s", path, exc)
            facts = None
        if facts is not None and now - facts.fetched_at < max_age_s:
            _memory[key] = facts
            return facts
    facts = fetch(client, user=user)
    _memory[key] = facts
    _store(_cache_file(key), facts)
    return facts


def _store(path: Path, facts: ClusterFacts) -> None:
    """Write the cache atomically; a failure only costs the next process a refetch."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(facts.to_json()))
    except OSError as exc:
        log.debug("could not write the cluster cache %s: %s", path, exc)


def forget() -> None:
    """Drop the in-memory copy (tests, or after changing the cluster)."""
    _memory.clear()
