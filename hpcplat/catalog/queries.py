"""Read models for ``hpcplat run show``, ``run plot`` and ``runs compare``.

The public queries take a :class:`~hpcplat.catalog.store.Store` and read in one read scope;
the helpers they share take that scope's session."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from hpcplat.catalog.blobs import get_blob, sha256_text
from hpcplat.catalog.models import (
    Artifact,
    ArtifactPublic,
    Attempt,
    AttemptPublic,
    CodeSnapshot,
    CodeSnapshotPublic,
    DatasetVersion,
    DatasetVersionPublic,
    EnvSnapshot,
    EnvSnapshotPublic,
    Event,
    EventPublic,
    GpuUsage,
    Param,
    Run,
    RunDataset,
    RunPublic,
    Usage,
    UsagePublic,
)
from hpcplat.catalog.store import Store
from hpcplat.errors import CatalogError

_LATEST = sa.text(
    "SELECT m.name, m.step, m.value, agg.n, agg.lo, agg.hi FROM metric_point m JOIN ("
    " SELECT name, MAX(step) AS last, COUNT(*) AS n, MIN(value) AS lo, MAX(value) AS hi"
    " FROM metric_point WHERE run_id = :run_id GROUP BY name"
    ") agg ON m.name = agg.name AND m.step = agg.last WHERE m.run_id = :run_id ORDER BY m.name"
)
_SERIES = sa.text(
    "SELECT step, value FROM metric_point WHERE run_id = :run_id AND name = :name ORDER BY step"
)


@dataclass(frozen=True)
class MetricSummary:
    name: str
    step: int
    """The last step logged."""
    value: float
    """The value at that step."""
    count: int
    minimum: float
    maximum: float


@dataclass
class RunDetails:
    run: RunPublic
    code: CodeSnapshotPublic | None
    env: EnvSnapshotPublic | None
    datasets: list[DatasetVersionPublic]
    params: dict[str, Any]
    metrics: list[MetricSummary]
    attempts: list[AttemptPublic]
    events: list[EventPublic]
    usage: list[UsagePublic]
    artifacts: list[ArtifactPublic]
    gpu_hours_used: float = 0.0
    """GPU-hours the node agent saw busy."""
    gpu_hours_idle: float = 0.0
    """GPU-hours the node agent saw idle (allocated, 0% utilization)."""

    @property
    def gpu_hours_allocated(self) -> float:
        """GPU-hours from Slurm accounting (allocated GPUs x elapsed), summed over attempts."""
        return sum(u.gpu_hours for u in self.usage)

    @property
    def provenance(self) -> dict[str, Any]:
        return {
            "code": self.code.model_dump() if self.code else {},
            "env": self.env.model_dump() if self.env else {},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.model_dump(mode="json"),
            "provenance": self.provenance,
            "datasets": [d.model_dump(mode="json") for d in self.datasets],
            "params": self.params,
            "metrics": [m.__dict__ for m in self.metrics],
            "attempts": [a.model_dump(mode="json") for a in self.attempts],
            "events": [e.model_dump(mode="json") for e in self.events],
            "usage": [u.model_dump(mode="json") for u in self.usage],
            "artifacts": [a.model_dump(mode="json") for a in self.artifacts],
            "gpu_hours": {
                "allocated": self.gpu_hours_allocated,
                "used": self.gpu_hours_used,
                "idle": self.gpu_hours_idle,
            },
        }


def _code(s: Session, run_id: str) -> CodeSnapshotPublic | None:
    row = s.get(CodeSnapshot, run_id)
    if row is None:
        return None
    return CodeSnapshotPublic.model_validate({**row.model_dump(), "diff": get_blob(s, row.diff_sha256)})


def _env(s: Session, run_id: str) -> EnvSnapshotPublic | None:
    row = s.get(EnvSnapshot, run_id)
    if row is None:
        return None
    text = get_blob(s, row.packages_sha256)
    return EnvSnapshotPublic.model_validate(
        {**row.model_dump(), "packages": json.loads(text) if text else {}}
    )


def params_of(s: Session, run_id: str) -> dict[str, Any]:
    return {p.name: p.value for p in s.exec(select(Param).where(Param.run_id == run_id).order_by(Param.name))}


def latest_metrics(s: Session, run_id: str) -> list[MetricSummary]:
    rows = s.execute(_LATEST, {"run_id": run_id}).all()
    return [
        MetricSummary(str(r[0]), int(r[1]), _value(r[2]), int(r[3]), _value(r[4]), _value(r[5])) for r in rows
    ]


def metric_series(store: Store, run_id: str, name: str) -> list[tuple[int, float]]:
    """(step, value) of metric ``name`` of the run, by step."""
    with store.read() as s:
        return _metric_series(s, run_id, name)


def _metric_series(s: Session, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(int(r[0]), _value(r[1])) for r in s.execute(_SERIES, {"run_id": run_id, "name": name}).all()]


def _value(value: Any) -> float:
    """A stored metric value: NULL is NaN (see ``MetricPoint.value``)."""
    return float("nan") if value is None else float(value)


def datasets_of(s: Session, run_id: str) -> list[DatasetVersionPublic]:
    stmt = (
        select(DatasetVersion)
        .join(RunDataset, col(RunDataset.dataset_version_id) == col(DatasetVersion.id))
        .where(RunDataset.run_id == run_id)
        .order_by(col(DatasetVersion.dataset))
    )
    return [DatasetVersionPublic.model_validate(v) for v in s.exec(stmt).all()]


def run_details(store: Store, run_id: str) -> RunDetails:
    """Everything the catalog knows of the run (``hpcplat run show``)."""
    with store.read() as s:
        return _run_details(s, run_id)


def _run_details(s: Session, run_id: str) -> RunDetails:
    run = s.get(Run, run_id)
    if run is None:
        raise CatalogError(f"no run {run_id} in the catalog", hint="list runs with `hpcplat runs`")
    attempts = s.exec(
        select(Attempt).where(Attempt.run_id == run_id).order_by(col(Attempt.job_id), col(Attempt.restart))
    ).all()
    events = s.exec(select(Event).where(Event.run_id == run_id).order_by(col(Event.at), col(Event.id))).all()
    usage = s.exec(select(Usage).where(Usage.run_id == run_id).order_by(col(Usage.attempt_id))).all()
    artifacts = s.exec(select(Artifact).where(Artifact.run_id == run_id).order_by(col(Artifact.id))).all()
    windows = s.exec(select(GpuUsage).where(GpuUsage.run_id == run_id)).all()
    used = sum(w.busy_hours for w in windows)
    total = sum(w.hours for w in windows)
    return RunDetails(
        run=RunPublic.model_validate(run),
        code=_code(s, run_id),
        env=_env(s, run_id),
        datasets=datasets_of(s, run_id),
        params=params_of(s, run_id),
        metrics=latest_metrics(s, run_id),
        attempts=[AttemptPublic.model_validate(a) for a in attempts],
        events=[EventPublic.model_validate(e) for e in events],
        usage=[UsagePublic.model_validate(u) for u in usage],
        artifacts=[ArtifactPublic.model_validate(a) for a in artifacts],
        gpu_hours_used=used,
        gpu_hours_idle=max(total - used, 0.0),
    )


# -- comparison ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComparisonRow:
    section: str
    key: str
    values: tuple[str, ...]

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


@dataclass
class Comparison:
    run_ids: list[str]
    names: list[str]
    rows: list[ComparisonRow] = field(default_factory=list)

    @property
    def differences(self) -> list[ComparisonRow]:
        return [r for r in self.rows if r.differs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.run_ids,
            "rows": [
                {"section": r.section, "key": r.key, "values": list(r.values), "differs": r.differs}
                for r in self.rows
            ],
        }


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return str(value)  # plain text of str enums too
    return json.dumps(value, sort_keys=True)


MAX_PACKAGE_ROWS = 40


def compare(store: Store, run_ids: list[str]) -> Comparison:
    """How the runs differ: spec, params, code, environment, datasets, metrics."""
    with store.read() as s:
        details = [_run_details(s, r) for r in run_ids]
    result = Comparison(run_ids=run_ids, names=[d.run.name for d in details])

    def add(section: str, key: str, values: list[Any]) -> None:
        result.rows.append(ComparisonRow(section, key, tuple(_show(v) for v in values)))

    for key in ("name", "status", "owner", "team", "tier"):
        add("run", key, [getattr(d.run, key) for d in details])
    for key in sorted({k for d in details for k in d.params}):
        add("params", key, [d.params.get(key) for d in details])
    finals = [{m.name: m for m in d.metrics} for d in details]
    for key in sorted({k for f in finals for k in f}):
        add("metrics", key, [f[key].value if key in f else None for f in finals])
        add("metrics", f"{key} (last step)", [f[key].step if key in f else None for f in finals])
    codes = [d.code for d in details]
    for key in ("repo", "commit", "branch", "dirty"):
        add("code", key, [getattr(c, key) if c else None for c in codes])
    add("code", "diff sha256", [_diff_id(c) for c in codes])
    envs = [d.env for d in details]
    for key in (
        "python_version",
        "modules",
        "container_image",
        "container_digest",
        "cuda_version",
        "torch_version",
    ):
        add("env", key, [getattr(e, key) if e else None for e in envs])
    packages = [e.packages if e else None for e in envs]
    recorded = [p for p in packages if p is not None]
    names = sorted({k for p in recorded for k in p})
    differing = [n for n in names if len({p.get(n) for p in recorded}) > 1]
    for name in differing[:MAX_PACKAGE_ROWS]:
        add("packages", name, [p.get(name) if p is not None else "(not recorded)" for p in packages])
    if len(differing) > MAX_PACKAGE_ROWS:
        add(
            "packages",
            "more differing",
            [f"{len(differing) - MAX_PACKAGE_ROWS} packages not shown"] * len(details),
        )
    add(
        "packages",
        "identical",
        [f"{len(names) - len(differing)} packages" if p is not None else "(not recorded)" for p in packages],
    )
    datasets = [{v.dataset: v for v in d.datasets} for d in details]
    for key in sorted({k for ds in datasets for k in ds}):
        add(
            "datasets",
            key,
            [f"v{ds[key].version} {ds[key].content_hash[:12]}" if key in ds else None for ds in datasets],
        )
    return result


def _diff_id(code: CodeSnapshotPublic | None) -> str | None:
    if code is None or not code.diff:
        return None
    return sha256_text(code.diff)[:12]
