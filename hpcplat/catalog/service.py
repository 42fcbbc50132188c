"""The catalog service: every read and write of runs, provenance, datasets, metrics and events.

One :class:`Catalog` per process, opened with :meth:`Catalog.open`. Each public write is one
transaction of its :class:`~hpcplat.catalog.store.Store` (``catalog.store``): it is all written or
not at all. The CLI and the submission layer call this class; within the catalog package,
reconciliation, self-registration and the queries take the store, never this class.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hpcplat.catalog import datasets as ds
from hpcplat.catalog import ingest, listing, queries
from hpcplat.catalog.blobs import get_blob, put_blob
from hpcplat.catalog.engine import DEFAULT_CONNECT_TIMEOUT_S
from hpcplat.catalog.enums import EventKind, RunStatus
from hpcplat.catalog.intent import RunIntent
from hpcplat.catalog.models import (
    Attempt,
    CodeSnapshot,
    DatasetVersion,
    DatasetVersionPublic,
    EnvSnapshot,
    Event,
    GpuUsage,
    GpuUsageBase,
    Run,
    RunDataset,
    RunPublic,
)
from hpcplat.catalog.reconcile import ReconcileReport, SlurmQueries, reconcile
from hpcplat.catalog.selfregister import JobEnvironment, register_job
from hpcplat.catalog.snapshots import provenance_rows
from hpcplat.catalog.store import Store
from hpcplat.catalog.types import utcnow
from hpcplat.errors import CatalogError, UsageError
from hpcplat.provenance.drift import DatasetRecord, DriftReport, check_drift
from hpcplat.provenance.manifest import Manifest
from hpcplat.siteconfig import current_user

if TYPE_CHECKING:
    from hpcplat.catalog.listing import RunRow

log = logging.getLogger(__name__)


class Catalog:
    """The catalog database. Open with :meth:`open`; close (or use as a context manager)."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.store = Store(engine, url)

    @property
    def engine(self) -> Engine:
        return self.store.engine

    @property
    def url(self) -> str:
        return self.store.url

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        check_schema: bool = True,
    ) -> Catalog:
        """Connect and check the schema revision (see :meth:`Store.open`).

        A new (empty) SQLite catalog is created on first use; any other catalog whose schema is
        missing or old raises :class:`CatalogError` naming ``hpcplat db upgrade``.
        """
        store = Store.open(url, connect_timeout_s=connect_timeout_s, check_schema=check_schema)
        return cls(store.engine, store.url)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- capture at submit -----------------------------------------------------------------------

    def record_intent(self, intent: RunIntent) -> str:
        """Record a run about to be submitted (status SUBMITTING) with its provenance, params,
        dataset versions, sbatch script and Slurm request; returns the run id (``intent.run_id``
        when the submitter chose it, else a new one).

        The user must be allowed to use every dataset (their Unix groups), else :class:`UsageError`.

        Core inserts in one transaction (no ORM unit of work: this runs at every submit).
        """
        run_id = str(uuid.UUID(intent.run_id)) if intent.run_id else str(uuid.uuid4())
        spec = _json_field(intent.spec, "spec")
        request = _json_field(intent.slurm_request, "slurm_request")
        params = _json_field(intent.params, "params")
        job_dir = request.get("job_dir") or spec.get("job_dir")
        run = Run(
            id=run_id,
            name=intent.name,
            owner=intent.owner,
            team=intent.team,
            tier=intent.tier,
            tags=list(dict.fromkeys(intent.tags)),
            spec=spec,
            slurm_request=request,
            job_dir=str(job_dir) if job_dir else None,
            status=RunStatus.SUBMITTING,
        )
        with self.store.write_conn() as conn:
            version_ids: list[int] = []
            if intent.datasets:
                with Session(bind=conn) as s:
                    for name, version in intent.datasets:
                        found = ds.find(s, name, version)
                        ds.check_access(found, intent.owner)
                        if found.id is not None:
                            version_ids.append(found.id)
            if intent.sbatch_script:
                run.script_sha256 = put_blob(conn, intent.sbatch_script)
            conn.execute(_table(Run).insert(), _row(run))
            code, env = provenance_rows(conn, run_id, intent.provenance)
            if code is not None:
                conn.execute(_table(CodeSnapshot).insert(), _row(code))
            if env is not None:
                conn.execute(_table(EnvSnapshot).insert(), _row(env))
            if version_ids:
                conn.execute(
                    _table(RunDataset).insert(),
                    [{"run_id": run_id, "dataset_version_id": v} for v in version_ids],
                )
            ingest.upsert_params(conn, run_id, params)
        return run_id

    def confirm_submission(self, run_id: str, job_id: str) -> None:
        """``sbatch`` returned ``job_id``: record the attempt and mark the run QUEUED.

        Core statements (no ORM unit of work: this runs at every submit): one read, then the writes."""
        runs, attempts = _table(Run), _table(Attempt)
        attempted = (
            sa.select(attempts.c.id)
            .where(attempts.c.run_id == run_id, attempts.c.job_id == job_id, attempts.c.restart == 0)
            .exists()
        )
        with self.store.write_conn() as conn:
            found = conn.execute(sa.select(runs.c.status, attempted).where(runs.c.id == run_id)).first()
            if found is None:
                raise CatalogError(f"no run {run_id} in the catalog", hint="list runs with `hpcplat runs`")
            status, has_attempt = found
            if not has_attempt:
                conn.execute(attempts.insert(), _row(Attempt(run_id=run_id, job_id=job_id, restart=0)))
            if status in (RunStatus.SUBMITTING, RunStatus.NOT_SUBMITTED):
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id)
                    .values(status=RunStatus.QUEUED, status_reason="", updated=utcnow())
                )
            event = Event(
                kind=EventKind.SUBMITTED,
                reason=f"submitted as job {job_id}",
                source="submit",
                job_id=job_id,
                run_id=run_id,
            )
            conn.execute(_table(Event).insert(), _row(event))

    def abandon_intent(self, run_id: str, reason: str) -> None:
        """``sbatch`` failed: the run becomes NOT_SUBMITTED with ``reason``; nothing else changes."""
        with self.store.write() as s:
            run = _get_run(s, run_id)
            has_job = s.exec(select(Attempt.id).where(Attempt.run_id == run_id).limit(1)).first() is not None
            if has_job:
                raise CatalogError(
                    f"run {run_id} already has a Slurm job; it cannot be marked not submitted",
                    hint=f"cancel the job with `hpcplat cancel` if it must not run (run {run_id})",
                )
            run.status = RunStatus.NOT_SUBMITTED
            run.status_reason = reason
            run.updated = utcnow()
            s.add(Event(kind=EventKind.SUBMIT_FAILED, reason=reason, source="submit", run_id=run_id))

    def set_rerun_of(self, run_id: str, original: str) -> None:
        with self.store.write() as s:
            run = _get_run(s, run_id)
            run.rerun_of = self.resolve_run_id(original)

    # -- datasets --------------------------------------------------------------------------------

    def register_dataset(
        self, name: str, path: str | Path, *, groups: Sequence[str] = (), owner: str | None = None
    ) -> tuple[DatasetVersionPublic, bool]:
        """Hash every file under ``path`` and record a new version when the content, location or
        groups changed; returns (version, whether it is new)."""
        if not name or "@" in name or "/" in name:
            raise UsageError(f"invalid dataset name {name!r}", hint="use letters, digits, '-', '_' and '.'")
        manifest = ds.build(path)  # slow part: outside the transaction
        with self.store.write() as s:
            return ds.register(
                s, name, path, manifest=manifest, groups=list(groups), owner=owner or _whoami()
            )

    def resolve_dataset(
        self, name: str, version: str | int = "latest", *, user: str | None = None, verify: bool = True
    ) -> DatasetVersionPublic:
        """The dataset version to use. Raises :class:`UsageError` when it does not exist (listing
        the versions), when ``user`` (default: the caller) is not in its groups, or (``verify``)
        when its files changed since registration."""
        with self.store.read() as s:
            found = ds.find(s, name, str(version))
            ds.check_access(found, user or _whoami())
            if verify:
                ds.verify(s, found)
            return DatasetVersionPublic.model_validate(found)

    def datasets(self) -> list[DatasetVersionPublic]:
        """The latest version of every dataset."""
        with self.store.read() as s:
            newest = (
                select(DatasetVersion.dataset, sa.func.max(DatasetVersion.version).label("v"))
                .group_by(DatasetVersion.dataset)
                .subquery()
            )
            stmt = (
                select(DatasetVersion)
                .join(
                    newest,
                    sa.and_(
                        col(DatasetVersion.dataset) == newest.c.dataset,
                        col(DatasetVersion.version) == newest.c.v,
                    ),
                )
                .order_by(DatasetVersion.dataset)
            )
            return [DatasetVersionPublic.model_validate(v) for v in s.exec(stmt).all()]

    def dataset_versions(self, name: str) -> list[DatasetVersionPublic]:
        with self.store.read() as s:
            rows = s.exec(
                select(DatasetVersion)
                .where(DatasetVersion.dataset == name)
                .order_by(col(DatasetVersion.version))
            )
            return [DatasetVersionPublic.model_validate(v) for v in rows.all()]

    def dataset_manifest(self, name: str, version: str | int = "latest") -> Manifest:
        with self.store.read() as s:
            return ds.manifest_of(s, ds.find(s, name, str(version)))

    # -- events and GPU usage --------------------------------------------------------------------

    def add_event(
        self,
        *,
        kind: EventKind | str,
        reason: str,
        job_id: str | None = None,
        run_id: str | None = None,
        source: str = "",
        at: datetime | None = None,
    ) -> None:
        """Record an event. Without ``run_id`` the run is found from ``job_id`` when it has one."""
        parsed = EventKind.parse(kind)
        with self.store.write() as s:
            if run_id is None and job_id is not None:
                run_id = _run_of_job(s, job_id)
            elif run_id is not None:
                _get_run(s, run_id)
            s.add(
                Event(
                    kind=parsed, reason=reason, source=source, job_id=job_id, run_id=run_id, at=at or utcnow()
                )
            )

    def add_gpu_usage(self, records: Sequence[GpuUsageBase]) -> None:
        """Store per-GPU usage windows from the node agent (a window sent again replaces itself)."""
        if not records:
            return
        with self.store.write() as s:
            runs: dict[str, str | None] = {}
            rows = []
            for rec in records:
                run_id = rec.run_id
                if run_id is None:
                    if rec.job_id not in runs:
                        runs[rec.job_id] = _run_of_job(s, rec.job_id)
                    run_id = runs[rec.job_id]
                row = GpuUsage.model_validate(rec.model_dump(exclude={"id"}))
                row.run_id = run_id
                rows.append(row)
            for row in rows:
                existing = s.exec(
                    select(GpuUsage).where(
                        GpuUsage.job_id == row.job_id,
                        GpuUsage.node == row.node,
                        GpuUsage.gpu_uuid == row.gpu_uuid,
                        GpuUsage.start == row.start,
                    )
                ).first()
                if existing is None:
                    s.add(row)
                else:
                    for field in ("end", "samples", "busy_samples", "mean_util", "max_mem_mb", "run_id"):
                        setattr(existing, field, getattr(row, field))

    # -- tracking --------------------------------------------------------------------------------

    def log_metrics(self, run_id: str, points: Sequence[ingest.Point]) -> int:
        """Insert metric points ``(attempt, step, name, value, time)``; existing steps are kept."""
        with self.store.write() as s:
            return ingest.insert_points(s.connection(), run_id, points)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        with self.store.write() as s:
            ingest.upsert_params(s.connection(), run_id, _json_field(dict(params), "params"))

    def ingest_spool(self, path: str | Path) -> int:
        """Ingest a tracking spool file (see :mod:`hpcplat.catalog.spool`); returns metric points read."""
        return ingest.ingest_spool(self.engine, path)

    # -- reconciliation --------------------------------------------------------------------------

    def reconcile(
        self, client: SlurmQueries, *, grace_s: float = 300.0, now: datetime | None = None
    ) -> ReconcileReport:
        """Bring attempts, run states and usage in line with Slurm (one squeue + one sacct)."""
        return reconcile(self.store, client, grace_s=grace_s, now=now)

    def register_job(
        self, job: JobEnvironment, provenance: Mapping[str, Any] | None = None
    ) -> tuple[str, bool]:
        """Record a run for a job started with plain ``sbatch`` (see :mod:`hpcplat.catalog.selfregister`)."""
        return register_job(self.store, job, provenance or {})

    # -- queries ---------------------------------------------------------------------------------

    def resolve_run_id(self, ref: str) -> str:
        """A full run id from a unique prefix (like git), or :class:`UsageError`."""
        ref = ref.strip()
        if len(ref) < 4:
            raise UsageError(
                f"run reference {ref!r} is too short", hint="give at least 4 characters of the run id"
            )
        with self.store.read() as s:
            matches = s.exec(
                select(Run.id).where(col(Run.id).startswith(ref, autoescape=True)).limit(5)
            ).all()
        if not matches:
            raise UsageError(f"no run {ref!r} in the catalog", hint="list runs with `hpcplat runs`")
        if len(matches) > 1:
            raise UsageError(
                f"run reference {ref!r} is ambiguous: {', '.join(m[:12] for m in matches)}...",
                hint="give more characters of the run id",
            )
        return str(matches[0])

    def run(self, ref: str) -> RunPublic:
        run_id = self.resolve_run_id(ref)
        with self.store.read() as s:
            return RunPublic.model_validate(_get_run(s, run_id))

    def sbatch_script(self, ref: str) -> str:
        run_id = self.resolve_run_id(ref)
        with self.store.read() as s:
            return get_blob(s, _get_run(s, run_id).script_sha256)

    def list_runs(self, **filters: Any) -> list[RunRow]:
        return listing.list_runs(self.store, **filters)

    def details(self, ref: str) -> queries.RunDetails:
        return queries.run_details(self.store, self.resolve_run_id(ref))

    def metric_series(self, ref: str, name: str) -> list[tuple[int, float]]:
        return queries.metric_series(self.store, self.resolve_run_id(ref), name)

    def compare(self, refs: Sequence[str]) -> queries.Comparison:
        return queries.compare(self.store, [self.resolve_run_id(r) for r in refs])

    def drift(self, ref: str, **options: Any) -> DriftReport:
        """How this machine differs from what the run recorded (see :mod:`hpcplat.provenance.drift`)."""
        details = self.details(ref)
        with self.store.read() as s:
            records = [
                DatasetRecord(
                    name=v.dataset,
                    version=v.version,
                    location=v.location,
                    content_hash=v.content_hash,
                    manifest=ds.manifest_of(s, _get_version(s, v.id)),
                )
                for v in details.datasets
            ]
        return check_drift(details.provenance, datasets=records, **options)


