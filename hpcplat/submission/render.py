"""The sbatch script of a job spec, rendered from ``templates/job.sbatch.j2``.

Two kinds of text land in the script, each protected its own way:

* ``#SBATCH`` lines are read by sbatch, not by bash. sbatch's own parser ends a line at a newline
  and treats an unescaped ``#`` as a comment, quotes and backslashes as escapes. Values go through
  :func:`sbatch_arg`, which refuses control characters and backslash-escapes every character that
  is not plainly safe.
* Everything else is bash. Every user string goes through :func:`shlex.quote`, so it arrives as
  one word whatever it holds (spaces, quotes, ``;``, ``$(...)``, backticks, newlines).

Everything is computed here in Python; the template only lays the pieces out.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcplat import __version__
from hpcplat.redact import strip_credentials
from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.parse import run_comment
from hpcplat.spec import JobSpec, format_time_minutes
from hpcplat.submission.placement import Placement, place
from hpcplat.submission.secrets import secrets_path

if TYPE_CHECKING:
    import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"
JOB_TEMPLATE = "job.sbatch.j2"

_SBATCH_SAFE = re.compile(r"[A-Za-z0-9_\-.,:/=@%+]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENV_SAFE = re.compile(r"[^A-Za-z0-9_]")


def sbatch_arg(value: object) -> str:
    """``value`` written so that sbatch's ``#SBATCH`` parser reads it back as one argument.

    That parser (not bash) splits at unquoted blanks, ends the line at ``#`` outside quotes, and
    inside double quotes drops a backslash before any character. So anything beyond plainly safe
    characters is double-quoted with ``\\`` and ``"`` backslash-escaped. Raises ``ValueError`` on
    control characters: a newline would end the ``#SBATCH`` line and turn the rest of the value
    into a line of the script.
    """
    text = str(value)
    if _CONTROL.search(text):
        raise ValueError(f"an #SBATCH value must not contain control characters such as newlines: {text!r}")
    if text and _SBATCH_SAFE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment_text(value: object) -> str:
    """Text safe inside a ``#`` comment line of the script (control characters replaced)."""
    return _CONTROL.sub("?", str(value))


def quote(value: object) -> str:
    return shlex.quote(str(value))


@dataclass(frozen=True)
class ArrayPart:
    """The job-array side of a sweep: array task ``i`` runs point ``offset + i``.

    The sweep directory holds ``run_ids`` and ``params.jsonl`` (one line per point) and, when the
    command has ``{param}`` placeholders, ``points/<point>/argv`` (NUL-separated arguments)."""

    sweep_dir: str
    offset: int
    size: int
    max_concurrent: int | None = None
    per_point_argv: bool = False
    after_any: str | None = None
    """Start only once this job (the sweep's previous array) has ended, whatever its outcome."""

    @property
    def array_spec(self) -> str:
        text = f"0-{self.size - 1}"
        if self.max_concurrent:
            text += f"%{self.max_concurrent}"
        return text


def directives(
    spec: JobSpec,
    placement: Placement,
    *,
    run_id: str,
    output: str,
    array: ArrayPart | None = None,
) -> list[str]:
    """The ``#SBATCH`` options of a spec, each already escaped for sbatch's parser."""
    r = spec.resources
    opts: list[tuple[str, object]] = [("job-name", spec.name), ("comment", run_comment(run_id))]
    if placement.account:
        opts.append(("account", placement.account))
    if placement.partition:
        opts.append(("partition", placement.partition))
    if placement.qos:
        opts.append(("qos", placement.qos))
    opts += [("nodes", r.nodes), ("ntasks-per-node", r.tasks_per_node), ("cpus-per-task", r.cpus_per_task)]
    if r.gpus_per_node:
        opts.append(("gres", f"gpu:{r.gpus_per_node}"))
    if r.memory_mb is not None:
        opts.append(("mem", f"{r.memory_mb}M"))
    opts += [("time", format_time_minutes(r.time_limit_min)), ("output", output)]
    dependency = []
    if spec.depends_on:
        dependency.append("afterok:" + ":".join(spec.depends_on))
    if array is not None and array.after_any:
        dependency.append(f"afterany:{array.after_any}")
    if dependency:
        opts.append(("dependency", ",".join(dependency)))
    if array is not None:
        opts.append(("array", array.array_spec))
    lines = [f"--{key}={sbatch_arg(value)}" for key, value in opts]
    if placement.preemptible:
        lines += ["--requeue", f"--signal=USR1@{placement.warn_seconds}", "--open-mode=append"]
    return lines


