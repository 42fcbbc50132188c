"""The job spec: one typed, validated description of a training request.

The CLI, the Python API (:class:`hpcplat.Executor`), sweeps and ``hpcplat rerun`` all build a
:class:`JobSpec`; the submission service validates it against the live cluster, renders it into an
sbatch script and records it in the catalog (``to_dict()``). Everything here is pure Python and
cheap to import.

Validation happens on construction: a spec that exists is well-formed. Problems are collected, not
stopped at the first one, and each names its field (``resources.gpus_per_node``) so a spec file
loader can point at the line.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias, TypeVar

from hpcplat.errors import UsageError
from hpcplat.redact import is_secret_name
from hpcplat.spec.units import (
    MEMORY_FORMS,
    TIME_FORMS,
    format_memory_mb,
    format_time_minutes,
    parse_memory_mb,
    parse_time_minutes,
)

ParamValue: TypeAlias = str | int | float | bool | None
"""A hyperparameter value (what JSON, YAML and TOML scalars have in common)."""

SPEC_VERSION = 1
MAX_NAME_LENGTH = 200
MAX_SIGNAL_WARN_S = 65535
MAX_PARAMS_BYTES = 64 * 1024
"""The params of one job as JSON (they are recorded in the catalog and exported to the job)."""
MAX_ENV_BYTES = 64 * 1024
"""The job's own environment variables, names and values together."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_TIER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
_JOB_ID = re.compile(r"[0-9]{1,18}(?:_[0-9]{1,9})?\Z")
"""Patterns end with ``\\Z``, never ``$`` (which lets a trailing newline through), and say
``[0-9]``, never ``\\d`` (which takes any script's digits); they are used with ``match``."""
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,18}\Z")
_RESERVED_ENV_PREFIXES = ("SLURM_", "HPCPLAT_")


@dataclass(frozen=True)
class Problem:
    field: str
    """Dotted path of the field: ``resources.nodes``, ``environment.vars.FOO``, ``command[2]``."""
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class SpecError(UsageError):
    """A job spec is not valid. ``problems`` says which fields and why."""

    def __init__(
        self,
        problems: Sequence[Problem],
        *,
        source: str | None = None,
        hint: str | None = None,
        partial: JobSpec | None = None,
    ) -> None:
        self.problems = tuple(problems)
        self.source = source
        self.partial = partial
        """The spec with every field named in ``problems`` left at its default (set by
        :meth:`JobSpec.from_dict` where it can be built), so that the checks that need the cluster
        can still judge the rest of the request and report everything at once."""
        where = f" in {source}" if source else ""
        if len(self.problems) == 1:
            message = f"invalid job spec{where}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"invalid job spec{where} ({len(self.problems)} problems):\n{lines}"
        super().__init__(message, hint=hint)


