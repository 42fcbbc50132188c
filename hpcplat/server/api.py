"""API v1 (``/api/v1``): thin handlers over the catalog's queries, each behind identity and policy.

Every route takes the caller's :class:`~hpcplat.server.identity.Identity` (dependency
:func:`caller`: a munge credential bound to the request, or the Unix socket's peer credentials);
without one the answer is 401 and the handler never runs. Handlers are plain functions, run in
FastAPI's thread pool: the catalog's store is synchronous.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlmodel import col, select

from hpcplat.catalog import datasets as ds
from hpcplat.catalog import ingest, listing, queries
from hpcplat.catalog.models import (
    Attempt,
    AttemptPublic,
    Dataset,
    DatasetVersion,
    DatasetVersionPublic,
    Event,
    EventPublic,
    Run,
    RunPublic,
)
from hpcplat.catalog.service import Catalog
from hpcplat.errors import UsageError
from hpcplat.provenance.manifest import FileEntry, Manifest
from hpcplat.server.identity import (
    AuthError,
    Identity,
    MungeVerifier,
    identity_of,
    parse_authorization,
    request_payload,
)
from hpcplat.server.policy import Policy

PREFIX = "/api/v1"
PEER_KEY = "hpcplat.peer"
"""``scope["extensions"][PEER_KEY]``: (pid, uid, gid) of a Unix socket client (set by app.py)."""
MAX_LIMIT = 1000
MAX_POINTS = 200_000

router = APIRouter(prefix=PREFIX)


# -- who is asking ------------------------------------------------------------------------------


async def caller(request: Request) -> Identity:
    """The authenticated caller, or 401 (munge credential first; then Unix socket peer credentials)."""
    header = request.headers.get("authorization")
    if header:
        credential = parse_authorization(header)
        body = await request.body()
        target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        if query:
            target += "?" + query
        verifier: MungeVerifier = request.app.state.verifier
        expected = request_payload(request.method, target, body)
        identity: Identity = await run_in_threadpool(verifier.verify, credential, expected)
        return identity
    peer = (request.scope.get("extensions") or {}).get(PEER_KEY)
    if peer is not None:
        _pid, uid, gid = peer
        return identity_of(uid, gid, via="peer")
    raise AuthError(
        "no credential: send 'Authorization: Munge <credential>' or use the server's Unix socket",
        hint="use hpcplat's client (hpcplat server whoami) or `munge` to make one",
    )


Caller = Annotated[Identity, Depends(caller)]


def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


def _policy(request: Request) -> Policy:
    policy: Policy = request.app.state.policy
    return policy


CatalogDep = Annotated[Catalog, Depends(_catalog)]
PolicyDep = Annotated[Policy, Depends(_policy)]


# -- models -------------------------------------------------------------------------------------


class WhoAmI(BaseModel):
    user: str
    uid: int
    gid: int
    groups: list[str]
    via: str
    admin: bool


class RunSummary(BaseModel):
    id: str
    name: str
    owner: str
    team: str
    tier: str
    status: str
    tags: list[str]
    created: datetime
    job_id: str | None


class RunPage(BaseModel):
    runs: list[RunSummary]
    limit: int
    offset: int
    next_offset: int | None
    """Where the next page starts; ``None`` on the last page."""


class Metric(BaseModel):
    name: str
    step: int
    value: float
    count: int
    minimum: float
    maximum: float


class RunStatusOut(BaseModel):
    """A run's status (the seeds' ``GetTrainingStatus``)."""

    run: RunPublic
    pending_reason: str
    """Slurm's reason while the newest attempt is pending, else the run's status reason."""
    attempts: list[AttemptPublic]
    metrics: list[Metric]
    datasets: list[DatasetVersionPublic]
    params: dict[str, Any]


class DatasetOut(BaseModel):
    name: str
    owner: str
    versions: list[DatasetVersionPublic]


class NewVersion(BaseModel):
    location: str = Field(description="absolute path of the data, as the submitting hosts see it")
    groups: list[str] = Field(default_factory=list, description="Unix groups allowed; empty: everyone")
    files: list[tuple[str, int, str, int]] = Field(
        description="the manifest the client built: [path, size, sha256, mtime_ns] per file"
    )


class NewVersionOut(BaseModel):
    version: DatasetVersionPublic
    created: bool


class MetricPoint(BaseModel):
    attempt: int = 0
    step: int
    name: str = Field(min_length=1, max_length=200)
    value: float
    time: float


class MetricBatch(BaseModel):
    points: list[MetricPoint] = Field(max_length=MAX_POINTS)


class Ingested(BaseModel):
    inserted: int


# -- helpers ------------------------------------------------------------------------------------


def _run_id(catalog: Catalog, ref: str) -> str:
    try:
        return catalog.resolve_run_id(ref)
    except UsageError as exc:
        raise HTTPException(404 if exc.message.startswith("no run") else 400, str(exc)) from None


def _forbidden(what: str) -> HTTPException:
    return HTTPException(403, what)


def _dataset(catalog: Catalog, name: str) -> tuple[Dataset | None, list[DatasetVersionPublic]]:
    with catalog.store.read() as s:
        found = s.get(Dataset, name)
        rows = s.exec(
            select(DatasetVersion).where(DatasetVersion.dataset == name).order_by(col(DatasetVersion.version))
        ).all()
        return found, [DatasetVersionPublic.model_validate(v) for v in rows]


def _check_run_readable(catalog: Catalog, policy: Policy, who: Identity, run_id: str) -> RunPublic:
    with catalog.store.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        groups = [v.allowed_groups for v in queries.datasets_of(s, run_id)]
        public = RunPublic.model_validate(run)
    if not policy.can_read_run(who, owner=public.owner, dataset_groups=groups):
        raise _forbidden(f"run {run_id} used a restricted dataset; {who.user} is not in its groups")
    return public


# -- routes -------------------------------------------------------------------------------------


@router.get("/whoami")
def whoami(who: Caller, policy: PolicyDep) -> WhoAmI:
    return WhoAmI(
        user=who.user,
        uid=who.uid,
        gid=who.gid,
        groups=sorted(who.groups),
        via=who.via,
        admin=policy.is_admin(who),
    )


@router.get("/runs")
def list_runs(
    *,
    who: Caller,
    catalog: CatalogDep,
    user: str | None = None,
    team: str | None = None,
    tag: str | None = None,
    status: str | None = Query(default=None, description="comma-separated run statuses"),
    limit: int = Query(default=listing.DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(default=0, ge=0),
) -> RunPage:
    try:
        rows = listing.list_runs(
            catalog.store, user=user, team=team, tag=tag, status=status, limit=limit + 1, offset=offset
        )
    except UsageError as exc:
        raise HTTPException(400, str(exc)) from None
    more = len(rows) > limit
    return RunPage(
        runs=[RunSummary.model_validate(r.to_dict()) for r in rows[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get("/runs/{ref}")
def run_status(ref: str, who: Caller, catalog: CatalogDep, policy: PolicyDep) -> RunStatusOut:
    run_id = _run_id(catalog, ref)
    _check_run_readable(catalog, policy, who, run_id)
    details = queries.run_details(catalog.store, run_id)
    pending = details.run.status_reason
    if details.attempts and details.attempts[-1].state.value == "PENDING":
        pending = details.attempts[-1].reason or pending
    return RunStatusOut(
        run=details.run,
        pending_reason=pending,
        attempts=details.attempts,
        metrics=[Metric.model_validate(m.__dict__) for m in details.metrics],
        datasets=details.datasets,
        params=details.params,
    )


@router.get("/runs/{ref}/events")
def run_events(ref: str, who: Caller, catalog: CatalogDep, policy: PolicyDep) -> list[EventPublic]:
    run_id = _run_id(catalog, ref)
    _check_run_readable(catalog, policy, who, run_id)
    with catalog.store.read() as s:
        rows = s.exec(select(Event).where(Event.run_id == run_id).order_by(col(Event.at), col(Event.id)))
        return [EventPublic.model_validate(e) for e in rows.all()]


@router.get("/runs/{ref}/details", response_class=Response)
def run_details(
    ref: str, who: Caller, catalog: CatalogDep, policy: PolicyDep, script: bool = False
) -> Response:
    """Everything ``hpcplat run show`` prints: ``RunDetails.to_dict()`` encoded as the CLI encodes
    it (so ``run show --json`` is the same through the server or not), plus ``"script"`` (the
    recorded sbatch script) when ``script=true``."""
    run_id = _run_id(catalog, ref)
    _check_run_readable(catalog, policy, who, run_id)
    out = queries.run_details(catalog.store, run_id).to_dict()
    if script:
        out["script"] = catalog.sbatch_script(run_id)
    return Response(json.dumps(out, default=str), media_type="application/json")


class JobStatus(BaseModel):
    """The catalog's (live) view of one Slurm job: its run's newest attempt with that job id."""

    job_id: str
    run_id: str
    restart: int
    state: str
    exit_code: int | None
    reason: str
    run_status: str
    """The run's status: a preempted attempt is over for good only once the run is not tracked."""


