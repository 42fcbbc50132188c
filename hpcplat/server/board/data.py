"""What the board's pages show: a filtered, sorted page of the runs the caller may read; metric
series downsampled on the server; the cluster from Slurm; a job's log tail."""

from __future__ import annotations

import json
import math
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from hpcplat.catalog.listing import RunRow, _like_literal, _row, parse_statuses
from hpcplat.catalog.store import Store
from hpcplat.server.identity import Identity
from hpcplat.server.policy import Policy
from hpcplat.slurm.client import SlurmClient
from hpcplat.slurm.models import JobInfo, NodeInfo
from hpcplat.slurm.state import JobState

SORTS = {"created": "r.created", "name": "r.name", "owner": "r.owner", "status": "r.status", "team": "r.team"}
PAGE_SIZES = (25, 50, 100, 200)
MAX_POINTS = 2000
LOG_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class RunFilter:
    user: str = ""
    status: str = ""
    tag: str = ""
    name: str = ""
    sort: str = "created"
    desc: bool = True
    limit: int = 50
    offset: int = 0


def hidden_versions(store: Store, policy: Policy, who: Identity) -> list[int]:
    """Ids of the restricted dataset versions whose runs ``who`` may not read (unless owner)."""
    if policy.is_admin(who):
        return []
    with store.read_conn() as conn:
        rows = conn.execute(sa.text("SELECT id, allowed_groups FROM dataset_version")).all()
    hidden = []
    for version_id, groups in rows:
        allowed = set(json.loads(groups) if isinstance(groups, str) else groups or [])
        if allowed and not who.groups & allowed:
            hidden.append(int(version_id))
    return hidden


def list_runs(store: Store, policy: Policy, who: Identity, f: RunFilter) -> tuple[list[RunRow], bool]:
    """A page of the runs ``who`` may read, and whether more follow. Runs that used a restricted
    dataset are left out in SQL, so paging stays right at any size."""
    where: list[str] = []
    binds: dict[str, Any] = {"limit": f.limit + 1, "offset": f.offset}
    if f.user:
        where.append("r.owner = :user")
        binds["user"] = f.user
    if f.tag:
        where.append("CAST(r.tags AS TEXT) LIKE :tag ESCAPE '\\'")
        binds["tag"] = f"%{_like_literal(json.dumps(f.tag))}%"
    if f.name:
        where.append("LOWER(r.name) LIKE :name ESCAPE '\\'")
        binds["name"] = f"%{_like_literal(f.name.lower())}%"
    statuses = parse_statuses(f.status)
    if statuses:
        where.append("r.status IN :statuses")
        binds["statuses"] = [s.value for s in statuses]
    hidden = hidden_versions(store, policy, who)
    if hidden:
        where.append(
            "(r.owner = :me OR NOT EXISTS (SELECT 1 FROM run_dataset rd WHERE rd.run_id = r.id"
            " AND rd.dataset_version_id IN :hidden))"
        )
        binds.update(me=who.user, hidden=hidden)
    order = f"{SORTS[f.sort]} {'DESC' if f.desc else 'ASC'}, r.id"
    # Only fixed clauses and the SORTS column are pasted; every value is a bound parameter.
    sql = (
        "SELECT r.id, r.name, r.owner, r.team, r.tier, r.status, r.tags, r.created, "  # noqa: S608
        "(SELECT a.job_id FROM attempt a WHERE a.run_id = r.id ORDER BY a.id DESC LIMIT 1) AS job_id "
        "FROM run r" + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order}"
        " LIMIT :limit OFFSET :offset"
    )
    query = sa.text(sql)
    for name in ("statuses", "hidden"):
        if name in binds:
            query = query.bindparams(sa.bindparam(name, expanding=True))
    with store.read_conn() as conn:
        rows = [_row(tuple(r)) for r in conn.execute(query, binds).all()]
    return rows[: f.limit], len(rows) > f.limit


# -- metric series ------------------------------------------------------------------------------


def lttb(points: Sequence[tuple[float, float]], threshold: int) -> list[tuple[float, float]]:
    """Largest-Triangle-Three-Buckets: ``threshold`` points that keep the series' visual shape
    (first and last kept; from each bucket the point making the largest triangle)."""
    n = len(points)
    if threshold >= n or threshold < 3:
        return list(points)
    out = [points[0]]
    every = (n - 2) / (threshold - 2)
    a = 0
    for i in range(threshold - 2):
        start, end = int(i * every) + 1, int((i + 1) * every) + 1
        nxt_start, nxt_end = end, min(int((i + 2) * every) + 1, n)
        span = points[nxt_start:nxt_end] or [points[-1]]
        avg_x = sum(p[0] for p in span) / len(span)
        avg_y = sum(p[1] for p in span) / len(span)
        ax, ay = points[a]
        best, best_area = start, -1.0
        for j in range(start, min(end, n - 1)):
            x, y = points[j]
            area = abs((ax - avg_x) * (y - ay) - (ax - x) * (avg_y - ay))
            if area > best_area:
                best, best_area = j, area
        out.append(points[best])
        a = best
    out.append(points[-1])
    return out


