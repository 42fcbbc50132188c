"""Hyperparameter sweeps as Slurm job arrays.

A sweep is a job spec plus a search space. Grid search takes every combination of the listed
values; random search draws ``samples`` points (seeded, so the same sweep gives the same points).
All points go to Slurm as job arrays: one ``sbatch`` per array, split into several arrays when there
are more points than the cluster's ``MaxArraySize`` allows, with an optional concurrency limit
(``%N``; when the sweep is split, the arrays run one after another so the limit holds overall).

Each point is its own run in the catalog. The array task finds its point through
``$SLURM_ARRAY_TASK_ID``: the sweep directory holds one line per point in ``run_ids`` and
``params.jsonl``, and, when the command has ``{name}`` placeholders, the point's own arguments in
``points/<i>/argv``. A point reports results by writing JSON to ``$HPCPLAT_RESULT_FILE``;
:func:`collect` gathers them with each point's Slurm state.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import os
import random
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcplat.errors import HpcplatError, UsageError
from hpcplat.files import atomic_write
from hpcplat.siteconfig import SiteConfig
from hpcplat.siteconfig import load as load_config
from hpcplat.slurm.client import SlurmClient
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.state import JobState
from hpcplat.spec import JobSpec, ParamValue, Problem, SpecError
from hpcplat.spec.files import read_document

if TYPE_CHECKING:
    from hpcplat.catalog import Catalog
    from hpcplat.slurm.watcher import Watcher
    from hpcplat.submission.render import ArrayPart
    from hpcplat.submission.validate import Checked

DEFAULT_MAX_ARRAY_SIZE = 1001
SWEEP_FORMAT = 1
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


class SearchMethod(enum.Enum):
    GRID = "grid"
    RANDOM = "random"


class DistributionKind(enum.Enum):
    CHOICE = "choice"
    UNIFORM = "uniform"
    LOGUNIFORM = "loguniform"
    INT = "int"


@dataclass(frozen=True)
class Distribution:
    """A parameter's values: a list (``choice``) or a range to draw from."""

    kind: DistributionKind
    values: tuple[ParamValue, ...] = ()
    low: float | None = None
    high: float | None = None

    def grid_values(self, name: str) -> list[ParamValue]:
        if self.kind is DistributionKind.CHOICE:
            return list(self.values)
        if self.kind is DistributionKind.INT and self.low is not None and self.high is not None:
            return list(range(int(self.low), int(self.high) + 1))
        raise UsageError(
            f"parameter {name!r}: a {self.kind.value} range cannot be gridded",
            hint="list the values to try, or use method: random",
        )

    def draw(self, rng: random.Random) -> ParamValue:
        if self.kind is DistributionKind.CHOICE:
            return rng.choice(self.values)
        assert self.low is not None and self.high is not None
        if self.kind is DistributionKind.INT:
            return rng.randint(int(self.low), int(self.high))
        if self.kind is DistributionKind.UNIFORM:
            return rng.uniform(self.low, self.high)
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))

    def to_dict(self) -> Any:
        if self.kind is DistributionKind.CHOICE:
            return list(self.values)
        return {"distribution": self.kind.value, "min": self.low, "max": self.high}