class _Problems:
    """Collects problems while a spec is read or checked."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.items)


def _check_text(problems: _Problems, path: str, value: object, *, allow_empty: bool = False) -> None:
    """A string without control characters (newlines would break ``#SBATCH`` lines)."""
    if not isinstance(value, str):
        problems.add(path, f"must be a string, got {type(value).__name__}")
        return
    if not value and not allow_empty:
        problems.add(path, "must not be empty")
    elif _CONTROL.search(value):
        problems.add(path, f"must not contain control characters such as newlines (got {value!r})")


def _check_size(problems: _Problems, path: str, value: Mapping[str, object], limit: int) -> None:
    """A mapping whose JSON text is at most ``limit`` bytes (each value goes into the job's
    environment, where one string past 128 KiB makes every program of the job fail to start)."""
    try:
        size = len(json.dumps(dict(value), default=str).encode())
    except (TypeError, ValueError):  # reported by the type checks
        return
    if size > limit:
        problems.add(
            path,
            f"too large: {size:,} bytes, at most {limit:,}; pass large inputs as a file or a dataset "
            "and put its path here",
        )


def _check_path(problems: _Problems, path: str, value: object) -> None:
    """A filesystem path: any character but NUL (it is shell-quoted wherever it is used)."""
    if not isinstance(value, str):
        problems.add(path, f"must be a string path, got {type(value).__name__}")
    elif not value:
        problems.add(path, "must not be empty")
    elif "\x00" in value:
        problems.add(path, "must not contain a NUL character")


def _check_int(
    problems: _Problems, path: str, value: object, *, minimum: int, maximum: int | None = None
) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(path, f"must be a whole number, got {value!r}")
    elif value < minimum:
        problems.add(path, f"must be at least {minimum}, got {value}")
    elif maximum is not None and value > maximum:
        problems.add(path, f"must be at most {maximum}, got {value}")


@dataclass(frozen=True)
class Resources:
    """What the job needs from the cluster. GPUs and memory are per node, CPUs per task."""

    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    memory_mb: int | None = None
    """Memory per node in megabytes (``--mem``); ``None`` leaves Slurm's default."""
    time_limit_min: int = 60

    def __post_init__(self) -> None:
        problems = _Problems()
        self._check(problems, "resources")
        problems.raise_if_any()

    def _check(self, problems: _Problems, at: str) -> None:
        _check_int(problems, f"{at}.nodes", self.nodes, minimum=1)
        _check_int(problems, f"{at}.tasks_per_node", self.tasks_per_node, minimum=1)
        _check_int(problems, f"{at}.gpus_per_node", self.gpus_per_node, minimum=0)
        _check_int(problems, f"{at}.cpus_per_task", self.cpus_per_task, minimum=1)
        if self.memory_mb is not None:
            _check_int(problems, f"{at}.memory", self.memory_mb, minimum=1)
        _check_int(problems, f"{at}.time", self.time_limit_min, minimum=1)

    @property
    def total_tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Environment:
    """The software a job runs in: Lmod modules, then a venv or conda env, optionally a container."""

    modules: tuple[str, ...] = ()
    venv: str | None = None
    """A virtual environment directory (its ``bin/activate`` is sourced)."""
    conda: str | None = None
    """A conda environment name or prefix (``conda activate``)."""
    container: str | None = None
    """An Apptainer/Singularity image; the command runs inside it (``apptainer exec``)."""
    container_binds: tuple[str, ...] = ()
    vars: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables exported before the command runs."""
    secrets: Mapping[str, str | None] = field(default_factory=dict, repr=False)
    """Environment variables passed to the job but never recorded or shown (``--secret-env``), and
    every variable of :attr:`vars` whose name looks secret (:func:`hpcplat.redact.is_secret_name`),
    which is moved here. ``None``: a recorded spec, whose values were not kept (a rerun takes them
    from the environment it runs in). See docs/submission.md, "Secrets"."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", tuple(self.modules))
        object.__setattr__(self, "container_binds", tuple(self.container_binds))
        plain = dict(self.vars)
        secret = {k: v for k, v in plain.items() if isinstance(k, str) and is_secret_name(k)}
        object.__setattr__(self, "vars", {k: v for k, v in plain.items() if k not in secret})
        object.__setattr__(self, "secrets", {**secret, **dict(self.secrets)})
        problems = _Problems()
        self._check(problems, "environment")
        problems.raise_if_any()

    def _check(self, problems: _Problems, at: str) -> None:
        for i, module in enumerate(self.modules):
            _check_text(problems, f"{at}.modules[{i}]", module)
        for name in ("venv", "conda", "container"):
            value = getattr(self, name)
            if value is not None:
                _check_path(problems, f"{at}.{name}", value)
        if self.venv is not None and self.conda is not None:
            problems.add(f"{at}.conda", "give a venv or a conda environment, not both")
        for i, bind in enumerate(self.container_binds):
            _check_path(problems, f"{at}.container_binds[{i}]", bind)
        if self.container_binds and self.container is None:
            problems.add(f"{at}.container_binds", "only meaningful with a container image")
        for key, value in self.vars.items():
            where = f"{at}.vars.{key}"
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                problems.add(
                    where,
                    "not a valid environment variable name (letters, digits, _; not starting with a digit)",
                )
            elif key.startswith(_RESERVED_ENV_PREFIXES):
                problems.add(
                    where,
                    f"names starting with {' or '.join(_RESERVED_ENV_PREFIXES)} are set by Slurm and hpcplat",
                )
            if not isinstance(value, str):
                problems.add(where, f"must be a string, got {type(value).__name__}")
            elif "\x00" in value:
                problems.add(where, "must not contain a NUL character")
        for key, secret in self.secrets.items():
            where = f"{at}.secret_env.{key}"
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                problems.add(
                    where,
                    "not a valid environment variable name (letters, digits, _; not starting with a digit)",
                )
            elif key.startswith(_RESERVED_ENV_PREFIXES):
                problems.add(
                    where,
                    f"names starting with {' or '.join(_RESERVED_ENV_PREFIXES)} are set by Slurm and hpcplat",
                )
            if secret is not None and not isinstance(secret, str):
                problems.add(where, f"must be a string, got {type(secret).__name__}")
            elif secret is not None and "\x00" in secret:
                problems.add(where, "must not contain a NUL character")
        _check_size(
            problems,
            f"{at}.vars",
            {**self.vars, **{k: v or "" for k, v in self.secrets.items()}},
            MAX_ENV_BYTES,
        )


