"""The sbatch templates for power users (``slurm_templates/*.sbatch.j2``).

Each template starts with a Jinja comment holding a YAML header: its ``name``, a ``summary`` and
its ``variables`` (``type``: str, int, path, argv or list; ``default``; ``required``; ``help``).
:func:`render` checks and converts ``--set key=value`` values against that header and renders with
the same filters as hpcplat's own job script: ``q`` (shell quoting), ``sbatch_arg`` (``#SBATCH``
values), ``argv`` (a quoted bash array body) and ``comment``. The rendered script is what plain
``sbatch`` takes; it records itself in the catalog (``python -m hpcplat.catalog.selfregister``)
when hpcplat and a catalog are reachable, and runs anyway when not.

Templates are looked up in ``$HPCPLAT_TEMPLATES_DIR``, then the ``slurm_templates/`` directory of
the hpcplat checkout, then ``<prefix>/share/hpcplat/slurm_templates``.

:func:`check` reads back what a rendered script asks for (its ``#SBATCH`` lines: nodes, tasks,
CPUs per task, GPUs per node, memory per node, time, partition, QOS, account) and checks it against
the live cluster as ``hpcplat submit`` checks a job spec (:func:`hpcplat.submission.validate.
cluster_problems`): a request no node can hold is refused with the value and what is allowed,
instead of being queued to wait forever.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcplat.errors import UsageError

if TYPE_CHECKING:
    from hpcplat.siteconfig import SiteConfig
    from hpcplat.slurm.client import SlurmClient
    from hpcplat.spec import Resources

SUFFIX = ".sbatch.j2"
_HEADER = re.compile(r"^\{#-?(.*?)-?#\}", re.DOTALL)
TYPES = ("str", "int", "path", "argv", "list")


@dataclass(frozen=True)
class Variable:
    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    help: str = ""

    def convert(self, text: str) -> Any:
        if self.type == "int":
            try:
                return int(text)
            except ValueError:
                raise UsageError(f"{self.name} must be a whole number, got {text!r}") from None
        if self.type == "argv":
            try:
                argv = shlex.split(text)
            except ValueError as exc:
                raise UsageError(f"{self.name}: cannot split {text!r} into arguments: {exc}") from None
            if not argv:
                raise UsageError(f"{self.name} must not be empty")
            return argv
        if self.type == "list":
            return [item.strip() for item in text.split(",") if item.strip()]
        return text


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    summary: str
    variables: tuple[Variable, ...]

    def variable(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        allowed = ", ".join(v.name for v in self.variables)
        raise UsageError(
            f"template {self.name!r} has no variable {name!r}; its variables: {allowed}",
            hint=f"`hpcplat template show {self.name}` documents them",
        )


def templates_dir() -> Path:
    named = os.environ.get("HPCPLAT_TEMPLATES_DIR")
    candidates = [Path(named)] if named else []
    candidates += [
        Path(__file__).resolve().parents[2] / "slurm_templates",
        Path(sys.prefix) / "share" / "hpcplat" / "slurm_templates",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise UsageError(
        "the sbatch templates directory was not found",
        hint="set HPCPLAT_TEMPLATES_DIR to the slurm_templates directory of an hpcplat checkout",
    )


def parse_header(path: Path) -> Template:
    import yaml

    text = path.read_text(encoding="utf-8")
    match = _HEADER.match(text)
    if match is None:
        raise UsageError(f"{path}: no documentation header ({{# name: ..., variables: ... #}}) at the top")
    try:
        data = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: malformed template header: {exc}") from None
    variables = []
    for name, meta in (data.get("variables") or {}).items():
        meta = meta or {}
        kind = str(meta.get("type", "str"))
        if kind not in TYPES:
            raise UsageError(f"{path}: variable {name}: unknown type {kind!r} (types: {', '.join(TYPES)})")
        variables.append(
            Variable(
                name=str(name),
                type=kind,
                default=meta.get("default"),
                required=bool(meta.get("required", False)),
                help=str(meta.get("help", "")),
            )
        )
    name = str(data.get("name") or path.name[: -len(SUFFIX)])
    return Template(name=name, path=path, summary=str(data.get("summary", "")), variables=tuple(variables))


def list_templates() -> list[Template]:
    directory = templates_dir()
    return [parse_header(p) for p in sorted(directory.glob(f"*{SUFFIX}")) if not p.name.startswith("_")]


def get_template(name: str) -> Template:
    templates = list_templates()
    for template in templates:
        if name in (template.name, template.path.name):
            return template
    import difflib

    names = [t.name for t in templates]
    close = difflib.get_close_matches(name, names, n=1)
    raise UsageError(
        f"no template {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
        hint=f"templates: {', '.join(names)}",
    )


def parse_assignments(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        values[key.strip()] = value
    return values


def render(name: str, values: dict[str, str]) -> str:
    """The script of template ``name`` with ``values`` (text, converted per the header). A
    ``python`` variable left unset is this interpreter (the one that has hpcplat)."""
    import jinja2

    from hpcplat.submission.render import make_environment

    template = get_template(name)
    context: dict[str, Any] = {}
    for key, text in values.items():
        context[key] = template.variable(key).convert(text)
    missing = [v.name for v in template.variables if v.required and v.name not in context]
    if missing:
        raise UsageError(
            f"template {template.name!r} needs {', '.join(missing)}",
            hint=f"add --set {missing[0]}=... (see `hpcplat template show {template.name}`)",
        )
    for v in template.variables:
        if v.name == "python" and v.name not in context:
            context[v.name] = sys.executable  # the interpreter that has hpcplat
        elif v.name not in context:
            context[v.name] = v.default if v.default is not None else ""
    env = make_environment(template.path.parent)
    try:
        return env.get_template(template.path.name).render(**context)
    except ValueError as exc:  # a filter refused a value (a newline in an #SBATCH value, say)
        raise UsageError(f"template {template.name!r}: {exc}") from None
    except jinja2.TemplateError as exc:
        raise UsageError(f"template {template.name!r} failed to render: {exc}") from None


# -- what a rendered script asks for, checked against the cluster --------------------------------

_SHORT_OPTIONS = {
    "-N": "nodes",
    "-n": "ntasks",
    "-c": "cpus-per-task",
    "-t": "time",
    "-p": "partition",
    "-q": "qos",
    "-A": "account",
    "-a": "array",
}


def sbatch_directives(script: str) -> dict[str, str]:
    """The options of a script's ``#SBATCH`` lines, read as sbatch reads them: up to the first
    line of commands, the later of two equal options winning. Long names without dashes as keys
    (``{"nodes": "2", "gres": "gpu:4", "requeue": ""}``); short forms are given their long names."""
    options: dict[str, str] = {}
    for line in script.splitlines():
        text = line.strip()
        if not text.startswith("#"):
            if text:
                break  # sbatch stops reading directives at the first command
            continue
        if not text.startswith("#SBATCH"):
            continue
        try:
            tokens = shlex.split(text[len("#SBATCH") :], comments=True)
        except ValueError:
            continue
        i = 0
        while i < len(tokens):
            token = tokens[i]
            i += 1
            if token.startswith("--"):
                key, sep, value = token[2:].partition("=")
            elif token[:2] in _SHORT_OPTIONS:
                key, value, sep = _SHORT_OPTIONS[token[:2]], token[2:], "=" if token[2:] else ""
            else:
                continue
            if not sep and i < len(tokens) and not tokens[i].startswith("-"):
                value = tokens[i]
                i += 1
            options[key] = value
    return options


@dataclass(frozen=True)
class Request:
    """What a rendered script asks of the cluster (``None``: left to Slurm's default)."""

    resources: Resources
    partition: str | None
    qos: str | None
    account: str | None


def _is_count(text: str) -> bool:
    """ASCII digits only (``"²".isdigit()`` is true), and few enough to be a real count."""
    return text.isascii() and text.isdigit() and len(text) <= 9


def _gpus_per_node(options: dict[str, str]) -> int:
    if _is_count(options.get("gpus-per-node", "")):
        return int(options["gpus-per-node"])
    total = 0
    for item in options.get("gres", "").split(","):
        pieces = item.strip().split(":")
        if pieces[0] in ("gpu", "gres/gpu"):
            total += int(pieces[-1]) if len(pieces) > 1 and _is_count(pieces[-1]) else 1
    return total


def requested(name: str, script: str) -> Request:
    """The request of ``script`` (rendered from template ``name``); a value Slurm cannot read is a
    :class:`UsageError` naming it."""
    from hpcplat.spec import Resources, SpecError, parse_memory_mb, parse_time_minutes

    options = sbatch_directives(script)

    def count(key: str, default: int) -> int:
        text = options.get(key)
        if text is None or text == "":
            return default
        head = text.split("-", 1)[0]  # --nodes=2-4: at least 2
        if not _is_count(head):
            raise UsageError(f"template {name!r}: --{key}={text!r} is not a whole number")
        return int(head)

    nodes = count("nodes", 1)
    if options.get("ntasks-per-node"):
        tasks_per_node = count("ntasks-per-node", 1)
    else:
        tasks_per_node = -(-count("ntasks", 1) // max(nodes, 1))
    memory_mb: int | None = None
    mem = options.get("mem", "")
    if mem and mem != "0":  # --mem=0: all of each node's memory, which always fits
        try:
            memory_mb = parse_memory_mb(mem)
        except ValueError as exc:
            raise UsageError(f"template {name!r}: --mem: {exc}") from None
    time_min = 1  # no --time: the partition's default, which fits it
    if options.get("time"):
        try:
            time_min = parse_time_minutes(options["time"])
        except ValueError as exc:
            raise UsageError(f"template {name!r}: --time: {exc}") from None
    try:
        resources = Resources(
            nodes=nodes,
            tasks_per_node=tasks_per_node,
            gpus_per_node=_gpus_per_node(options),
            cpus_per_task=count("cpus-per-task", 1),
            memory_mb=memory_mb,
            time_limit_min=time_min,
        )
    except SpecError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise UsageError(f"template {name!r} asks for an impossible job: {problems}") from None
    return Request(
        resources=resources,
        partition=options.get("partition") or None,
        qos=options.get("qos") or None,
        account=options.get("account") or None,
    )


def check(name: str, script: str, *, client: SlurmClient, config: SiteConfig) -> Request:
    """Check the rendered ``script`` of template ``name`` against the live cluster: nodes x tasks
    x CPUs per task against the nodes' CPUs, memory against their RealMemory, GPUs per node
    against their GRES, the node count, time limits, partition, QOS and account. Raises one
    :class:`UsageError` listing every problem (each naming the value and what is allowed)."""
    from hpcplat.spec import JobSpec
    from hpcplat.submission.facts import cluster_facts
    from hpcplat.submission.placement import Placement
    from hpcplat.submission.validate import cluster_problems

    request = requested(name, script)
    spec = JobSpec(command=("true",), name=name, resources=request.resources)
    placement = Placement(
        tier=request.qos,
        partition=request.partition,
        qos=request.qos,
        account=request.account,
        preemptible=False,
        warn_seconds=0,
        max_requeues=0,
    )
    facts = cluster_facts(client, cluster=config.cluster_name, max_age_s=config.cache_seconds)
    problems = cluster_problems(spec, placement, facts)
    if problems and facts.fetched_at:
        # Never refuse on the strength of a cached answer: ask Slurm again.
        facts = cluster_facts(client, cluster=config.cluster_name, fresh=True)
        problems = cluster_problems(spec, placement, facts)
    if problems:
        head = f"template {name!r} asks for what the cluster cannot run"
        if len(problems) == 1:
            message = f"{head}: {problems[0]}"
        else:
            message = f"{head}, {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
        raise UsageError(
            message,
            hint=f"nothing was written or submitted; change the values with --set "
            f"(`hpcplat template show {name}` lists them)",
        )
    return request