@router.get("/jobs")
def job_states(
    who: Caller,
    catalog: CatalogDep,
    policy: PolicyDep,
    ids: str = Query(description="comma-separated Slurm job ids (``123``, ``123_4``)"),
) -> list[JobStatus]:
    """The recorded state of these jobs, kept live by the server's reconcile loop (``hpcplat wait``
    polls this, not Slurm). Jobs the catalog does not know, or whose runs the caller may not
    read, are left out."""
    wanted = sorted({j.strip() for j in ids.split(",") if j.strip()})
    if not wanted or len(wanted) > MAX_LIMIT:
        raise HTTPException(400, f"give 1 to {MAX_LIMIT} job ids, comma-separated")
    with catalog.store.read() as s:
        rows = s.exec(
            select(Attempt, Run.owner, Run.status)
            .join(Run, col(Run.id) == col(Attempt.run_id))
            .where(col(Attempt.job_id).in_(wanted))
        ).all()
        latest: dict[str, tuple[Attempt, str, str]] = {}
        for attempt, owner, run_status in rows:
            seen = latest.get(attempt.job_id)
            if seen is None or attempt.restart > seen[0].restart:
                latest[attempt.job_id] = (attempt, owner, str(run_status))
        groups = {
            run_id: [v.allowed_groups for v in queries.datasets_of(s, run_id)]
            for run_id in {a.run_id for a, _, _ in latest.values()}
        }
    return [
        JobStatus(
            job_id=job_id,
            run_id=a.run_id,
            restart=a.restart,
            state=a.state.value,
            exit_code=a.exit_code,
            reason=a.reason,
            run_status=run_status,
        )
        for job_id, (a, owner, run_status) in sorted(latest.items())
        if policy.can_read_run(who, owner=owner, dataset_groups=groups[a.run_id])
    ]