@dataclass(frozen=True)
class DatasetRef:
    """A dataset version in the catalog: ``digits@3``; ``digits`` alone means ``digits@latest``."""

    name: str
    version: str

    @classmethod
    def parse(cls, text: str) -> DatasetRef:
        name, sep, version = text.partition("@")
        if not name.strip() or (sep and not version.strip()):
            raise ValueError(f"not a dataset reference: {text!r}; use NAME@VERSION (digits@2) or NAME")
        return cls(name.strip(), version.strip() or "latest")

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class JobSpec:
    """One training request. Build it directly, with :meth:`from_dict`, or from a spec file
    (:func:`hpcplat.spec.load_spec_file`). It is checked on construction; the cluster-dependent
    checks (partition, QOS, GPUs, time, datasets) happen at submission
    (:func:`hpcplat.submission.validate.validate`)."""

    command: tuple[str, ...]
    """The program and its arguments (argv; no shell). Run on every task of the job."""
    name: str = ""
    """Job name; defaults to the program's base name."""
    resources: Resources = field(default_factory=Resources)
    tier: str | None = None
    """Priority tier (``urgent``, ``normal``, ``preemptible``...); ``None`` takes the site default."""
    account: str | None = None
    """Slurm account (team); ``None`` takes the site default, then Slurm's."""
    partition: str | None = None
    """Overrides the tier's partition."""
    environment: Environment = field(default_factory=Environment)
    datasets: tuple[DatasetRef, ...] = ()
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    """Hyperparameters: recorded in the catalog and given to the job as ``$HPCPLAT_PARAMS`` (JSON)."""
    workdir: str | None = None
    """Directory the command runs in; ``None`` is the directory of submission."""
    checkpoint_dir: str | None = None
    """Where checkpoints go (``$HPCPLAT_CHECKPOINT_DIR``); ``None`` is ``<job dir>/checkpoints``."""
    max_requeues: int | None = None
    """How many times a preempted or timed-out job may come back; ``None`` takes the site default."""
    signal_warn_s: int | None = None
    """Seconds of warning (SIGUSR1) before the time limit for preemptible jobs; site default if unset."""
    depends_on: tuple[str, ...] = ()
    """Job ids that must complete successfully first (``afterok``)."""
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        command = self.command
        if isinstance(command, str):
            command = tuple(shlex.split(command))
        object.__setattr__(self, "command", tuple(command))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "depends_on", tuple(str(j) for j in self.depends_on))
        object.__setattr__(self, "tags", tuple(self.tags))
        if not self.name and self.command and isinstance(self.command[0], str):
            object.__setattr__(self, "name", _default_name(self.command))
        problems = _Problems()
        self._check(problems)
        problems.raise_if_any()

    def _check(self, problems: _Problems) -> None:
        if not self.command:
            problems.add(
                "command", "must not be empty: give the program to run (after -- on the command line)"
            )
        for i, arg in enumerate(self.command):
            if not isinstance(arg, str):
                problems.add(f"command[{i}]", f"must be a string, got {type(arg).__name__}")
            elif "\x00" in arg:
                problems.add(f"command[{i}]", "must not contain a NUL character")
        if self.name or self.command:
            _check_text(problems, "name", self.name)
        if isinstance(self.name, str) and len(self.name) > MAX_NAME_LENGTH:
            problems.add("name", f"must be at most {MAX_NAME_LENGTH} characters, got {len(self.name)}")
        if not isinstance(self.resources, Resources):
            problems.add("resources", "must be a Resources")
        if not isinstance(self.environment, Environment):
            problems.add("environment", "must be an Environment")
        if self.tier is not None:
            _check_text(problems, "tier", self.tier)
            if isinstance(self.tier, str) and self.tier and not _TIER_NAME.match(self.tier):
                problems.add("tier", f"not a tier name: {self.tier!r}")
        for name in ("account", "partition"):
            value = getattr(self, name)
            if value is not None:
                _check_text(problems, name, value)
                if isinstance(value, str) and any(c.isspace() or c == "," for c in value):
                    problems.add(name, f"must not contain spaces or commas, got {value!r}")
        for i, ref in enumerate(self.datasets):
            if not isinstance(ref, DatasetRef):
                problems.add(f"datasets[{i}]", "must be a DatasetRef (NAME@VERSION)")
                continue
            _check_text(problems, f"datasets[{i}]", ref.name)
            _check_text(problems, f"datasets[{i}]", ref.version)
        for key, value in self.params.items():
            if not isinstance(key, str) or not _PARAM_NAME.match(key):
                problems.add(
                    f"params.{key}",
                    "not a parameter name (letters, digits, _ . -; not starting with a digit)",
                )
            if not isinstance(value, str | int | float | bool) and value is not None:
                problems.add(
                    f"params.{key}", f"must be a string, number, boolean or null, got {type(value).__name__}"
                )
            elif isinstance(value, float) and not math.isfinite(value):
                problems.add(
                    f"params.{key}",
                    f"must be a finite number, got {value} (JSON, which carries params to the job, has no "
                    "NaN or infinity; pass it as a string if the program parses it)",
                )
        _check_size(problems, "params", self.params, MAX_PARAMS_BYTES)
        for name in ("workdir", "checkpoint_dir"):
            value = getattr(self, name)
            if value is not None:
                _check_path(problems, name, value)
        if self.max_requeues is not None:
            _check_int(problems, "max_requeues", self.max_requeues, minimum=0)
        if self.signal_warn_s is not None:
            _check_int(problems, "signal_warn_s", self.signal_warn_s, minimum=1, maximum=MAX_SIGNAL_WARN_S)
        for i, job in enumerate(self.depends_on):
            if not _JOB_ID.match(job):
                problems.add(f"depends_on[{i}]", f"not a Slurm job id: {job!r} (expected 123 or 123_4)")
        for i, tag in enumerate(self.tags):
            _check_text(problems, f"tags[{i}]", tag)

    # -- conversions -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` rebuilds an equal spec, except for the values of
        secret environment variables, which are never part of it (``secret_env`` maps each name to
        ``None``)."""
        r = self.resources
        e = self.environment
        resources: dict[str, Any] = {
            "nodes": r.nodes,
            "tasks_per_node": r.tasks_per_node,
            "gpus_per_node": r.gpus_per_node,
            "cpus_per_task": r.cpus_per_task,
            "memory": format_memory_mb(r.memory_mb) if r.memory_mb is not None else None,
            "time": format_time_minutes(r.time_limit_min),
        }
        environment: dict[str, Any] = {
            "modules": list(e.modules),
            "venv": e.venv,
            "conda": e.conda,
            "container": e.container,
            "container_binds": list(e.container_binds),
            "vars": dict(e.vars),
            # Names only: the values are passed to the job, never recorded (docs/submission.md).
            "secret_env": dict.fromkeys(sorted(e.secrets)),
        }
        return {
            "version": SPEC_VERSION,
            "name": self.name,
            "command": list(self.command),
            "resources": resources,
            "tier": self.tier,
            "account": self.account,
            "partition": self.partition,
            "environment": environment,
            "datasets": [str(d) for d in self.datasets],
            "params": dict(self.params),
            "workdir": self.workdir,
            "checkpoint_dir": self.checkpoint_dir,
            "max_requeues": self.max_requeues,
            "signal_warn_s": self.signal_warn_s,
            "depends_on": list(self.depends_on),
            "tags": list(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        """Build a spec from plain data (a parsed YAML/TOML file, or :meth:`to_dict` output).

        Unknown keys, wrong types and bad values raise :class:`SpecError` naming every field.
        ``None`` means "not set" everywhere. ``command`` may be a list or one string (split like
        a shell would, without running one).
        """
        return _from_dict(cls, data)

    def replace(self, **changes: Any) -> JobSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def with_overrides(self, data: Mapping[str, Any]) -> JobSpec:
        """A copy with the fields of ``data`` (same shape as :meth:`to_dict`, nested sections
        merged key by key) set over this spec's."""
        merged = _deep_merge(self.to_dict(), data)
        spec = JobSpec.from_dict(merged)
        # to_dict() leaves the secret values out: keep those the overrides did not replace.
        known = {k: v for k, v in self.environment.secrets.items() if v is not None}
        kept = {k: known[k] for k, v in spec.environment.secrets.items() if v is None and k in known}
        if kept:
            env = spec.environment
            spec = replace(spec, environment=replace(env, secrets={**env.secrets, **kept}))
        return spec


