"""Spec files: YAML or TOML, read with the position of every value kept.

An error in a spec file names the file, the line and the field (``train.yaml:7: resources.gpus_per_node:
must be at least 0, got -1``). YAML positions come from the parser's node marks; TOML's parser
keeps none, so the line of a key is found by scanning the file's tables and keys.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hpcplat.errors import UsageError
from hpcplat.spec.model import JobSpec, Problem, SpecError

T = TypeVar("T")


@dataclass
class Document:
    """A parsed spec file: the data, and where each field of it is written."""

    path: str
    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    """Dotted field path (``resources.nodes``, ``command[1]``) → 1-based line."""

    def line_of(self, field_path: str) -> int | None:
        """The line of ``field_path``, or of its nearest enclosing field that has one."""
        path = field_path
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                break
            path = path[:cut]
        return self.lines.get(path)

    def locate(self, problems: list[Problem] | tuple[Problem, ...], *, prefix: str = "") -> list[str]:
        """Each problem as ``file:line: field: message``."""
        located = []
        for p in problems:
            full = f"{prefix}{p.field}" if p.field else prefix.rstrip(".")
            line = self.line_of(full) if full else None
            where = f"{self.path}:{line}" if line else self.path
            located.append(f"{where}: {full}: {p.message}" if full else f"{where}: {p.message}")
        return located

    def error(self, problems: list[Problem] | tuple[Problem, ...], *, prefix: str = "") -> UsageError:
        """One error listing every problem as ``file:line: field: message``."""
        located = self.locate(problems, prefix=prefix)
        if len(located) == 1:
            message = f"invalid spec file: {located[0]}"
        else:
            message = "invalid spec file:\n" + "\n".join(f"  {line}" for line in located)
        return UsageError(message, hint="fix the fields named above; `hpcplat submit --help` lists them all")

    def build(self, builder: Callable[[Any], T], *, section: str | None = None) -> T:
        """Run ``builder`` on the data (or on one top-level section of it), turning
        :class:`SpecError` into an error that names file, line and field."""
        data = self.data
        prefix = ""
        if section is not None:
            if not isinstance(data, Mapping) or section not in data:
                raise UsageError(f"{self.path}: missing section {section!r}")
            data = data[section]
            prefix = f"{section}."
        try:
            return builder(data)
        except SpecError as exc:
            raise self.error(exc.problems, prefix=prefix) from None


def read_document(path: str | Path) -> Document:
    """Read a YAML (``.yaml``/``.yml``/anything else) or TOML (``.toml``) file."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"spec file not found: {shown}", hint="check the path given to -f") from None
    except IsADirectoryError:
        raise UsageError(f"spec file is a directory: {shown}") from None
    except PermissionError:
        raise UsageError(f"cannot read spec file {shown}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"cannot read spec file {shown}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read spec file {shown}: {exc.strerror or exc}") from None
    if shown.endswith(".toml"):
        return _read_toml(shown, text)
    return _read_yaml(shown, text)


def load_spec_file(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> JobSpec:
    """A :class:`JobSpec` from a YAML or TOML file, with ``overrides`` (same shape as
    ``JobSpec.to_dict()``) applied over the file's fields."""
    doc = read_document(path)
    if not isinstance(doc.data, Mapping):
        kind = "empty" if doc.data is None else f"a {type(doc.data).__name__}"
        raise UsageError(
            f"invalid spec file: {doc.path}: expected a mapping of job fields, the file holds {kind}"
        )
    data: Mapping[str, Any] = doc.data
    if overrides:
        from hpcplat.spec.model import _deep_merge

        data = _deep_merge(data, overrides)
    return _build_with(doc, data)


class SpecFileError(UsageError):
    """A spec file whose fields are invalid: the located problems (``file:line: field: message``)
    and the :class:`SpecError` they came from (its ``partial`` spec lets the cluster checks run on
    the rest of the file)."""

    def __init__(self, error: UsageError, located: list[str], spec_error: SpecError) -> None:
        super().__init__(error.message, hint=error.hint)
        self.located = located
        self.spec_error = spec_error


def _build_with(doc: Document, data: Mapping[str, Any]) -> JobSpec:
    try:
        return JobSpec.from_dict(data)
    except SpecError as exc:
        error = doc.error(exc.problems)
        raise SpecFileError(error, doc.locate(exc.problems), exc) from None


# -- YAML ---------------------------------------------------------------------------------------


def _unreadable(path: str, exc: Any) -> UsageError:
    return UsageError(
        f"malformed spec file: {path}: character {exc.character!r} at position {exc.position} "
        "is not allowed in YAML",
        hint="remove control characters from the file (or write the spec in TOML)",
    )


def _read_yaml(path: str, text: str) -> Document:
    import yaml

    try:
        loader = yaml.SafeLoader(text)  # the reader refuses control characters already here
    except yaml.reader.ReaderError as exc:
        raise _unreadable(path, exc) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:
        raise _unreadable(path, exc) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        reason = exc.problem or exc.context or "malformed YAML"
        raise UsageError(
            f"malformed spec file: {where}: {reason}", hint="check the YAML syntax on that line"
        ) from None
    except yaml.YAMLError as exc:
        raise UsageError(f"malformed spec file: {path}: {exc}") from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _yaml_lines(node, path, lines)
    doc = Document(path=path, data=data)
    doc.lines.update(lines)
    return doc


MAX_YAML_NODES = 100_000
"""Nodes a spec may expand to, aliases included: a job spec is small, and aliases of aliases can
otherwise expand to billions of values (the "billion laughs" document)."""


def _yaml_lines(root: Any, doc_path: str, lines: dict[str, int]) -> None:
    """Record the line of every field, refusing a self-referencing anchor (``a: &x [*x]`` would
    recurse forever) and a document that expands past :data:`MAX_YAML_NODES` nodes."""
    import yaml

    stack: list[tuple[Any, str, tuple[int, ...]]] = [(root, "", ())]
    visited = 0
    while stack:
        node, path, ancestors = stack.pop()
        visited += 1
        if visited > MAX_YAML_NODES:
            raise UsageError(
                f"spec file too large: {doc_path} expands to more than {MAX_YAML_NODES:,} values "
                "(aliases of aliases?)",
                hint="write the spec without nested YAML aliases",
            )
        if id(node) in ancestors:
            raise UsageError(
                f"malformed spec file: {doc_path}:{node.start_mark.line + 1}: a YAML anchor refers to "
                "itself (the value would be infinite)",
                hint="remove the alias (*name) that points back into its own anchor (&name)",
            )
        if path:
            lines.setdefault(path, node.start_mark.line + 1)
        inner = (*ancestors, id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                lines[child] = key_node.start_mark.line + 1
                stack.append((value_node, child, inner))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                stack.append((item, f"{path}[{i}]", inner))


# -- TOML ---------------------------------------------------------------------------------------

_TOML_LINE = re.compile(r"(?:at line (\d+))")
_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def _read_toml(path: str, text: str) -> Document:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_LINE.search(message)
        where = f"{path}:{match.group(1)}" if match else path
        raise UsageError(
            f"malformed spec file: {where}: {message}", hint="check the TOML syntax on that line"
        ) from None
    doc = Document(path=path, data=data)
    doc.lines.update(toml_key_lines(text))
    return doc


def _toml_key_parts(text: str) -> list[str]:
    parts = []
    for raw in re.findall(r"""[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'""", text):
        parts.append(raw[1:-1] if raw[:1] in "\"'" else raw)
    return parts


def toml_key_lines(text: str) -> dict[str, int]:
    """Dotted key path → line, for the tables and ``key = value`` lines of a TOML text."""
    lines: dict[str, int] = {}
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE.match(line)
        if header:
            table = _toml_key_parts(header.group(1))
            lines.setdefault(".".join(table), number)
            continue
        key = _KEY.match(line)
        if key:
            full = ".".join([*table, *_toml_key_parts(key.group(1))])
            lines.setdefault(full, number)
    return lines