@router.post("/runs/{ref}/metrics")
def ingest_metrics(
    ref: str, batch: MetricBatch, who: Caller, catalog: CatalogDep, policy: PolicyDep
) -> Ingested:
    run_id = _run_id(catalog, ref)
    with catalog.store.read() as s:
        owner = s.exec(select(Run.owner).where(Run.id == run_id)).first()
    if owner is None:
        raise HTTPException(404, f"no run {run_id}")
    if not policy.can_write_run(who, owner=owner):
        raise _forbidden(f"run {run_id} belongs to {owner}; {who.user} may not write to it")
    points = [(p.attempt, p.step, p.name, p.value, p.time) for p in batch.points]
    with catalog.store.write_conn() as conn:
        return Ingested(inserted=ingest.insert_points(conn, run_id, points))


@router.get("/datasets")
def list_datasets(who: Caller, catalog: CatalogDep, policy: PolicyDep) -> list[DatasetOut]:
    with catalog.store.read() as s:
        owners = {d.name: d.owner for d in s.exec(select(Dataset)).all()}
    out = []
    for latest in catalog.datasets():
        owner = owners.get(latest.dataset, "")
        if policy.can_read_dataset(who, owner=owner, groups=latest.allowed_groups):
            out.append(DatasetOut(name=latest.dataset, owner=owner, versions=[latest]))
    return out


@router.get("/datasets/{name}")
def show_dataset(name: str, who: Caller, catalog: CatalogDep, policy: PolicyDep) -> DatasetOut:
    found, versions = _dataset(catalog, name)
    if found is None or not versions:
        raise HTTPException(404, f"no dataset named {name!r}")
    if not policy.can_read_dataset(who, owner=found.owner, groups=versions[-1].allowed_groups):
        raise _forbidden(f"dataset {name} is restricted to {', '.join(versions[-1].allowed_groups)}")
    return DatasetOut(name=name, owner=found.owner, versions=versions)


@router.post("/datasets/{name}/versions", status_code=201)
def add_version(
    name: str, body: NewVersion, who: Caller, catalog: CatalogDep, policy: PolicyDep
) -> NewVersionOut:
    if not name or "@" in name or "/" in name:
        raise HTTPException(400, f"invalid dataset name {name!r}; use letters, digits, '-', '_' and '.'")
    if not body.location.startswith("/"):
        raise HTTPException(400, f"location must be an absolute path, got {body.location!r}")
    found, versions = _dataset(catalog, name)
    owner = found.owner if found is not None else None
    groups = versions[-1].allowed_groups if versions else []
    if not policy.can_add_version(who, owner=owner, groups=groups):
        raise _forbidden(f"dataset {name} belongs to {owner}; only its owner or its groups add versions")
    changes_groups = versions and sorted(set(body.groups)) != sorted(groups)
    if changes_groups and who.user != owner and not policy.is_admin(who):
        raise _forbidden(f"only the owner of dataset {name} ({owner}) changes who may use it")
    manifest = Manifest(tuple(FileEntry(p, s, h, m) for p, s, h, m in sorted(body.files)))
    try:
        with catalog.store.write() as s:
            version, created = ds.register(
                s, name, body.location, manifest=manifest, groups=body.groups, owner=who.user
            )
    except UsageError as exc:
        raise HTTPException(400, str(exc)) from None
    except sa.exc.IntegrityError:
        raise HTTPException(409, f"dataset {name} changed meanwhile; send the version again") from None
    return NewVersionOut(version=version, created=created)