def dataset_exports(datasets: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """``HPCPLAT_DATASET_<NAME>=<path>`` for every resolved dataset that has a path."""
    out = []
    for ref, path in datasets.items():
        if path:
            name = _ENV_SAFE.sub("_", ref.split("@", 1)[0]).upper()
            out.append((f"HPCPLAT_DATASET_{name}", path))
    return out


def render(
    spec: JobSpec,
    config: SiteConfig,
    *,
    run_id: str,
    placement: Placement | None = None,
    python: str | None = None,
    datasets: Mapping[str, str | None] | None = None,
    array: ArrayPart | None = None,
) -> str:
    """The complete sbatch script for ``spec``.

    ``run_id`` is the catalog run (for an array, the sweep's id). ``python`` runs ``hpcplat.launch``
    in the job (default: the site's ``submission.python``, else this interpreter). ``datasets`` maps
    ``name@version`` to the resolved path (``None`` when the catalog gave none).
    """
    placement = placement or place(spec, config)
    job_root = str(config.job_root_path())
    output = f"{job_root}/%A_%a.out" if array else f"{job_root}/%j.out"
    env = spec.environment
    context: dict[str, Any] = {
        "version": __version__,
        "run_id": run_id,
        "name": spec.name,
        "directives": directives(spec, placement, run_id=run_id, output=output, array=array),
        "job_root": job_root,
        "catalog_url": job_catalog_url(config.catalog_url),
        "checkpoint_dir": spec.checkpoint_dir,
        "max_requeues": placement.max_requeues,
        "requeue": placement.preemptible,
        "tier": placement.tier or "",
        "datasets": " ".join(spec_ref for spec_ref in (str(d) for d in spec.datasets)),
        "dataset_exports": dataset_exports(datasets or {}),
        "params_json": json.dumps(dict(spec.params), sort_keys=True, separators=(",", ":")),
        "argv": list(spec.command),
        "env_vars": sorted(env.vars.items()),
        "secrets_file": str(secrets_path(config, run_id)) if env.secrets else "",
        "modules": list(env.modules),
        "lmod_init": list(config.lmod_init),
        "venv": env.venv,
        "conda": env.conda,
        "container": env.container,
        "container_binds": list(env.container_binds),
        "gpus": spec.resources.gpus_per_node,
        "workdir": spec.workdir,
        "python": python or config.python or sys.executable,
        "tasks_per_node": spec.resources.tasks_per_node,
        "cpus_per_task": spec.resources.cpus_per_task,
        "array": array,
    }
    return _template().render(**context)


def job_catalog_url(url: str | None) -> str:
    """The catalog URL a job script exports: the site's, without credentials
    (:func:`hpcplat.redact.strip_credentials`). The script is recorded in the catalog and kept by
    Slurm; a job whose catalog then refuses it (no password of its own, e.g. no ``~/.pgpass``)
    spools its metrics to ``$HPCPLAT_JOB_DIR/spool/``, which reconciliation ingests."""
    return strip_credentials(url or "")


def render_argv(argv: Sequence[str]) -> str:
    """A bash array literal body: every argument quoted."""
    return " ".join(quote(a) for a in argv)


def make_environment(directory: str | Path) -> jinja2.Environment:
    """A Jinja2 environment for sbatch templates in ``directory``: strict about undefined names, no
    HTML escaping, with the filters ``q`` (shell quoting), ``sbatch_arg`` (``#SBATCH`` values),
    ``argv`` (a quoted bash array body) and ``comment`` (text for a ``#`` line)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - a shell script, not HTML: values are shell-quoted by `q`
    )
    env.filters["q"] = quote
    env.filters["sbatch_arg"] = sbatch_arg
    env.filters["comment"] = comment_text
    env.filters["argv"] = render_argv
    return env


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return make_environment(TEMPLATE_DIR)


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    return _environment().get_template(JOB_TEMPLATE)