@dataclass(frozen=True)
class Sweep:
    job: JobSpec
    parameters: Mapping[str, Distribution]
    method: SearchMethod = SearchMethod.GRID
    samples: int | None = None
    seed: int = 0
    max_concurrent: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if not self.parameters:
            problems.append(Problem("parameters", "a sweep needs at least one parameter"))
        for key in self.parameters:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", key):
                problems.append(Problem(f"parameters.{key}", "not a parameter name"))
        if self.method is SearchMethod.RANDOM and (self.samples is None or self.samples < 1):
            problems.append(Problem("samples", "random search needs samples >= 1"))
        if self.method is SearchMethod.GRID and self.samples is not None:
            problems.append(Problem("samples", "only meaningful with method: random"))
        if self.max_concurrent is not None and self.max_concurrent < 1:
            problems.append(Problem("max_concurrent", f"must be at least 1, got {self.max_concurrent}"))
        if problems:
            raise SpecError(problems)
        if not self.name:
            object.__setattr__(self, "name", self.job.name)

    def points(self) -> list[dict[str, ParamValue]]:
        """Every point of the search, in a stable order."""
        names = list(self.parameters)
        if self.method is SearchMethod.GRID:
            axes = [self.parameters[n].grid_values(n) for n in names]
            return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
        rng = random.Random(self.seed)
        assert self.samples is not None
        return [{n: self.parameters[n].draw(rng) for n in names} for _ in range(self.samples)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method.value,
            "samples": self.samples,
            "seed": self.seed,
            "max_concurrent": self.max_concurrent,
            "parameters": {k: v.to_dict() for k, v in self.parameters.items()},
            "job": self.job.to_dict(),
        }


def parse_distribution(name: str, value: Any) -> Distribution:
    """A list → choice; ``{distribution: uniform|loguniform|int, min:, max:}``; ``{values: [...]}``."""
    where = f"parameters.{name}"
    if isinstance(value, list | tuple):
        if not value:
            raise SpecError([Problem(where, "the list of values is empty")])
        for item in value:
            if item is not None and not isinstance(item, str | int | float | bool):
                raise SpecError([Problem(where, f"values must be scalars, got {type(item).__name__}")])
        return Distribution(DistributionKind.CHOICE, tuple(value))
    if isinstance(value, Mapping):
        if "values" in value:
            return parse_distribution(name, value["values"])
        kind_text = value.get("distribution")
        try:
            kind = DistributionKind(kind_text)
        except ValueError:
            allowed = ", ".join(k.value for k in DistributionKind if k is not DistributionKind.CHOICE)
            raise SpecError(
                [Problem(where, f"unknown distribution {kind_text!r}; allowed: {allowed}")]
            ) from None
        low, high = _finite_number(value.get("min")), _finite_number(value.get("max"))
        if low is None or high is None or low > high:
            got = f"got min={value.get('min')!r}, max={value.get('max')!r}"
            raise SpecError([Problem(where, f"needs finite numbers min <= max, {got}")])
        if kind is DistributionKind.LOGUNIFORM and low <= 0:
            raise SpecError([Problem(where, "loguniform needs min > 0")])
        return Distribution(kind, low=float(low), high=float(high))
    if value is None or isinstance(value, str | int | float | bool):
        return Distribution(DistributionKind.CHOICE, (value,))
    raise SpecError([Problem(where, "give a list of values or {distribution: ..., min: ..., max: ...}")])


def _finite_number(value: object) -> float | None:
    """``value`` as a finite number, or ``None``. A string is read as a float: YAML 1.1 (PyYAML)
    leaves ``1e-5`` (no dot) as text, and a sweep file's ``min: 1e-5`` means the number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_cli_parameter(text: str) -> tuple[str, Distribution]:
    """``lr=0.1,0.01`` (values; numbers become numbers) or ``lr=loguniform:1e-5:1e-2``."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise UsageError(
            f"not a sweep parameter: {text!r}", hint="write NAME=V1,V2,... or NAME=loguniform:MIN:MAX"
        )
    head, _, tail = rest.partition(":")
    if head in {k.value for k in DistributionKind} and tail:
        low, _, high = tail.partition(":")
        try:
            return name, parse_distribution(
                name, {"distribution": head, "min": _number(low), "max": _number(high)}
            )
        except SpecError as exc:
            raise UsageError(str(exc.problems[0])) from None
    return name, Distribution(DistributionKind.CHOICE, tuple(_scalar(v) for v in rest.split(",")))


def _number(text: str) -> float | int | str:
    value = _scalar(text)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else text


