"""How commands print: one table layout and one JSON layout.

Tables: a header row of upper-case column names, columns as wide as their widest cell, two spaces
between columns, no trailing spaces; a missing value (``None``) is shown as ``-``. Numbers given as
numbers are right-aligned in a column named in ``right``.

JSON: ``--json`` prints one document indented by one space (objects keep their order); the result
of an action that scripts capture (``submit --json``) is one line (``compact``). Values JSON lacks
(dates, paths) are written as their text.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

import click

EMPTY = "-"


def cell(value: object) -> str:
    """The text of one table cell: ``None`` is ``-``; anything else as ``str`` gives it."""
    return EMPTY if value is None else str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: Collection[str] = ()) -> str:
    """``rows`` under ``headers``, aligned (see the module docstring)."""
    texts = [[cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in texts:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    aligned = [h in right for h in headers]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, aligned, strict=True)
        ).rstrip()

    return "\n".join([line(headers), *(line(row) for row in texts)])


def echo_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: Collection[str] = ()
) -> None:
    click.echo(table(headers, rows, right=right))


def to_json(data: Any, *, compact: bool = False) -> str:
    """``data`` as JSON text (see the module docstring)."""
    if compact:
        return json.dumps(data, default=str)
    return json.dumps(data, indent=1, default=str)


def echo_json(data: Any, *, compact: bool = False) -> None:
    click.echo(to_json(data, compact=compact))


__all__ = ["EMPTY", "cell", "echo_json", "echo_table", "table", "to_json"]
