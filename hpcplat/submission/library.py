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
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcplat.errors import UsageError

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
