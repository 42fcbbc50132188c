"""``hpcplat.Executor``: a drop-in for ``submitit.AutoExecutor`` that submits through hpcplat.

Switching is one line::

    executor = submitit.AutoExecutor(folder="logs")    # before
    executor = hpcplat.Executor(folder="logs")         # after (AutoExecutor is an alias)

Everything else stays: ``update_parameters`` with submitit's names (``timeout_min``,
``gpus_per_node``, ``slurm_partition``...), ``submit``, ``map_array``, ``submit_array``,
``batch()``, and jobs with ``result()``, ``results()``, ``done()``, ``cancel()``, ``state``,
``stdout()``. The callable is pickled and run by submitit's own in-job runner, in submitit's job
folder format. What changes underneath:

* the job is a :class:`hpcplat.spec.JobSpec` submitted by :func:`hpcplat.submission.submit`
  (arrays by :func:`hpcplat.submission.sweep.submit_sweep`): validated against the cluster first,
  recorded in the catalog with its provenance, placed by priority ``tier=`` (partition, QOS,
  ``--requeue`` and the ``SIGUSR1`` warning of preemptible tiers), run on every task through
  ``hpcplat.launch``;
* status comes from the process's one shared :class:`hpcplat.slurm.watcher.Watcher` (one batched
  ``squeue`` per cycle for every job, with back-off) instead of a ``sacct`` poller per process, and
  a preempted job waiting to run again is not "done";
* a callable or argument that cannot be pickled is a :class:`UsageError` naming it, raised before
  anything is submitted; ``map_array`` over more points than ``MaxArraySize`` is split.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import cloudpickle
from submitit.core import core
from submitit.core.utils import DelayedSubmission, FailedJobError, JobPaths, UncompletedJobError

from hpcplat.errors import HpcplatError, UsageError
from hpcplat.files import atomic_write
from hpcplat.slurm.state import JobState

if TYPE_CHECKING:
    from hpcplat.catalog import Catalog
    from hpcplat.siteconfig import SiteConfig
    from hpcplat.slurm.client import SlurmClient
    from hpcplat.slurm.watcher import Watcher
    from hpcplat.spec import JobSpec

log = logging.getLogger(__name__)

R = TypeVar("R")

SUBMITIT_DEFAULT_TIMEOUT_MIN = 5
"""submitit's default time limit, kept so that switching changes nothing."""

# submitit's generic parameter names (AutoExecutor) and their types.
GENERIC_PARAMETERS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "timeout_min": int,
    "mem_gb": (int, float),
    "nodes": int,
    "cpus_per_task": int,
    "gpus_per_node": int,
    "tasks_per_node": int,
    "stderr_to_stdout": bool,
}

# hpcplat's own parameters (no prefix).
HPCPLAT_PARAMETERS: dict[str, type | tuple[type, ...]] = {
    "tier": str,
    "account": str,
    "partition": str,
    "max_requeues": int,
    "signal_warn_s": int,
    "checkpoint_dir": (str, os.PathLike),
    "modules": (list, tuple),
    "venv": (str, os.PathLike),
    "conda": str,
    "container": str,
    "env": dict,
    "datasets": (list, tuple),
    "params": dict,
    "tags": (list, tuple),
    "workdir": (str, os.PathLike),
    "depends_on": (list, tuple),
    "array_parallelism": int,
}

# submitit's ``slurm_*`` names hpcplat understands, and what each becomes.
SLURM_PARAMETERS: dict[str, str] = {
    "slurm_partition": "partition",
    "slurm_account": "account",
    "slurm_qos": "qos",
    "slurm_time": "timeout_min",
    "slurm_mem": "mem",
    "slurm_gres": "gres",
    "slurm_job_name": "name",
    "slurm_array_parallelism": "array_parallelism",
    "slurm_signal_delay_s": "signal_warn_s",
    "slurm_additional_parameters": "additional_parameters",
    "slurm_dependency": "dependency",
    "slurm_nodes": "nodes",
    "slurm_ntasks_per_node": "tasks_per_node",
    "slurm_cpus_per_task": "cpus_per_task",
    "slurm_gpus_per_node": "gpus_per_node",
    "slurm_stderr_to_stdout": "stderr_to_stdout",
}