# -- helpers ------------------------------------------------------------------------------------


def _whoami() -> str:
    """The user from the kernel's uid, never from ``$LOGNAME``/``$USER`` (anyone can set those)."""
    return current_user()


def _json_field(value: dict[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(
            f"{what} must be a mapping, got {type(value).__name__}", hint=f"pass a dict as {what}"
        )
    result: dict[str, Any] = ingest.jsonable(value)
    return result


def _table(model: type[Any]) -> sa.Table:
    table: sa.Table = model.__table__
    return table


def _row(record: Any) -> dict[str, Any]:
    """The column values of a table model instance (its defaults applied), for a Core insert;
    an unset autoincrement id is left to the database."""
    values: dict[str, Any] = record.model_dump()
    if "id" in values and values["id"] is None:
        del values["id"]
    return values


def _get_run(s: Session, run_id: str) -> Run:
    run = s.get(Run, run_id)
    if run is None:
        raise CatalogError(f"no run {run_id} in the catalog", hint="list runs with `hpcplat runs`")
    return run


def _get_version(s: Session, version_id: int | None) -> DatasetVersion:
    found = s.get(DatasetVersion, version_id)
    if found is None:
        raise CatalogError(f"dataset version id {version_id} is missing from the catalog")
    return found


def _run_of_job(s: Session, job_id: str) -> str | None:
    """The run of the newest attempt with ``job_id`` (or of its array base ``123`` for ``123_4``)."""
    candidates = [job_id]
    base = job_id.split("_", 1)[0]
    if base != job_id:
        candidates.append(base)
    for candidate in candidates:
        found = s.exec(
            select(Attempt.run_id)
            .where(Attempt.job_id == candidate)
            .order_by(sa.desc(col(Attempt.id)))
            .limit(1)
        ).first()
        if found is not None:
            return str(found)
    if "_" not in job_id:  # an array's base id: its tasks' attempts
        found = s.exec(
            select(Attempt.run_id)
            .where(col(Attempt.job_id).startswith(f"{job_id}_", autoescape=True))
            .order_by(sa.desc(col(Attempt.id)))
            .limit(1)
        ).first()
        if found is not None:
            return str(found)
    return None