def series(store: Store, run_id: str, metric: str, max_points: int = MAX_POINTS) -> dict[str, Any]:
    """``{"metric", "total", "steps": [...], "values": [...]}``, at most ``max_points`` of them."""
    query = sa.text(
        "SELECT step, value FROM metric_point WHERE run_id = :run_id AND name = :name ORDER BY step"
    )
    with store.read_conn() as conn:
        rows = [(float(s), v) for s, v in conn.execute(query, {"run_id": run_id, "name": metric})]
    # NaN is stored as NULL (SQLite has no NaN), infinities as themselves. Only finite points are
    # downsampled; the others stay as gaps (null) in the chart and are listed by name, as a
    # diverging run should be visible, not hidden or an error (JSON has no NaN or infinity).
    finite = [(st, float(v)) for st, v in rows if v is not None and math.isfinite(v)]
    odd = [(st, _nonfinite_name(v)) for st, v in rows if v is None or not math.isfinite(v)]
    kept: list[tuple[float, float | None]] = [*lttb(finite, max_points)]
    kept += [(st, None) for st, _ in odd]
    kept.sort(key=lambda point: point[0])
    return {
        "metric": metric,
        "total": len(rows),
        "steps": [int(st) for st, _ in kept],
        "values": [v for _, v in kept],
        "nonfinite": [{"step": int(st), "value": name} for st, name in odd],
    }


def _nonfinite_name(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


# -- cluster ------------------------------------------------------------------------------------


@dataclass
class GpuCell:
    index: int
    job_id: str = ""
    user: str = ""


@dataclass
class NodeRow:
    node: NodeInfo
    gpus: list[GpuCell] = field(default_factory=list)


@dataclass
class QueueGroup:
    account: str
    tier: str
    running: int = 0
    pending: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class ClusterView:
    nodes: list[NodeRow]
    queue: list[QueueGroup]
    jobs: list[JobInfo]


MAX_INDEX_LOOKUPS = 64


def cluster_view(client: SlurmClient) -> ClusterView:
    """Nodes with a cell per GPU (which running job holds it), and the queue by account and tier."""
    nodes = client.nodes()
    jobs = client.jobs()
    running = [j for j in jobs if j.state is JobState.RUNNING]
    holders: dict[tuple[str, int], JobInfo] = {}
    for job in running[:MAX_INDEX_LOOKUPS]:
        if not _gpus_of(job):
            continue
        for host, indices in client.job_gpu_indices(job.job_id).items():
            for index in indices:
                holders[(host, index)] = job
    rows = []
    for node in sorted(nodes, key=lambda n: n.name):
        cells = []
        for index in range(node.gpus):
            holder = holders.get((node.name, index))
            cells.append(GpuCell(index, holder.job_id if holder else "", holder.user if holder else ""))
        rows.append(NodeRow(node, cells))
    groups: dict[tuple[str, str], QueueGroup] = {}
    for job in jobs:
        group = groups.setdefault((job.account, job.qos), QueueGroup(job.account, job.qos))
        if job.state is JobState.RUNNING:
            group.running += 1
        elif job.state is JobState.PENDING:
            group.pending += 1
            reason = job.reason or "None"
            group.reasons[reason] = group.reasons.get(reason, 0) + 1
    return ClusterView(rows, [groups[k] for k in sorted(groups)], jobs)


def _gpus_of(job: JobInfo) -> int:
    text = job.tres.get("gres/gpu", "0")
    return int(text) if text.isdigit() else 0


# -- log tail -----------------------------------------------------------------------------------


def log_tail(client: SlurmClient, job_id: str, owner: str, limit: int = LOG_TAIL_BYTES) -> tuple[str, str]:
    """(text, note): the end of the job's stdout as Slurm names it, read only when it is a regular
    file owned by the run's owner (never through a link: the server may run as root)."""
    paths = client.job_paths(job_id)
    path = paths.get("StdOut", "")
    if not path:
        return "", f"Slurm no longer knows job {job_id}'s output file"
    try:
        owner_uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        return "", f"the run's owner {owner!r} is not a user of the server's host"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return "", f"cannot read {path}: {exc.strerror or exc}"
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != owner_uid:
            return "", f"{path} is not a regular file of {owner}: not shown"
        fh.seek(max(info.st_size - limit, 0))
        data = fh.read(limit)
    cut = f" (last {limit // 1024} KiB)" if info.st_size > limit else ""
    return data.decode(errors="replace"), f"{path}{cut}"