# Keys of ``slurm_additional_parameters`` (sbatch long options) that map onto the job spec.
ADDITIONAL_PARAMETERS = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "time": "timeout_min",
    "mem": "mem",
    "gres": "gres",
    "job-name": "name",
    "job_name": "name",
    "dependency": "dependency",
    "nodes": "nodes",
    "ntasks-per-node": "tasks_per_node",
    "ntasks_per_node": "tasks_per_node",
    "cpus-per-task": "cpus_per_task",
    "cpus_per_task": "cpus_per_task",
    "requeue": "requeue",
    "signal": "signal",
}

OTHER_CLUSTERS = ("local", "debug")


# -- status: submitit's watcher interface over hpcplat's shared watcher ---------------------------


class SharedWatcherAdapter(core.InfoWatcher):
    """What submitit's ``Job`` asks its class-level watcher, answered by the process's one
    :class:`hpcplat.slurm.watcher.Watcher` (one ``squeue`` per cycle for every job, with back-off)."""

    def __init__(self) -> None:
        super().__init__(delay_s=30)
        self._watcher: Watcher | None = None

    @property
    def watcher(self) -> Watcher:
        if self._watcher is None:
            from hpcplat.slurm.watcher import Watcher

            self._watcher = Watcher.shared()
        return self._watcher

    def use(self, watcher: Watcher | None) -> None:
        """Answer from ``watcher`` instead of the shared one (None: back to the shared one)."""
        self._watcher = watcher

    def register_job(self, job_id: str) -> None:
        self._registered.add(job_id)
        self.watcher.follow([job_id])

    def _refresh(self, mode: str) -> None:
        if mode == "force":
            self.watcher.refresh(force=True)
        elif mode == "standard":
            self.watcher.refresh()
        elif mode != "cache":
            raise ValueError(f"mode must be 'standard', 'force' or 'cache', got {mode!r}")

    def update(self) -> None:
        self.watcher.refresh(force=True)

    @property
    def num_calls(self) -> int:
        stats = self.watcher.stats
        return stats.squeue_calls + stats.sacct_calls

    def job_state(self, job_id: str, mode: str = "standard") -> JobState:
        if job_id not in self._registered:
            self.register_job(job_id)
        self._refresh(mode)
        return self.watcher.state(job_id)

    def get_info(self, job_id: str, mode: str = "standard") -> dict[str, str]:
        state = self.job_state(job_id, mode)
        info = self.watcher.info(job_id)
        if info is None:
            return {}
        return {"JobID": info.job_id, "State": state.value, "NodeList": info.nodes, "Reason": info.reason}

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        return self.job_state(job_id, mode).value

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        """Terminal (or lost) for hpcplat's watcher: ``PREEMPTED``/``REQUEUED`` are not done."""
        if job_id not in self._registered:
            self.register_job(job_id)
        self._refresh(mode)
        return self.watcher.done(job_id)


class Job(core.Job[R]):
    """A submitted callable: submitit's ``Job`` with hpcplat's status, log and cancel."""

    watcher: ClassVar[SharedWatcherAdapter] = SharedWatcherAdapter()  # type: ignore[misc]

    def __init__(
        self,
        folder: Path | str,
        job_id: str,
        tasks: Sequence[int] = (0,),
        *,
        log_path: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(folder, job_id, tasks)
        self.log_path = log_path
        self.run_id = run_id
        if log_path is not None:
            self._paths = _JobPaths(folder, job_id=job_id, task_id=self.task_id, log=log_path)
        for sub in self._sub_jobs:
            if isinstance(sub, Job):
                sub.log_path = log_path
                sub.run_id = run_id
                if log_path is not None:
                    sub._paths = _JobPaths(folder, job_id=job_id, task_id=sub.task_id, log=log_path)

    @property
    def status(self) -> JobState:
        """The job's state as hpcplat's enum (``state`` gives submitit's string)."""
        return self.watcher.job_state(self.job_id, mode="standard")

    def cancel(self, check: bool = True) -> None:
        """``scancel`` (with a deadline). Slurm refusing raises ``SlurmError`` unless ``check`` is false."""
        from hpcplat.slurm import get_client

        try:
            get_client().cancel([self.job_id])
        except HpcplatError:
            if check:
                raise
            log.warning("cancelling job %s failed", self.job_id, exc_info=True)

    def exception(self) -> UncompletedJobError | FailedJobError | None:
        """submitit's, with the message naming the job's real log (submitit's names per-task
        ``*_log.err`` files hpcplat jobs do not write, and advises ``job.stderr(0)``, which takes no
        argument)."""
        if self.log_path is None or self._sub_jobs:
            return super().exception()
        self.wait()
        try:
            outcome, trace = self._get_outcome_and_result()
        except UncompletedJobError as exc:
            return exc
        if outcome != "error":
            return None
        return FailedJobError(
            f"Job {self.job_id} (task={self.task_id}) failed during processing with trace:\n"
            f"----------------------\n{trace}\n----------------------\n"
            "The job's full log (stdout and stderr of every task, with this traceback) is read by "
            f"job.stderr(), or at:\n  - {self.log_path}"
        )

    def _get_logs_string(self, name: str) -> str | None:
        """hpcplat jobs write stdout and stderr of every task to one log (``<job_root>/<id>.out``):
        ``stdout()`` and ``stderr()`` both return it."""
        if name not in {"stdout", "stderr"}:
            raise ValueError(f'Unknown "{name}", available are stdout, stderr')
        if self.log_path is None:
            return super()._get_logs_string(name)
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}<job_id={self.job_id}, task_id={self.task_id}, run_id={self.run_id}>"


