"""Searches that learn: Optuna's samplers and pruners, with every trial a Slurm job.

Optuna was chosen for its well-kept samplers (TPE, random, grid) and pruners (successive halving
= ASHA, Hyperband), and for its ask/tell API, which leaves running trials to us: the driver asks
Optuna for a trial's parameters, submits the trial as a job through the normal submission service
(validated, recorded in the catalog), reports the metric the trial logs with :mod:`hpcplat.track`
as it appears in the catalog, asks the pruner whether to stop it, and tells Optuna the objective
once the job ends.

The search state is an Optuna SQLite storage, ``study.db`` in the sweep directory: each trial's
job id and run id are stored with it (user attributes) right after ``sbatch``, so a driver that is
killed and started again (``hpcplat sweep drive SWEEP``) follows the trials already running and
asks only for the ones still missing. A trial asked for but not known to have been submitted is
looked up in Slurm by its job name (``<sweep id>-t<number>``) before it is given up.

A pruned trial gets the checkpoint signal (``scancel --signal=USR1 --full``), then, after
``prune_grace_s``, is cancelled; the reason is recorded as an event of its run. A preempted or
requeued trial is not a failure: its job is still active in Slurm and the driver keeps following it.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcplat.errors import HpcplatError, UsageError
from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.client import SlurmClient
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.state import JobState
from hpcplat.spec import JobSpec, ParamValue, Problem, SpecError
from hpcplat.submission.objective import Objective, Ranking, TrialRow, rank
from hpcplat.submission.sweep import (
    Distribution,
    DistributionKind,
    PointResult,
    SweepRecord,
    _slug,
    parse_distribution,
    substitute,
    sweeps_root,
)

if TYPE_CHECKING:
    import optuna

    from hpcplat.catalog import Catalog

log = logging.getLogger(__name__)

STUDY_FILE = "study.db"
STUDY_NAME = "sweep"


class Method(enum.Enum):
    GRID = "grid"
    RANDOM = "random"
    TPE = "tpe"
    BAYES = "bayes"
    """Another name for ``tpe``."""
    ASHA = "asha"
    """TPE sampling with successive-halving pruning."""
    HYPERBAND = "hyperband"
    """TPE sampling with Hyperband pruning."""

    @property
    def prunes(self) -> bool:
        return self in (Method.ASHA, Method.HYPERBAND)

    @classmethod
    def parse(cls, text: str) -> Method:
        try:
            return cls(text)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            hint = "pbt is not available yet" if text == "pbt" else f"use one of: {allowed}"
            raise UsageError(f"unknown search method {text!r}; allowed: {allowed}", hint=hint) from None


@dataclass(frozen=True)
class Search:
    """A search: the job every trial runs, the space, the method, the objective and the budget."""

    job: JobSpec
    parameters: Mapping[str, Distribution]
    method: Method
    objective: Objective
    max_trials: int = 20
    max_concurrent: int = 4
    seed: int = 0
    startup_trials: int | None = None
    """Random trials before TPE models the results (default: a quarter of max_trials, 2 to 10)."""
    min_steps: int = 1
    """Pruning: the first rung (steps a trial runs before it can be pruned)."""
    max_steps: int | None = None
    """Pruning: the steps of a full trial (Hyperband needs it; ASHA uses it for GPU-hours saved)."""
    reduction_factor: int = 3
    prune_grace_s: float = 30.0
    """Seconds between the checkpoint signal and the cancel of a pruned trial."""
    name: str = ""

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if not self.parameters:
            problems.append(Problem("parameters", "a search needs at least one parameter"))
        for key, value in (
            ("max_trials", self.max_trials),
            ("max_concurrent", self.max_concurrent),
            ("min_steps", self.min_steps),
        ):
            if value < 1:
                problems.append(Problem(key, f"must be at least 1, got {value}"))
        if self.reduction_factor < 2:
            problems.append(Problem("reduction_factor", f"must be at least 2, got {self.reduction_factor}"))
        if self.max_steps is not None and self.max_steps < self.min_steps:
            problems.append(Problem("max_steps", f"must be at least min_steps ({self.min_steps})"))
        if self.method is Method.HYPERBAND and self.max_steps is None:
            problems.append(Problem("max_steps", "hyperband needs the steps of a full trial (--max-steps)"))
        if self.startup_trials is not None and self.startup_trials < 0:
            problems.append(Problem("startup_trials", f"must be at least 0, got {self.startup_trials}"))
        if not (self.prune_grace_s >= 0 and math.isfinite(self.prune_grace_s)):
            problems.append(Problem("prune_grace_s", "must be a finite number >= 0"))
        if self.method is Method.GRID:
            for name, dist in self.parameters.items():
                try:
                    dist.grid_values(name)
                except UsageError as exc:
                    problems.append(Problem(f"parameters.{name}", exc.message))
        if problems:
            raise SpecError(problems)
        if not self.name:
            object.__setattr__(self, "name", self.job.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method.value,
            "objective": self.objective.to_dict(),
            "max_trials": self.max_trials,
            "max_concurrent": self.max_concurrent,
            "seed": self.seed,
            "startup_trials": self.startup_trials,
            "min_steps": self.min_steps,
            "max_steps": self.max_steps,
            "reduction_factor": self.reduction_factor,
            "prune_grace_s": self.prune_grace_s,
            "parameters": {k: v.to_dict() for k, v in self.parameters.items()},
            "job": self.job.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Search:
        return cls(
            job=JobSpec.from_dict(data["job"]),
            parameters={str(k): parse_distribution(str(k), v) for k, v in data["parameters"].items()},
            method=Method.parse(str(data["method"])),
            objective=Objective.from_dict(data["objective"]),
            max_trials=int(data["max_trials"]),
            max_concurrent=int(data["max_concurrent"]),
            seed=int(data.get("seed") or 0),
            startup_trials=data.get("startup_trials"),
            min_steps=int(data.get("min_steps") or 1),
            max_steps=data.get("max_steps"),
            reduction_factor=int(data.get("reduction_factor") or 3),
            prune_grace_s=float(data.get("prune_grace_s", 30.0)),
            name=str(data.get("name") or ""),
        )

    def grid_size(self) -> int:
        return math.prod(len(d.grid_values(n)) for n, d in self.parameters.items())

    def trial_budget(self) -> int:
        return min(self.max_trials, self.grid_size()) if self.method is Method.GRID else self.max_trials


def is_search(record: SweepRecord) -> bool:
    """Whether the sweep is a search run by a driver (rather than job arrays)."""
    return "max_trials" in record.definition and "objective" in record.definition


# -- Optuna --------------------------------------------------------------------------------------


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:  # pragma: no cover - a dependency
        raise UsageError(
            "search methods need Optuna, which is not installed", hint="pip install optuna"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(search: Search) -> dict[str, Any]:
    """Each parameter as an Optuna distribution."""
    dists = _optuna().distributions
    out: dict[str, Any] = {}
    for name, d in search.parameters.items():
        if d.kind is DistributionKind.CHOICE:
            out[name] = dists.CategoricalDistribution(list(d.values))
        elif d.kind is DistributionKind.INT:
            assert d.low is not None and d.high is not None
            out[name] = dists.IntDistribution(int(d.low), int(d.high))
        else:
            assert d.low is not None and d.high is not None
            out[name] = dists.FloatDistribution(d.low, d.high, log=d.kind is DistributionKind.LOGUNIFORM)
    return out


def make_sampler(search: Search, *, offset: int = 0) -> Any:
    """The Optuna sampler of the method. ``offset`` (the trials already in the study) changes the
    seed of a resumed driver, so it does not draw the first trials' random points again."""
    samplers = _optuna().samplers
    seed = search.seed + offset
    if search.method is Method.GRID:
        space = {n: d.grid_values(n) for n, d in search.parameters.items()}
        return samplers.GridSampler(space, seed=search.seed)
    if search.method is Method.RANDOM:
        return samplers.RandomSampler(seed=seed)
    startup = search.startup_trials
    if startup is None:
        startup = max(2, min(10, search.max_trials // 4))
    return samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


def make_pruner(search: Search) -> Any:
    pruners = _optuna().pruners
    if search.method is Method.ASHA:
        return pruners.SuccessiveHalvingPruner(
            min_resource=search.min_steps, reduction_factor=search.reduction_factor
        )
    if search.method is Method.HYPERBAND:
        return pruners.HyperbandPruner(
            min_resource=search.min_steps,
            max_resource=search.max_steps or "auto",
            reduction_factor=search.reduction_factor,
        )
    return pruners.NopPruner()


def open_study(directory: str | Path, search: Search, *, offset: int = 0) -> optuna.Study:
    optuna = _optuna()
    return optuna.create_study(  # type: ignore[no-any-return]
        study_name=STUDY_NAME,
        storage=f"sqlite:///{Path(directory) / STUDY_FILE}",
        load_if_exists=True,
        direction="maximize" if search.objective.maximize else "minimize",
        sampler=make_sampler(search, offset=offset),
        pruner=make_pruner(search),
    )


def load_study(directory: str | Path, search: Search) -> optuna.Study:
    """The study of an existing search, its sampler seeded past the trials it holds."""
    study = open_study(directory, search)
    return open_study(directory, search, offset=len(study.get_trials(deepcopy=False)))


# -- creating and submitting ---------------------------------------------------------------------


def create(
    search: Search,
    *,
    client: SlurmClient,
    config: SiteConfig,
    catalog: Catalog,
    cwd: str | None = None,
) -> SweepRecord:
    """Validate the trial job against the cluster once, create the sweep directory with
    ``sweep.json`` and an empty study; no trial is submitted yet."""
    from hpcplat.submission import service

    if search.method is Method.GRID and search.grid_size() < 1:
        raise UsageError("the grid has no points")
    job = service.resolve_workdir(search.job, cwd)
    service.check(job, client=client, config=config, catalog=lambda: catalog)
    service.ensure_job_root(config)
    search = _with_job(search, job)
    sweep_id = f"{_slug(search.name)}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    directory = sweeps_root(config) / sweep_id
    (directory / "points").mkdir(parents=True)
    record = SweepRecord(sweep_id, str(directory), search.name, [], [], [], search.to_dict())
    record.save()
    open_study(directory, search)
    return record


def _with_job(search: Search, job: JobSpec) -> Search:
    from dataclasses import replace

    return replace(search, job=job)


def submit_driver(
    record: SweepRecord,
    *,
    client: SlurmClient,
    config: SiteConfig,
    catalog: Catalog,
    tier: str | None = None,
    time_limit_min: int = 24 * 60,
    python: str | None = None,
) -> str:
    """Submit the driver as a small CPU job (1 CPU, no GPU) that survives a logout; returns its
    job id, also saved in ``sweep.json`` (``definition.driver_job``)."""
    from hpcplat.spec import Resources
    from hpcplat.submission import service

    search = Search.from_dict(record.definition)
    spec = JobSpec(
        command=(python or sys.executable, "-m", "hpcplat", "sweep", "drive", record.directory),
        name=f"{record.sweep_id}-driver",
        resources=Resources(cpus_per_task=1, time_limit_min=time_limit_min),
        tier=tier or search.job.tier,
        account=search.job.account,
        workdir=search.job.workdir,
        tags=(f"sweep:{record.sweep_id}", "sweep-driver"),
    )
    submission = service.submit(spec, client=client, config=config, catalog=catalog)
    record.definition["driver_job"] = submission.job_id
    record.save()
    return submission.job_id


# -- the driver ----------------------------------------------------------------------------------


@dataclass
class Driver:
    """Runs a search to the end: ``run()`` loops :meth:`cycle` every ``poll_s`` seconds."""

    record: SweepRecord
    client: SlurmClient
    config: SiteConfig
    catalog: Catalog
    poll_s: float = 5.0
    echo: Callable[[str], None] = log.info
    clock: Callable[[], float] = time.time
    search: Search = field(init=False)
    study: Any = field(init=False)
    slurm_calls: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.search = Search.from_dict(self.record.definition)
        self.study = load_study(self.record.directory, self.search)
        self._dists = distributions(self.search)

    # The loop.

    def run(self, *, max_cycles: int | None = None) -> Ranking:
        cycles = 0
        while self.cycle():
            cycles += 1
            if max_cycles is not None and cycles >= max_cycles:
                break
            time.sleep(self.poll_s)
        return self.ranking()

    def cycle(self) -> bool:
        """Follow the running trials, prune, finish, start new ones; False when the search is done."""
        trials = self.study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state.name == "RUNNING"]
        for t in running:
            if "job_id" not in t.user_attrs:
                self._adopt(t)
        running = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        infos = self._infos([str(t.user_attrs["job_id"]) for t in running])
        for t in running:
            info = infos.get(str(t.user_attrs["job_id"]))
            self._follow(t, info)
        active = sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.name == "RUNNING")
        started = self._counted()
        budget = self.search.trial_budget()
        while active < self.search.max_concurrent and started < budget:
            self._start()
            active += 1
            started += 1
        return active > 0 or started < budget

    def _counted(self) -> int:
        """Trials that count against max_trials (all but those never submitted)."""
        return sum(1 for t in self.study.get_trials(deepcopy=False) if not t.user_attrs.get("not_submitted"))

    # Slurm.

    def _infos(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """One squeue for the trials' jobs; one sacct for those squeue no longer knows."""
        if not job_ids:
            return {}
        self.slurm_calls += 1
        found = {j.job_id: j for j in self.client.jobs(job_ids)}
        gone = [j for j in job_ids if j not in found]
        if gone:
            self.slurm_calls += 1
            found.update({j.job_id: j for j in self.client.history(gone)})
        return found

    # Starting a trial.

    def _start(self) -> None:
        from hpcplat.submission import service

        trial = self.study.ask(self._dists)
        params: dict[str, ParamValue] = {**self.search.job.params, **trial.params}
        argv, _ = substitute(self.search.job.command, params)
        spec = self.search.job.replace(
            command=tuple(argv),
            params=params,
            name=self._job_name(trial.number),
            tags=(*self.search.job.tags, f"sweep:{self.record.sweep_id}", f"trial:{trial.number}"),
        )
        try:
            submission = service.submit(spec, client=self.client, config=self.config, catalog=self.catalog)
        except HpcplatError as exc:
            if exc.exit_code == 2:
                raise
            trial.set_user_attr("not_submitted", exc.message)
            self.study.tell(trial, state=_optuna().trial.TrialState.FAIL)
            self.echo(f"trial {trial.number}: not submitted: {exc.message}")
            return
        self.slurm_calls += 1
        trial.set_user_attr("job_id", submission.job_id)
        trial.set_user_attr("run_id", submission.run_id)
        self.echo(f"trial {trial.number}: job {submission.job_id} {json.dumps(trial.params, sort_keys=True)}")

    def _job_name(self, number: int) -> str:
        return f"{self.record.sweep_id}-t{number}"

    def _adopt(self, trial: Any) -> None:
        """A trial asked for by a driver that stopped before saving its job id: find its job by
        name, or give it up as never submitted (it does not count against max_trials)."""
        name = self._job_name(trial.number)
        user = _user()
        self.slurm_calls += 2
        jobs = [j for j in self.client.jobs(user=user) if j.name == name]
        if not jobs:
            since = trial.datetime_start or datetime.now(UTC)
            jobs = [j for j in self.client.history(user=user, since=since) if j.name == name]
        handle = self.study._storage
        if jobs and jobs[-1].comment.startswith("hpcplat:"):
            handle.set_trial_user_attr(trial._trial_id, "job_id", jobs[-1].job_id)
            handle.set_trial_user_attr(trial._trial_id, "run_id", jobs[-1].comment[len("hpcplat:") :])
            self.echo(f"trial {trial.number}: found job {jobs[-1].job_id}")
            return
        handle.set_trial_user_attr(trial._trial_id, "not_submitted", "the driver stopped before sbatch")
        self.study.tell(trial.number, state=_optuna().trial.TrialState.FAIL)
        self.echo(f"trial {trial.number}: never submitted; asking again")

    # Following a trial.

    def _follow(self, frozen: Any, info: JobInfo | None) -> None:
        optuna = _optuna()
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        series = self.catalog.metric_series(str(frozen.user_attrs["run_id"]), self.search.objective.metric)
        seen = set(frozen.intermediate_values)
        for step, value in series:
            if step not in seen:
                trial.report(value, step)
        if info is not None and info.restarts != frozen.user_attrs.get("restarts", 0):
            trial.set_user_attr("restarts", info.restarts)
        signalled = frozen.user_attrs.get("prune_signalled_at")
        if signalled is not None:
            self._finish_prune(trial, frozen, info, float(signalled))
            return
        state = info.state if info is not None else JobState.UNKNOWN
        if state.is_terminal:
            self._finish(trial, frozen, info, series)
        elif state is JobState.RUNNING and self.search.method.prunes and series and trial.should_prune():
            self._prune(trial, frozen, series)

    def _finish(self, trial: Any, frozen: Any, info: JobInfo | None, series: list[tuple[int, float]]) -> None:
        optuna = _optuna()
        assert info is not None
        trial.set_user_attr("elapsed_s", _elapsed(info, self.clock()))
        trial.set_user_attr("slurm_state", info.state.value)
        value = self.search.objective.value(series)
        if info.state is JobState.COMPLETED and value is not None:
            self.study.tell(trial, value)
            self.echo(f"trial {frozen.number}: {self.search.objective.metric} = {value:g}")
            return
        why = (
            f"no {self.search.objective.metric!r} logged"
            if info.state is JobState.COMPLETED
            else info.state.value
        )
        trial.set_user_attr("error", why)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.echo(f"trial {frozen.number}: failed ({why})")

    def _prune(self, trial: Any, frozen: Any, series: list[tuple[int, float]]) -> None:
        job_id = str(frozen.user_attrs["job_id"])
        step, value = series[-1]
        reason = (
            f"pruned by {self.search.method.value} at step {step}: "
            f"{self.search.objective.metric}={value:g} is not among the best at this rung"
        )
        trial.set_user_attr("prune_signalled_at", self.clock())
        trial.set_user_attr("prune_reason", reason)
        try:
            self.slurm_calls += 1
            self.client.cancel([job_id], signal="USR1", full=True)
        except HpcplatError as exc:
            self.echo(f"trial {frozen.number}: checkpoint signal failed: {exc.message}")
        self._event(
            frozen, job_id, f"{reason}; checkpoint signal sent, cancel in {self.search.prune_grace_s:g}s"
        )
        self.echo(f"trial {frozen.number}: {reason}")

    def _finish_prune(self, trial: Any, frozen: Any, info: JobInfo | None, signalled: float) -> None:
        optuna = _optuna()
        job_id = str(frozen.user_attrs["job_id"])
        alive = info is not None and info.state.is_active
        if alive and self.clock() - signalled < self.search.prune_grace_s:
            return
        if alive:
            try:
                self.slurm_calls += 1
                self.client.cancel([job_id])
            except HpcplatError as exc:
                self.echo(f"trial {frozen.number}: cancel failed, trying again: {exc.message}")
                return
            self._event(frozen, job_id, "cancelled: pruned trial (GPUs given back)")
        if info is not None:
            trial.set_user_attr("elapsed_s", _elapsed(info, self.clock()))
        self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    def _event(self, frozen: Any, job_id: str, reason: str) -> None:
        try:
            self.catalog.add_event(
                kind="POLICY",
                reason=reason,
                job_id=job_id,
                run_id=str(frozen.user_attrs["run_id"]),
                source="sweep",
            )
        except HpcplatError as exc:
            self.echo(f"trial {frozen.number}: event not recorded: {exc.message}")

    # Results.

    def ranking(self) -> Ranking:
        return ranking_of(self.record, self.study, self.search)


def _elapsed(info: JobInfo, now: float) -> float:
    """Allocated seconds: from start to end (squeue's end of a running job is the expected one, so
    at most now), else Slurm's elapsed."""
    if info.start_time is not None:
        end = info.end_time.timestamp() if info.end_time else now
        return max(0.0, min(end, now) - info.start_time.timestamp())
    return float(info.elapsed_s or 0)


def _user() -> str:
    from hpcplat.submission.service import current_user

    return current_user()


def ranking_of(record: SweepRecord, study: Any | None = None, search: Search | None = None) -> Ranking:
    """The ranked trials of a search sweep, from its study."""
    search = search or Search.from_dict(record.definition)
    study = study or open_study(record.directory, search)
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("not_submitted"):
            continue
        state = t.state.name
        steps = len(t.intermediate_values)
        note = str(t.user_attrs.get("prune_reason") or t.user_attrs.get("error") or "")
        rows.append(
            TrialRow(
                number=t.number,
                params=dict(t.params),
                state=state,
                run_id=str(t.user_attrs.get("run_id", "")),
                job_id=str(t.user_attrs.get("job_id", "")),
                value=t.value if state == "COMPLETE" else None,
                steps=steps,
                elapsed_s=float(t.user_attrs.get("elapsed_s", 0.0)),
                restarts=int(t.user_attrs.get("restarts", 0)),
                note=note,
            )
        )
    ranking = rank(
        search.objective, rows, gpus_per_trial=search.job.resources.total_gpus, max_steps=search.max_steps
    )
    ranking.extra = {"method": search.method.value, "max_trials": search.trial_budget()}
    return ranking


def ranking_of_points(
    record: SweepRecord, points: list[PointResult], objective: Objective, catalog: Catalog | None
) -> Ranking:
    """An array sweep ranked by ``objective``: each point's metric series from the catalog, else
    the key of that name in the JSON it wrote to ``$HPCPLAT_RESULT_FILE``."""
    rows = []
    for p in points:
        series = catalog.metric_series(p.run_id, objective.metric) if catalog is not None and p.run_id else []
        value = objective.value(series)
        if value is None and p.result is not None:
            raw = p.result.get(objective.metric)
            if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
                value = float(raw)
        state = _row_state(p.state)
        rows.append(
            TrialRow(
                number=p.index,
                params=dict(p.params),
                state=state,
                run_id=p.run_id,
                job_id=p.job_id,
                value=value if state == "COMPLETE" else None,
                steps=len(series),
                elapsed_s=float(p.elapsed_s or 0),
                note="" if state == "COMPLETE" else p.state.value,
            )
        )
    job = record.definition.get("job") or {}
    gpus = 0
    try:
        gpus = JobSpec.from_dict(job).resources.total_gpus if job else 0
    except HpcplatError:
        gpus = 0
    ranking = rank(objective, rows, gpus_per_trial=gpus)
    ranking.extra = {"method": str(record.definition.get("method", "grid"))}
    return ranking


def _row_state(state: JobState) -> str:
    if state is JobState.COMPLETED:
        return "COMPLETE"
    if state.is_terminal:
        return "FAIL"
    return "RUNNING" if state.is_active else state.value
