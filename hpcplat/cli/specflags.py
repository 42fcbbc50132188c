"""The job spec on the command line, described once.

:data:`SPEC_FLAGS` is the one table of (flag, spec field, type, help). From it come the click
options of every command that takes spec flags (:func:`job_options`: ``hpcplat submit``,
``hpcplat sweep submit``), the overrides in ``JobSpec.to_dict()`` shape
(:func:`overrides_from_options`) and the flag named in an error about a field
(:func:`option_name`). A new spec field is one row here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from hpcplat.errors import UsageError
from hpcplat.spec import JobSpec, SpecError, load_spec_file

F = TypeVar("F", bound=Callable[..., Any])


def _pairs(values: Iterable[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"--{what} expects KEY=VALUE, got {text!r}")
        out[key] = value
    return out


def _scalar(text: str) -> Any:
    """``3`` → 3, ``0.1`` → 0.1, ``true`` → True, anything else stays text (as a sweep's values)."""
    from hpcplat.submission.sweep import _scalar as scalar

    return scalar(text)


def _env(values: tuple[str, ...]) -> dict[str, str]:
    return _pairs(values, "env")


def _secret_env(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:  # the text itself is not repeated: it may be the secret
            raise UsageError("--secret-env expects NAME=VALUE", hint="--secret-env WANDB_API_KEY=...")
        out[key] = value
    return out


def _params(values: tuple[str, ...]) -> dict[str, Any]:
    return {k: _scalar(v) for k, v in _pairs(values, "param").items()}


@dataclass(frozen=True)
class SpecFlag:
    """One job spec field as a command-line flag."""

    flag: str  # the long flag, e.g. "--mem"
    field: str  # where it goes in JobSpec.to_dict(), dotted: "resources.memory"
    help: str
    short: str | None = None  # e.g. "-G"
    dest: str | None = None  # the click parameter name (default: from the flag)
    type: Any = None  # click type of one value
    metavar: str | None = None
    multiple: bool = False  # repeatable; the values become a list, or ``convert``'s result
    convert: Callable[[tuple[str, ...]], Any] | None = None
    keyed: bool = False  # errors name the key too: "--env FOO", not "--env"

    @property
    def name(self) -> str:
        return self.dest or self.flag.lstrip("-").replace("-", "_")

    def option(self) -> Callable[[F], F]:
        decls = [d for d in (self.short, self.flag) if d]
        extra: dict[str, Any] = {}
        if self.type is not None:
            extra["type"] = self.type
        if self.metavar is not None:
            extra["metavar"] = self.metavar
        if self.multiple:
            extra["multiple"] = True
        return click.option(*decls, self.name, help=self.help, **extra)

    def value(self, raw: Any) -> Any:
        """The spec value of what click parsed, or None when the flag was not given."""
        if self.multiple:
            if not raw:
                return None
            return self.convert(raw) if self.convert is not None else list(raw)
        return raw


_DIR = click.Path(file_okay=False)

SPEC_FLAGS: tuple[SpecFlag, ...] = (
    SpecFlag("--name", "name", "Job name (default: the program's name)."),
    SpecFlag("--nodes", "resources.nodes", "Number of nodes.", short="-N", type=int),
    SpecFlag(
        "--tasks-per-node",
        "resources.tasks_per_node",
        "Tasks (processes) per node; for DDP, one per GPU.",
        type=int,
    ),
    SpecFlag("--gpus-per-node", "resources.gpus_per_node", "GPUs per node.", short="-G", type=int),
    SpecFlag("--cpus-per-task", "resources.cpus_per_task", "CPUs per task.", short="-c", type=int),
    SpecFlag("--mem", "resources.memory", "Memory per node: 4000 (MB), 16G, 512M."),
    SpecFlag(
        "--time",
        "resources.time",
        "Time limit: 90 (minutes), 1:30:00, 1-00:00:00, 2h.",
        short="-t",
        dest="time_limit",
    ),
    SpecFlag(
        "--tier", "tier", "Priority tier (see the site configuration), e.g. urgent, normal, preemptible."
    ),
    SpecFlag("--account", "account", "Slurm account (team) to charge.", short="-A"),
    SpecFlag("--partition", "partition", "Partition (overrides the tier's).", short="-p"),
    SpecFlag(
        "--module",
        "environment.modules",
        "Lmod module to load (repeatable, in order).",
        dest="modules",
        multiple=True,
    ),
    SpecFlag("--venv", "environment.venv", "Python virtual environment to activate."),
    SpecFlag("--conda", "environment.conda", "Conda environment (name or prefix) to activate."),
    SpecFlag("--container", "environment.container", "Apptainer/Singularity image to run the command in."),
    SpecFlag(
        "--bind",
        "environment.container_binds",
        "Extra container bind path (repeatable).",
        dest="binds",
        multiple=True,
    ),
    SpecFlag(
        "--env",
        "environment.vars",
        "Environment variable (repeatable).",
        dest="env_vars",
        metavar="KEY=VALUE",
        multiple=True,
        convert=_env,
        keyed=True,
    ),
    SpecFlag(
        "--secret-env",
        "environment.secret_env",
        "Secret environment variable (repeatable): passed to the job, never recorded or shown. "
        "--env variables whose names look secret (TOKEN, KEY, PASSWORD, ...) are treated the same.",
        dest="secret_env",
        metavar="KEY=VALUE",
        multiple=True,
        convert=_secret_env,
        keyed=True,
    ),
    SpecFlag(
        "--dataset",
        "datasets",
        "Dataset version (repeatable).",
        dest="datasets",
        metavar="NAME@VERSION",
        multiple=True,
    ),
    SpecFlag(
        "--param",
        "params",
        "Hyperparameter (repeatable).",
        dest="params",
        metavar="KEY=VALUE",
        multiple=True,
        convert=_params,
    ),
    SpecFlag("--workdir", "workdir", "Directory to run in (default: here).", type=_DIR),
    SpecFlag("--checkpoint-dir", "checkpoint_dir", "Where checkpoints go.", type=_DIR),
    SpecFlag(
        "--max-requeues", "max_requeues", "How often a preempted/timed-out job may come back.", type=int
    ),
    SpecFlag(
        "--signal-warn",
        "signal_warn_s",
        "Seconds of SIGUSR1 warning before the limit.",
        dest="signal_warn_s",
        type=int,
    ),
    SpecFlag(
        "--after",
        "depends_on",
        "Start after JOB succeeds (repeatable).",
        dest="depends_on",
        metavar="JOB",
        multiple=True,
    ),
    SpecFlag("--tag", "tags", "Tag recorded with the run (repeatable).", dest="tags", multiple=True),
)

_SPEC_FILE = click.option(
    "-f", "--file", "spec_file", type=click.Path(dir_okay=False), help="Job spec file (YAML or TOML)."
)


def job_options(func: F) -> F:
    """``-f FILE`` and every job spec field as a command-line option, in the table's order."""
    for option in reversed([_SPEC_FILE, *(flag.option() for flag in SPEC_FLAGS)]):
        func = option(func)
    return func


def overrides_from_options(options: dict[str, Any], command: Sequence[str]) -> dict[str, Any]:
    """The spec fields set on the command line, in ``JobSpec.to_dict()`` shape."""
    data: dict[str, Any] = {}
    if command:
        data["command"] = list(command)
    for flag in SPEC_FLAGS:
        value = flag.value(options.get(flag.name))
        if value is None:
            continue
        *parents, leaf = flag.field.split(".")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return data


def option_name(field: str) -> str:
    """The flag that sets spec field ``field`` (as a :class:`SpecError` names it), for messages:
    ``resources.memory`` → ``--mem``, ``environment.vars.FOO`` → ``--env FOO``, ``tags[2]`` →
    ``--tag``."""
    path = field.split("[", 1)[0]
    if path == "command":
        return "command"
    for flag in SPEC_FLAGS:
        if path == flag.field:
            return flag.flag
        if path.startswith(flag.field + "."):
            return f"{flag.flag} {path[len(flag.field) + 1 :]}" if flag.keyed else flag.flag
    return "--" + path.split(".", 1)[0].replace("_", "-")


def spec_from_options(
    options: dict[str, Any], command: Sequence[str], *, check_cluster: bool = False
) -> JobSpec:
    """A spec from ``-f FILE`` (if given) with the command-line options over it. With
    ``check_cluster``, an invalid request is also checked against the cluster for the rest, so that
    the error lists every problem at once."""
    from hpcplat.spec.files import SpecFileError

    overrides = overrides_from_options(options, command)
    if options.get("spec_file"):
        try:
            return load_spec_file(options["spec_file"], overrides=overrides)
        except SpecFileError as exc:
            raise _all_problems(exc, exc.located, exc.spec_error, check_cluster) from None
    if "command" not in overrides:
        raise UsageError(
            "nothing to run: give the command after --, or a spec file with -f",
            hint="hpcplat submit --gpus-per-node 1 -- python train.py --lr 0.1",
        )
    try:
        return JobSpec.from_dict(overrides)
    except SpecError as exc:
        problems = [f"{option_name(p.field)}: {p.message}" for p in exc.problems]
        if len(problems) == 1:
            message = f"invalid job request: {problems[0]}"
        else:
            message = "invalid job request:\n" + "\n".join(f"  {p}" for p in problems)
        error = UsageError(message, hint="see `hpcplat submit --help`")
        raise _all_problems(error, problems, exc, check_cluster) from None


def _all_problems(error: UsageError, shown: list[str], spec_error: SpecError, check: bool) -> UsageError:
    if not check:
        return error
    from hpcplat.submission.service import explain_invalid

    return explain_invalid(error, shown, spec_error)


__all__ = [
    "SPEC_FLAGS",
    "SpecFlag",
    "job_options",
    "option_name",
    "overrides_from_options",
    "spec_from_options",
]