class _JobPaths(JobPaths):
    """submitit's paths, with stdout and stderr both the job's one log (``<job_root>/<id>.out``),
    so that submitit's own messages name a file that exists."""

    def __init__(self, folder: Path | str, *, job_id: str, task_id: int | None, log: str) -> None:
        super().__init__(folder, job_id=job_id, task_id=task_id)
        self._log = Path(log)

    @property
    def stderr(self) -> Path:
        return self._log

    @property
    def stdout(self) -> Path:
        return self._log


# -- parameters ---------------------------------------------------------------------------------


def _valid_names() -> list[str]:
    return sorted({*GENERIC_PARAMETERS, *HPCPLAT_PARAMETERS, *SLURM_PARAMETERS})


def _parse_mem_mb(value: object) -> int:
    from hpcplat.spec import parse_memory_mb

    try:
        return parse_memory_mb(str(value))
    except (ValueError, UsageError) as exc:
        raise UsageError(
            f"slurm_mem: cannot read {value!r} as a memory size (forms: 4G, 512M, 8000)"
        ) from exc


def _parse_gres_gpus(value: object) -> int:
    text = str(value)
    parts = text.split(":")
    if parts[0] != "gpu" or not parts[-1].isdigit():
        raise UsageError(f"gres {text!r}: only GPUs are supported (gpu:N or gpu:TYPE:N)")
    return int(parts[-1])