def _scalar(text: str) -> ParamValue:
    """``3`` → 3, ``0.1`` → 0.1, ``true`` → True, anything else stays text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def load_sweep_file(path: str | Path, *, job_overrides: Mapping[str, Any] | None = None) -> Sweep:
    doc = read_document(path)
    data = doc.data
    if not isinstance(data, Mapping):
        raise UsageError(f"invalid sweep file: {doc.path}: expected a mapping with 'parameters' and 'job'")
    allowed = {"name", "method", "samples", "seed", "max_concurrent", "parameters", "job"}
    unknown = sorted(set(data) - allowed)
    problems: list[Problem] = [
        Problem(k, f"unknown field (allowed: {', '.join(sorted(allowed))})") for k in unknown
    ]
    if problems:
        raise doc.error(problems)
    job_data = data.get("job")
    if not isinstance(job_data, Mapping):
        raise doc.error([Problem("job", "missing: the job spec every point runs (command, resources...)")])
    if job_overrides:
        from hpcplat.spec.model import _deep_merge

        job_data = _deep_merge(job_data, job_overrides)
    try:
        job = JobSpec.from_dict(job_data)
    except SpecError as exc:
        raise doc.error(exc.problems, prefix="job.") from None
    try:
        params_raw = data.get("parameters")
        if not isinstance(params_raw, Mapping):
            raise SpecError(
                [Problem("parameters", "missing: a mapping of parameter → values or distribution")]
            )
        parameters = {str(k): parse_distribution(str(k), v) for k, v in params_raw.items()}
        method_text = data.get("method", "grid")
        try:
            method = SearchMethod(method_text)
        except ValueError:
            raise SpecError(
                [Problem("method", f"unknown method {method_text!r}; allowed: grid, random")]
            ) from None
        return Sweep(
            job=job,
            parameters=parameters,
            method=method,
            samples=data.get("samples"),
            seed=int(data.get("seed", 0)),
            max_concurrent=data.get("max_concurrent"),
            name=str(data.get("name") or ""),
        )
    except SpecError as exc:
        raise doc.error(exc.problems) from None


# -- submission ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayRecord:
    job_id: str
    offset: int
    size: int


@dataclass
class SweepRecord:
    """What ``sweep.json`` in the sweep directory holds."""

    sweep_id: str
    directory: str
    name: str
    arrays: list[ArrayRecord]
    run_ids: list[str]
    points: list[dict[str, ParamValue]]
    definition: dict[str, Any] = field(default_factory=dict)

    def task_id(self, point: int) -> str:
        for array in self.arrays:
            if array.offset <= point < array.offset + array.size:
                return f"{array.job_id}_{point - array.offset}"
        raise IndexError(point)

    def save(self) -> None:
        data = {
            "format": SWEEP_FORMAT,
            "sweep_id": self.sweep_id,
            "name": self.name,
            "arrays": [vars(a) for a in self.arrays],
            "run_ids": self.run_ids,
            "points": self.points,
            "definition": self.definition,
        }
        atomic_write(Path(self.directory) / "sweep.json", json.dumps(data, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> SweepRecord:
        path = Path(directory) / "sweep.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(
                f"no sweep at {directory} (no sweep.json)", hint="`hpcplat sweep list` shows sweeps"
            ) from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        return cls(
            sweep_id=data["sweep_id"],
            directory=str(directory),
            name=data.get("name", ""),
            arrays=[ArrayRecord(**a) for a in data["arrays"]],
            run_ids=list(data["run_ids"]),
            points=list(data["points"]),
            definition=dict(data.get("definition") or {}),
        )


def sweeps_root(config: SiteConfig) -> Path:
    return config.job_root_path() / "sweeps"


def find_sweep(ref: str, config: SiteConfig | None = None) -> SweepRecord:
    """A sweep by directory or by id (under ``<job_root>/sweeps``)."""
    config = config or load_config()
    try:
        if os.path.isdir(ref):
            return SweepRecord.load(ref)
        candidate = sweeps_root(config) / ref
        if candidate.is_dir():
            return SweepRecord.load(candidate)
    except (OSError, ValueError):  # a name too long for a path, a NUL byte...
        pass
    known = sorted(p.name for p in sweeps_root(config).glob("*") if (p / "sweep.json").is_file())[-10:]
    shown = ref if len(ref) <= 80 else f"{ref[:77]}..."
    raise UsageError(
        f"no sweep {shown!r}",
        hint=f"recent sweeps: {', '.join(known)}" if known else "submit one with `hpcplat sweep submit`",
    )


def substitute(argv: Sequence[str], params: Mapping[str, ParamValue]) -> tuple[list[str], bool]:
    """``{name}`` in each argument replaced by the point's value; returns (argv, whether any was)."""
    changed = False

    def repl(match: re.Match[str]) -> str:
        nonlocal changed
        key = match.group(1)
        if key not in params:
            return match.group(0)
        changed = True
        return str(params[key])

    return [_PLACEHOLDER.sub(repl, arg) for arg in argv], changed