def _default_name(command: Sequence[str]) -> str:
    """``python train.py`` → ``train``; ``python -m pkg.train`` → ``pkg.train``; ``./run.sh`` → ``run``."""
    pick = command[0]
    if pick.rsplit("/", 1)[-1].startswith("python"):
        rest = list(command[1:])
        while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
            rest.pop(0)
        if rest[:1] == ["-m"] and len(rest) > 1:
            pick = rest[1]
        elif rest and rest[0] != "-c":
            pick = rest[0]
    name = pick.rsplit("/", 1)[-1]
    for suffix in (".py", ".sh"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    name = _CONTROL.sub("_", name)[:MAX_NAME_LENGTH]
    return name or "job"


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in ("params",):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# -- reading plain data -------------------------------------------------------------------------

TOP_FIELDS = (
    "version",
    "name",
    "command",
    "resources",
    "tier",
    "account",
    "partition",
    "environment",
    "datasets",
    "params",
    "workdir",
    "checkpoint_dir",
    "max_requeues",
    "signal_warn_s",
    "depends_on",
    "tags",
)
RESOURCE_FIELDS = ("nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "memory", "time")
ENVIRONMENT_FIELDS = ("modules", "venv", "conda", "container", "container_binds", "vars", "secret_env")


def _unknown_keys(problems: _Problems, at: str, data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    for key in data:
        if key in allowed:
            continue
        where = f"{at}.{key}" if at else str(key)
        import difflib

        close = difflib.get_close_matches(str(key), allowed, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        problems.add(where, f"unknown field{suggestion} (allowed: {', '.join(allowed)})")


def _str_list(problems: _Problems, path: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        problems.add(path, f"must be a list of strings, got {type(value).__name__}")
        return []
    out: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            problems.add(f"{path}[{i}]", f"must be a string, got {type(item).__name__}")
        else:
            out.append(str(item))
    return out


def _opt_str(problems: _Problems, path: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(path, f"must be a string, got {type(value).__name__}")
        return None
    return value


def _opt_int(problems: _Problems, path: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and _INT_TEXT.match(value.strip()):
            return int(value.strip())
        problems.add(path, f"must be a whole number, got {value!r}")
        return None
    return value


def _mapping(problems: _Problems, path: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add(path, f"must be a mapping (key: value), got {type(value).__name__}")
        return {}
    return value


def _parse_command(problems: _Problems, raw: Any) -> list[str]:
    """``command``: a string split like a shell would, or a list of arguments."""
    if isinstance(raw, str):
        try:
            return shlex.split(raw)
        except ValueError as exc:
            problems.add("command", f"cannot split into arguments: {exc}")
            return []
    if raw is None:
        problems.add("command", "missing: give the program to run")
        return []
    return _str_list(problems, "command", raw)


def _parse_resources(problems: _Problems, raw: Any) -> dict[str, Any]:
    """``resources``: the keyword arguments of :class:`Resources` (memory and time parsed)."""
    res = _mapping(problems, "resources", raw)
    _unknown_keys(problems, "resources", res, RESOURCE_FIELDS)
    resource_kw: dict[str, Any] = {}
    for key in ("nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task"):
        value = _opt_int(problems, f"resources.{key}", res.get(key))
        if value is not None:
            resource_kw[key] = value
    if res.get("memory") is not None:
        try:
            resource_kw["memory_mb"] = parse_memory_mb(res["memory"])
        except ValueError as exc:  # the parser's message says what is wrong and what is allowed
            problems.add("resources.memory", str(exc))
        except (TypeError, AttributeError):
            problems.add("resources.memory", f"not a memory size: {res['memory']!r}; use {MEMORY_FORMS}")
    if res.get("time") is not None:
        try:
            resource_kw["time_limit_min"] = parse_time_minutes(res["time"])
        except ValueError as exc:
            problems.add("resources.time", str(exc))
        except (TypeError, AttributeError):
            problems.add("resources.time", f"not a time limit: {res['time']!r}; use {TIME_FORMS}")
    return resource_kw


def _parse_env_vars(problems: _Problems, raw: Any) -> dict[str, str]:
    """``environment.vars``: strings (numbers are written as text)."""
    env_vars: dict[str, str] = {}
    for key, value in _mapping(problems, "environment.vars", raw).items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.add(f"environment.vars.{key}", f"must be a string, got {type(value).__name__}")
        else:
            env_vars[str(key)] = str(value)
    return env_vars


def _parse_secret_env(problems: _Problems, raw: Any) -> dict[str, str | None]:
    """``environment.secret_env``: NAME → value, or NAME → null / a list of names (a recorded spec,
    whose values are given when it is submitted again)."""
    if isinstance(raw, list | tuple):
        return {str(name): None for name in raw}
    secrets: dict[str, str | None] = {}
    for key, value in _mapping(problems, "environment.secret_env", raw).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
            problems.add(f"environment.secret_env.{key}", f"must be a string, got {type(value).__name__}")
        else:
            secrets[str(key)] = None if value is None else str(value)
    return secrets


def _parse_datasets(problems: _Problems, raw: Any) -> list[DatasetRef]:
    datasets: list[DatasetRef] = []
    for i, text in enumerate(_str_list(problems, "datasets", raw)):
        try:
            datasets.append(DatasetRef.parse(text))
        except ValueError as exc:
            problems.add(f"datasets[{i}]", str(exc))
    return datasets


def _parse_params(problems: _Problems, raw: Any) -> dict[str, ParamValue]:
    """``params``: scalar values only (strings, numbers, booleans, null)."""
    params: dict[str, ParamValue] = {}
    for key, value in _mapping(problems, "params", raw).items():
        if value is not None and not isinstance(value, str | int | float | bool):
            problems.add(
                f"params.{key}", f"must be a string, number, boolean or null, got {type(value).__name__}"
            )
        else:
            params[str(key)] = value
    return params


def _from_dict(cls: type[JobSpec], data: Mapping[str, Any], *, salvage: bool = True) -> JobSpec:
    problems = _Problems()
    if not isinstance(data, Mapping):
        raise SpecError([Problem("", f"a job spec must be a mapping of fields, got {type(data).__name__}")])
    _unknown_keys(problems, "", data, TOP_FIELDS)
    version = data.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        problems.add(
            "version", f"unsupported spec version {version!r} (this hpcplat reads version {SPEC_VERSION})"
        )

    command = _parse_command(problems, data.get("command"))
    resource_kw = _parse_resources(problems, data.get("resources"))
    env = _mapping(problems, "environment", data.get("environment"))
    _unknown_keys(problems, "environment", env, ENVIRONMENT_FIELDS)
    env_vars = _parse_env_vars(problems, env.get("vars"))
    secret_env = _parse_secret_env(problems, env.get("secret_env"))
    datasets = _parse_datasets(problems, data.get("datasets"))
    params = _parse_params(problems, data.get("params"))

    depends = [str(j) for j in _str_list(problems, "depends_on", data.get("depends_on"))]
    tags = _str_list(problems, "tags", data.get("tags"))
    modules = _str_list(problems, "environment.modules", env.get("modules"))
    binds = _str_list(problems, "environment.container_binds", env.get("container_binds"))
    scalars = {
        name: _opt_str(problems, name, data.get(name))
        for name in ("name", "tier", "account", "partition", "workdir", "checkpoint_dir")
    }
    env_scalars = {
        name: _opt_str(problems, f"environment.{name}", env.get(name))
        for name in ("venv", "conda", "container")
    }
    max_requeues = _opt_int(problems, "max_requeues", data.get("max_requeues"))
    signal_warn_s = _opt_int(problems, "signal_warn_s", data.get("signal_warn_s"))

    # Build the parts one by one so that every remaining problem is reported with its path.
    all_problems: list[Problem] = list(problems.items)
    resources = _build_part(Resources, all_problems, **resource_kw)
    environment = _build_part(
        Environment,
        all_problems,
        modules=tuple(modules),
        container_binds=tuple(binds),
        vars=env_vars,
        secrets=secret_env,
        **env_scalars,
    )
    try:
        spec = cls(
            command=tuple(command),
            name=scalars["name"] or "",
            resources=resources,
            tier=scalars["tier"],
            account=scalars["account"],
            partition=scalars["partition"],
            environment=environment,
            datasets=tuple(datasets),
            params=params,
            workdir=scalars["workdir"],
            checkpoint_dir=scalars["checkpoint_dir"],
            max_requeues=max_requeues,
            signal_warn_s=signal_warn_s,
            depends_on=tuple(depends),
            tags=tuple(tags),
        )
    except SpecError as exc:
        known = {(p.field, p.message) for p in all_problems}
        all_problems.extend(p for p in exc.problems if (p.field, p.message) not in known)
        partial = _salvage(cls, data, all_problems) if salvage else None
        raise SpecError(all_problems, partial=partial) from None
    if all_problems:
        raise SpecError(all_problems, partial=_salvage(cls, data, all_problems) if salvage else None)
    return spec


_Part = TypeVar("_Part")


def _build_part(part: Callable[..., _Part], problems: list[Problem], **kwargs: Any) -> _Part:
    """``part(**kwargs)``, or the part's defaults with its problems added to ``problems``."""
    try:
        return part(**kwargs)
    except SpecError as exc:
        problems.extend(exc.problems)
        return part()


_SECTIONS = ("resources", "environment")
PLACEHOLDER_COMMAND = ("<no command>",)
"""Stands for a missing or broken command in :attr:`SpecError.partial` (nothing runs it)."""


def _without(data: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """``data`` less the keys that the problem ``fields`` name (``resources.nodes`` → the ``nodes``
    key of ``resources``; ``environment.vars.X`` → the whole ``vars``; ``command[2]`` → ``command``)."""
    out = {k: dict(v) if k in _SECTIONS and isinstance(v, Mapping) else v for k, v in data.items()}
    for name in fields:
        parts = name.split("[", 1)[0].split(".")
        if not parts[0]:
            continue
        section = out.get(parts[0])
        if parts[0] in _SECTIONS and len(parts) > 1 and isinstance(section, dict):
            section.pop(parts[1], None)
        else:
            out.pop(parts[0], None)
    return out


def _salvage(cls: type[JobSpec], data: Mapping[str, Any], problems: Sequence[Problem]) -> JobSpec | None:
    """The spec built from ``data`` without the fields ``problems`` name, or ``None``."""
    if not isinstance(data, Mapping):
        return None
    fields = {p.field for p in problems}
    for _ in range(3):  # a field dropped can reveal another (a default clashing with what is left)
        rest = _without(data, fields)
        if "command" in fields or rest.get("command") is None:
            rest["command"] = list(PLACEHOLDER_COMMAND)
        try:
            return _from_dict(cls, rest, salvage=False)
        except SpecError as exc:
            new = {p.field for p in exc.problems} - fields
            if not new:
                return None
            fields |= new
    return None