def _parse_time_min(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    from hpcplat.spec import parse_time_minutes

    try:
        return parse_time_minutes(str(value))
    except (ValueError, UsageError) as exc:
        raise UsageError(
            f"time limit {value!r} is not a Slurm duration (forms: 90, 1:30:00, 1-00:00:00)"
        ) from exc


def _parse_dependency(value: object) -> list[str]:
    text = str(value)
    kind, _, ids = text.partition(":")
    if kind != "afterok" or not ids:
        raise UsageError(
            f"dependency {text!r}: only afterok:ID[:ID...] is supported",
            hint="pass depends_on=[job ids] (afterok) or chain with job.result()",
        )
    return [i for i in ids.split(":") if i]


class Parameters:
    """The executor's settings in hpcplat's terms, from submitit's names and hpcplat's."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def update(self, kwargs: Mapping[str, Any]) -> None:
        problems: list[str] = []
        staged: dict[str, Any] = {}
        for key, value in kwargs.items():
            if value is None:
                continue
            if key.split("_", 1)[0] in OTHER_CLUSTERS:
                continue  # submitit's local_*/debug_* settings do not apply to Slurm
            if key in SLURM_PARAMETERS:
                target = SLURM_PARAMETERS[key]
            elif key in GENERIC_PARAMETERS or key in HPCPLAT_PARAMETERS:
                target = key
            elif key.startswith("slurm_"):
                problems.append(
                    f"{key}: not supported by hpcplat.Executor (supported slurm_* names: "
                    f"{', '.join(sorted(SLURM_PARAMETERS))})"
                )
                continue
            else:
                problems.append(f"{key}: unknown parameter")
                continue
            # submitit's generic names are typed; slurm_* values are parsed (slurm_time="1:30:00").
            expected = (
                (GENERIC_PARAMETERS.get(target) or HPCPLAT_PARAMETERS.get(target)) if key == target else None
            )
            if expected is not None and (
                not isinstance(value, expected) or (isinstance(value, bool) and expected is int)
            ):
                problems.append(f"{key}: expected {_type_name(expected)}, got {value!r}")
                continue
            try:
                self._stage(staged, target, value)
            except UsageError as exc:
                problems.append(f"{key}: {exc.message}")
        if problems:
            raise UsageError(
                "invalid executor parameter(s):\n  - " + "\n  - ".join(problems),
                hint="valid parameters: " + ", ".join(_valid_names()),
            )
        self.values.update(staged)

    def _stage(self, staged: dict[str, Any], target: str, value: Any) -> None:
        if target == "additional_parameters":
            if not isinstance(value, Mapping):
                raise UsageError("expected a dict of sbatch options")
            unsupported = sorted(str(k) for k in value if str(k) not in ADDITIONAL_PARAMETERS)
            if unsupported:
                raise UsageError(
                    f"sbatch option(s) {', '.join(unsupported)} cannot be passed through hpcplat "
                    f"(supported: {', '.join(sorted(ADDITIONAL_PARAMETERS))})"
                )
            for key, item in value.items():
                self._stage(staged, ADDITIONAL_PARAMETERS[str(key)], item)
        elif target == "mem":
            staged["memory_mb"] = _parse_mem_mb(value)
        elif target == "mem_gb":
            staged["memory_mb"] = round(float(value) * 1024)
        elif target == "gres":
            staged["gpus_per_node"] = _parse_gres_gpus(value)
        elif target == "timeout_min":
            staged["timeout_min"] = _parse_time_min(value)
        elif target == "dependency":
            staged["depends_on"] = _parse_dependency(value)
        elif target in {"requeue", "signal"}:
            log.info("ignoring sbatch %s=%r: the tier decides requeue and the warning signal", target, value)
        elif target in {"nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node"}:
            staged[target] = int(value)
        else:
            staged[target] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


# -- pickling -------------------------------------------------------------------------------------


def _describe(obj: object) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    module = getattr(obj, "__module__", None)
    if name:
        return f"{module}.{name}" if module else str(name)
    return f"{type(obj).__module__}.{type(obj).__qualname__} object"


def _dumps(obj: object) -> bytes:
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]


def pickle_submission(delayed: DelayedSubmission) -> bytes:
    """The submission as bytes; a :class:`UsageError` naming the culprit when it cannot be pickled."""
    try:
        return _dumps(delayed)
    except Exception as exc:  # pickle raises many types: PicklingError, TypeError, AttributeError...
        culprit = _find_unpicklable(delayed)
        raise UsageError(
            f"cannot submit {_describe(delayed.function)}: {culprit} cannot be pickled "
            f"({type(exc).__name__}: {exc})",
            hint="jobs run in another process: pass picklable values (no open files, locks, sockets, "
            "generators or live connections) and define functions at module level or as closures over "
            "picklable values; nothing was submitted",
        ) from exc


def _find_unpicklable(delayed: DelayedSubmission) -> str:
    candidates: list[tuple[str, object]] = [(f"the callable {_describe(delayed.function)}", delayed.function)]
    candidates += [(f"positional argument {i} ({_describe(a)})", a) for i, a in enumerate(delayed.args)]
    candidates += [(f"keyword argument {k!r} ({_describe(v)})", v) for k, v in delayed.kwargs.items()]
    for label, value in candidates:
        try:
            _dumps(value)
        except Exception:  # noqa: BLE001 - probing which object fails; the caller raises
            return label
    return "the submission"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


# -- the executor ---------------------------------------------------------------------------------


class Executor(core.Executor):
    """Submit Python callables to Slurm through hpcplat; ``submitit.AutoExecutor``'s interface.

    ``folder`` holds the pickled calls and results (it must be visible from the compute nodes; it
    may contain ``%j``). ``cluster`` is ``"slurm"`` (the default when ``srun`` is on PATH),
    ``"local"`` or ``"debug"`` (run by submitit itself, for tests). Settings given here are passed
    to :meth:`update_parameters`; ``client``, ``config`` and ``catalog`` replace the Slurm client,
    site configuration and catalog (tests).
    """

    job_class = Job

    def __init__(
        self,
        folder: str | Path,
        cluster: str | None = None,
        *,
        python: str | None = None,
        client: SlurmClient | None = None,
        config: SiteConfig | None = None,
        catalog: Catalog | None = None,
        slurm_max_num_timeout: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(folder)
        self.cluster = cluster or ("slurm" if shutil.which("srun") else "local")
        self.python = python or sys.executable
        self._client = client
        self._config = config
        self._catalog = catalog
        self._settings = Parameters()
        self._delegate: core.Executor | None = None
        if slurm_max_num_timeout is not None:
            kwargs.setdefault("max_requeues", slurm_max_num_timeout)
        if self.cluster in OTHER_CLUSTERS:
            import submitit

            self._delegate = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        elif self.cluster != "slurm":
            raise UsageError(f"unknown cluster {self.cluster!r}; allowed: slurm, local, debug")
        if kwargs:
            self.update_parameters(**kwargs)

    @classmethod
    def which(cls) -> str:
        return "slurm" if shutil.which("srun") else "local"

    @classmethod
    def _valid_parameters(cls) -> set[str]:
        return set(_valid_names())

    def _internal_update_parameters(self, **kwargs: Any) -> None:
        if self._delegate is not None:
            ignored = sorted(k for k in kwargs if k in HPCPLAT_PARAMETERS)
            if ignored:
                log.info("cluster=%s ignores %s", self.cluster, ", ".join(ignored))
            self._delegate.update_parameters(
                **{k: v for k, v in kwargs.items() if k not in HPCPLAT_PARAMETERS}
            )
            return
        self._settings.update(kwargs)
        self.parameters.update({k: v for k, v in kwargs.items() if v is not None})

    # -- the job spec ----------------------------------------------------------------------------

    def _client_or_default(self) -> SlurmClient:
        if self._client is None:
            from hpcplat.slurm import get_client

            self._client = get_client()
        return self._client

    def _config_or_default(self) -> SiteConfig:
        if self._config is None:
            from hpcplat.siteconfig import load

            self._config = load()
        return self._config

    def job_spec(self, function: Callable[..., Any], *, count: int = 1) -> JobSpec:
        """The job spec every task of the submission runs (submitit's in-job runner on the folder)."""
        from hpcplat.spec import Environment, JobSpec, Resources

        s = self._settings
        qos = s.get("qos")
        tier = s.get("tier")
        if qos is not None:
            tier = self._tier_for_qos(str(qos), tier)
        variables = {str(k): str(v) for k, v in (s.get("env") or {}).items()}
        variables.update({"SUBMITIT_EXECUTOR": "slurm", "SUBMITIT_PREEMPT_SIGNAL": "USR1"})
        params = dict(s.get("params") or {})
        params.setdefault("function", _describe(function))
        if count > 1:
            params.setdefault("map_count", count)
        name = s.get("name") or getattr(function, "__name__", None) or "submitit"
        return JobSpec(
            command=(self.python, "-u", "-m", "submitit.core._submit", str(self.folder)),
            name=str(name),
            resources=Resources(
                nodes=s.get("nodes", 1),
                tasks_per_node=s.get("tasks_per_node", 1),
                gpus_per_node=s.get("gpus_per_node", 0),
                cpus_per_task=s.get("cpus_per_task", 1),
                memory_mb=s.get("memory_mb"),
                time_limit_min=s.get("timeout_min", SUBMITIT_DEFAULT_TIMEOUT_MIN),
            ),
            tier=tier,
            account=s.get("account"),
            partition=s.get("partition"),
            environment=Environment(
                modules=tuple(s.get("modules") or ()),
                venv=str(s.get("venv")) if s.get("venv") else None,
                conda=s.get("conda"),
                container=s.get("container"),
                vars=variables,
            ),
            datasets=tuple(_dataset_refs(s.get("datasets") or ())),
            params=params,
            workdir=str(s.get("workdir")) if s.get("workdir") else None,
            checkpoint_dir=str(s.get("checkpoint_dir")) if s.get("checkpoint_dir") else None,
            max_requeues=s.get("max_requeues"),
            signal_warn_s=s.get("signal_warn_s"),
            depends_on=tuple(str(j) for j in (s.get("depends_on") or ())),
            tags=("executor", *(str(t) for t in (s.get("tags") or ()))),
        )

    def _tier_for_qos(self, qos: str, tier: str | None) -> str:
        """submitit users set ``slurm_qos``; hpcplat places jobs by tier: find the tier with it."""
        tiers = self._config_or_default().tiers
        matches = sorted(name for name, t in tiers.items() if t.qos == qos)
        if tier is not None:
            if tier in matches:
                return tier
            raise UsageError(
                f"slurm_qos={qos!r} contradicts tier={tier!r} (whose QOS is {tiers[tier].qos!r})"
                if tier in tiers
                else f"unknown tier {tier!r}"
            )
        if not matches:
            known = ", ".join(f"{n} (qos {t.qos})" for n, t in sorted(tiers.items())) or "none configured"
            raise UsageError(
                f"no tier uses QOS {qos!r}; tiers: {known}", hint="pass tier=NAME instead of slurm_qos"
            )
        return matches[0]

    # -- submission ----------------------------------------------------------------------------

    def _internal_process_submissions(
        self, delayed_submissions: list[DelayedSubmission]
    ) -> list[core.Job[Any]]:
        if self._delegate is not None:
            return self._delegate._internal_process_submissions(delayed_submissions)
        if not delayed_submissions:
            return []
        timeout_min = int(self._settings.get("timeout_min", SUBMITIT_DEFAULT_TIMEOUT_MIN))
        max_requeues = self._settings.get("max_requeues")
        for delayed in delayed_submissions:
            delayed.set_timeout(timeout_min, 3 if max_requeues is None else int(max_requeues))
        blobs = [pickle_submission(d) for d in delayed_submissions]  # UsageError before any sbatch
        spec = self.job_spec(delayed_submissions[0].function, count=len(delayed_submissions))
        num_tasks = spec.resources.nodes * spec.resources.tasks_per_node
        tasks = list(range(num_tasks))
        if len(delayed_submissions) == 1:
            return [self._submit_one(spec, blobs[0], tasks)]
        return self._submit_array(spec, blobs, tasks)

    def _submit_one(self, spec: JobSpec, blob: bytes, tasks: list[int]) -> Job[Any]:
        from hpcplat.submission import submit

        submission = submit(
            spec,
            client=self._client_or_default(),
            config=self._config_or_default(),
            catalog=self._catalog,
            python=self.python,
        )
        job: Job[Any] = Job(
            self.folder, submission.job_id, tasks, log_path=submission.output_path, run_id=submission.run_id
        )
        self._place_pickles([(job, blob)], script=submission.script, cancel=[submission.job_id])
        return job

    def _submit_array(self, spec: JobSpec, blobs: list[bytes], tasks: list[int]) -> list[core.Job[Any]]:
        from hpcplat.submission.sweep import Distribution, DistributionKind, Sweep, submit_sweep

        parallelism = self._settings.get("array_parallelism")
        sweep = Sweep(
            job=spec,
            parameters={"task": Distribution(DistributionKind.CHOICE, values=tuple(range(len(blobs))))},
            max_concurrent=int(parallelism) if parallelism and parallelism < len(blobs) else None,
            name=spec.name,
        )
        record = submit_sweep(
            sweep,
            client=self._client_or_default(),
            config=self._config_or_default(),
            catalog=self._catalog,
            python=self.python,
        )
        job_root = self._config_or_default().job_root_path()
        jobs: list[Job[Any]] = []
        for point in range(len(blobs)):
            task_id = record.task_id(point)
            jobs.append(
                Job(
                    self.folder,
                    task_id,
                    tasks,
                    log_path=f"{job_root}/{task_id}.out",
                    run_id=record.run_ids[point],
                )
            )
        self._place_pickles(
            list(zip(jobs, blobs, strict=True)), script=None, cancel=[a.job_id for a in record.arrays]
        )
        return list(jobs)

    def _place_pickles(
        self, pairs: list[tuple[Job[Any], bytes]], *, script: str | None, cancel: list[str]
    ) -> None:
        """Put each pickled call where submitit's in-job runner looks for it (it waits up to 60 s
        for the file, as the job id is only known once sbatch answered). If that fails, the jobs are
        cancelled: nothing stays queued without its work."""
        try:
            for job, blob in pairs:
                _write_atomic(job.paths.submitted_pickle, blob)
                if script is not None:
                    job.paths.submission_file.write_text(script)
        except OSError as exc:
            with contextlib.suppress(HpcplatError):
                self._client_or_default().cancel(cancel)
            raise HpcplatError(
                f"job(s) {', '.join(cancel)} were queued but their pickled call could not be written "
                f"under {self.folder} ({exc}); they were cancelled",
                hint="use a writable folder shared with the compute nodes",
            ) from exc


AutoExecutor = Executor
"""The name submitit users know: ``hpcplat.AutoExecutor(folder=...)``."""


def _dataset_refs(values: Iterable[Any]) -> list[Any]:
    from hpcplat.spec import DatasetRef

    return [v if isinstance(v, DatasetRef) else DatasetRef.parse(str(v)) for v in values]


__all__ = ["AutoExecutor", "Executor", "Job", "SharedWatcherAdapter", "pickle_submission"]