def chunks(total: int, max_array_size: int) -> list[tuple[int, int]]:
    """(offset, size) of each array: task indices must stay below MaxArraySize."""
    size = max(1, max_array_size)
    return [(start, min(size, total - start)) for start in range(0, total, size)]


def submit_sweep(
    sweep: Sweep,
    *,
    client: SlurmClient | None = None,
    config: SiteConfig | None = None,
    catalog: Catalog | None = None,
    cwd: str | None = None,
    python: str | None = None,
) -> SweepRecord:
    """Validate the job once, record one run per point, submit the arrays; returns the record
    saved in the sweep directory."""
    from hpcplat.submission import secrets as secret_env
    from hpcplat.submission import service
    from hpcplat.submission.render import ArrayPart, render

    config = config or load_config()
    if client is None:
        from hpcplat.slurm import get_client

        client = get_client()
    points = sweep.points()
    if not points:
        raise UsageError("the sweep has no points")
    base = secret_env.resolve(service.resolve_workdir(sweep.job, cwd))
    held: dict[str, Any] = {}

    def get_catalog() -> Catalog | None:
        if "c" not in held:
            held["c"] = catalog if catalog is not None else service.open_catalog(config)
        return held["c"]  # type: ignore[no-any-return]

    checked = service.check(base, client=client, config=config, catalog=get_catalog)
    service.ensure_job_root(config)
    sweep_id = f"{_slug(sweep.name)}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    directory = sweeps_root(config) / sweep_id
    per_point, any_placeholder = _write_points(directory, base, points)
    pieces = chunks(len(points), _max_array_size(client))
    cat = get_catalog()

    # One run per point, all recorded before the first sbatch. Every task of an array runs the
    # same script; the copy recorded with the intents lacks only the dependency that chains the
    # arrays of a split sweep (known once the previous array has its job id).
    run_ids: list[str] = []
    record = SweepRecord(sweep_id, str(directory), sweep.name, [], run_ids, points, sweep.to_dict())
    arrays = [
        ArrayPart(
            sweep_dir=str(directory),
            offset=offset,
            size=size,
            max_concurrent=sweep.max_concurrent,
            per_point_argv=any_placeholder,
        )
        for offset, size in pieces
    ]

    def script_for(array: ArrayPart) -> str:
        return render(
            checked.spec,
            config,
            run_id=f"sweep:{sweep_id}",
            placement=checked.placement,
            python=python,
            datasets=checked.datasets,
            array=array,
        )

    if cat is None:
        run_ids.extend(f"{sweep_id}-{i}" for i in range(len(points)))
    else:
        run_ids.extend(
            _record_intents(
                cat,
                checked,
                base,
                per_point,
                arrays=arrays,
                script_for=script_for,
                config=config,
                sweep_id=sweep_id,
            )
        )
    (directory / "run_ids").write_text("".join(f"{r}\n" for r in run_ids))
    service.write_secrets(checked.spec, config, f"sweep:{sweep_id}")
    _submit_arrays(
        record, arrays, script_for, client=client, catalog=cat, config=config, sweep=sweep, base=base
    )
    return record


def _write_points(
    directory: Path, base: JobSpec, points: Sequence[Mapping[str, ParamValue]]
) -> tuple[list[tuple[list[str], dict[str, ParamValue]]], bool]:
    """Create the sweep directory with one folder per point (holding its argv when a ``{name}``
    placeholder makes the points' commands differ) and ``params.jsonl``; returns each point's
    (argv, params) and whether any argument had a placeholder."""
    (directory / "points").mkdir(parents=True)
    per_point: list[tuple[list[str], dict[str, ParamValue]]] = []
    any_placeholder = False
    for params in points:
        merged = {**base.params, **params}
        argv, changed = substitute(base.command, merged)
        any_placeholder |= changed
        per_point.append((argv, merged))
    for i, (argv, _) in enumerate(per_point):
        point_dir = directory / "points" / str(i)
        point_dir.mkdir()
        if any_placeholder:
            (point_dir / "argv").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    (directory / "params.jsonl").write_text(
        "".join(json.dumps(m, sort_keys=True, separators=(",", ":")) + "\n" for _, m in per_point)
    )
    return per_point, any_placeholder


def _max_array_size(client: SlurmClient) -> int:
    """Slurm's ``MaxArraySize`` (task indices stay below it), or its default when unreadable."""
    try:
        return int(client.config().get("MaxArraySize", DEFAULT_MAX_ARRAY_SIZE))
    except ValueError:
        return DEFAULT_MAX_ARRAY_SIZE


def _record_intents(
    cat: Catalog,
    checked: Checked,
    base: JobSpec,
    per_point: Sequence[tuple[list[str], dict[str, ParamValue]]],
    *,
    arrays: Sequence[ArrayPart],
    script_for: Callable[[ArrayPart], str],
    config: SiteConfig,
    sweep_id: str,
) -> list[str]:
    """Record one run per point in the catalog, in point order; returns their run ids."""
    from hpcplat.submission import service
    from hpcplat.submission.validate import Checked

    provenance = service.capture_provenance(base.workdir or os.getcwd())
    request = service.slurm_request(checked, config)
    run_ids: list[str] = []
    for array in arrays:
        script = script_for(array)
        for i in range(array.offset, array.offset + array.size):
            argv, merged = per_point[i]
            point_spec = checked.spec.replace(
                command=tuple(argv), params=merged, tags=(*base.tags, f"sweep:{sweep_id}")
            )
            point = Checked(
                spec=point_spec,
                placement=checked.placement,
                datasets=checked.datasets,
                resolved_datasets=checked.resolved_datasets,
            )
            intent = service.make_intent(
                point,
                config,
                script=script,
                provenance=provenance,
                request={**request, "sweep_id": sweep_id, "sweep_point": i},
            )
            run_ids.append(cat.record_intent(intent))
    return run_ids


def _submit_arrays(
    record: SweepRecord,
    arrays: Sequence[ArrayPart],
    script_for: Callable[[ArrayPart], str],
    *,
    client: SlurmClient,
    catalog: Catalog | None,
    config: SiteConfig,
    sweep: Sweep,
    base: JobSpec,
) -> None:
    """sbatch each array in turn, saving the record after each; a failure undoes the sweep."""
    from hpcplat.submission import service

    previous: str | None = None
    for k, array in enumerate(arrays):
        if previous is not None and sweep.max_concurrent:
            array = replace(array, after_any=previous)  # the limit holds across the arrays
        runs = record.run_ids[array.offset : array.offset + array.size] if catalog is not None else []
        try:
            job_id = service.submit_array_script(
                client,
                script_for(array),
                cwd=base.workdir or os.getcwd(),
                catalog=catalog,
                run_ids=runs,
                catalog_url=config.catalog_url or "",
                array=array,
            )
        except HpcplatError as exc:
            raise _undo(exc, record, arrays[k + 1 :], client=client, catalog=catalog) from exc
        record.arrays.append(ArrayRecord(job_id, array.offset, array.size))
        record.save()
        previous = job_id


def _undo(
    exc: HpcplatError,
    record: SweepRecord,
    unsent: Sequence[Any],
    *,
    client: SlurmClient,
    catalog: Catalog | None,
) -> HpcplatError:
    """An array failed part way through a split sweep: cancel the arrays already queued and mark
    the runs of the arrays never sent NOT_SUBMITTED, so nothing is left half-submitted."""
    notes = []
    queued = [a.job_id for a in record.arrays]
    if queued:
        try:
            client.cancel(queued)
            notes.append(f"the arrays already queued ({', '.join(queued)}) were cancelled")
        except HpcplatError as cancel_exc:
            notes.append(
                f"cancelling the arrays already queued ({', '.join(queued)}) failed: {cancel_exc.message}"
            )
    if catalog is not None:
        for array in unsent:
            for run_id in record.run_ids[array.offset : array.offset + array.size]:
                try:
                    catalog.abandon_intent(run_id, "an earlier array of the sweep failed to submit")
                except HpcplatError as inner:
                    notes.append(f"run {run_id} could not be marked NOT_SUBMITTED: {inner.message}")
    message = f"sweep {record.sweep_id} failed to submit: {exc.message}"
    if notes:
        message += "; " + "; ".join(notes)
    error = SweepError(message, hint=exc.hint)
    error.exit_code = exc.exit_code
    return error


class SweepError(HpcplatError):
    """A sweep could not be submitted completely (what was undone is in the message)."""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:40] or "sweep"


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointResult:
    index: int
    params: dict[str, ParamValue]
    run_id: str
    job_id: str
    state: JobState
    exit_code: int | None
    result: dict[str, Any] | None
    """What the point wrote to ``$HPCPLAT_RESULT_FILE`` (``None`` when nothing)."""
    elapsed_s: int | None = None
    """Slurm's elapsed time of the point's job (allocated seconds), when known."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "params": self.params,
            "run_id": self.run_id,
            "job_id": self.job_id,
            "state": self.state.value,
            "exit_code": self.exit_code,
            "result": self.result,
            "elapsed_s": self.elapsed_s,
        }


def collect(
    record: SweepRecord,
    *,
    watcher: Watcher | None = None,
    wait: bool = False,
    timeout: float | None = None,
) -> list[PointResult]:
    """Each point's state (one squeue, plus one sacct for finished ones, through the shared
    watcher) and result file."""
    from hpcplat.slurm.watcher import Watcher

    watcher = watcher or Watcher.shared()
    task_ids = [record.task_id(i) for i in range(len(record.points)) if _has_array(record, i)]
    if wait:
        watcher.wait(task_ids, timeout=timeout)
    else:
        watcher.follow(task_ids)
        watcher.refresh(force=True)
    out = []
    for i, params in enumerate(record.points):
        job_id = record.task_id(i) if _has_array(record, i) else ""
        info: JobInfo | None = watcher.info(job_id) if job_id else None
        out.append(
            PointResult(
                index=i,
                params=params,
                run_id=record.run_ids[i] if i < len(record.run_ids) else "",
                job_id=job_id,
                state=info.state if info else JobState.UNKNOWN,
                exit_code=info.exit_code if info else None,
                result=_read_result(Path(record.directory) / "points" / str(i) / "result.json"),
                elapsed_s=info.elapsed_s if info else None,
            )
        )
    return out


def _has_array(record: SweepRecord, point: int) -> bool:
    return any(a.offset <= point < a.offset + a.size for a in record.arrays)


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"error": f"unreadable result file: {exc}"}
    return data if isinstance(data, dict) else {"value": data}
