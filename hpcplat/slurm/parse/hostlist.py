"""Slurm host lists (and gres.conf ``File=`` lists): ``n[1-3,5]``, ``gpu[01-04]``, ``a[1-2]b[3-4]``.

Slurm's semantics (``scontrol show hostnames``): items are separated by commas or blanks outside
brackets (empty items are skipped); a bracket holds comma-separated numbers and ``lo-hi`` ranges,
zero-padded to the width of ``lo`` (``[01-10]``); several brackets in one item multiply
(``a[1-2]b[3-4]`` → a1b3 a1b4 a2b3 a2b4), but text after the last bracket is not allowed
(``n[1-2]x``). Anything else raises ``ValueError`` with one message form.
"""

from __future__ import annotations

import re

MAX_HOSTS = 65536
"""The most names one host list may expand to (Slurm's own limit for one range)."""

_EMPTY = frozenset({"", "(null)", "None", "None assigned", "N/A"})
_ITEM = re.compile(r"[^\[\],\s]*(?:\[[^\[\]]*\][^\[\],\s]*)*")
_PART = re.compile(r"([^\[\]]*)\[([^\[\]]*)\]")
_NUMBERS = re.compile(r"(\d+)(?:-(\d+))?")


def _bad(text: str, why: str) -> ValueError:
    return ValueError(
        f"invalid Slurm host list {text!r}: {why} (expected names and ranges such as n1,n[1-3,5],gpu[01-04])"
    )


def _values(text: str, body: str) -> list[str]:
    values: list[str] = []
    for part in body.split(","):
        match = _NUMBERS.fullmatch(part)
        if match is None:
            raise _bad(text, f"{part!r} in brackets is not a number or a range lo-hi")
        lo, hi = match.group(1), match.group(2)
        if hi is None:
            values.append(lo)
            continue
        if int(hi) < int(lo):
            raise _bad(text, f"range {part!r} runs backwards")
        if int(hi) - int(lo) >= MAX_HOSTS:
            raise _bad(text, f"range {part!r} names more than {MAX_HOSTS} hosts")
        values.extend(f"{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1))
    return values


def _expand_item(text: str, item: str) -> list[str]:
    names = [""]
    end = 0
    for match in _PART.finditer(item):
        if match.start() != end:
            raise _bad(text, f"unbalanced brackets in {item!r}")
        values = _values(text, match.group(2))
        if len(names) * len(values) > MAX_HOSTS:
            raise _bad(text, f"it names more than {MAX_HOSTS} hosts")
        names = [f"{name}{match.group(1)}{value}" for name in names for value in values]
        end = match.end()
    tail = item[end:]
    if "[" in tail or "]" in tail:
        raise _bad(text, f"unbalanced brackets in {item!r}")
    if tail and end:
        raise _bad(text, f"{tail!r} follows the last bracket of {item!r}")
    return [name + tail for name in names]


def expand_hostlist(text: str) -> list[str]:
    """Every name of a Slurm host list, in order, without calling Slurm.

    ``""``, ``(null)``, ``None``, ``None assigned`` and ``N/A`` (what Slurm prints for a job
    without nodes) give ``[]``. Bad input raises ``ValueError``.
    """
    text = text.strip()
    if text in _EMPTY:
        return []
    names: list[str] = []
    position = 0
    while position < len(text):
        if text[position] in ", \t\n":
            position += 1
            continue
        match = _ITEM.match(text, position)
        if match is None or match.end() == position:
            raise _bad(text, f"unbalanced brackets at {text[position:]!r}")
        item = match.group(0)
        position = match.end()
        if position < len(text) and text[position] not in ", \t\n":
            raise _bad(text, f"unbalanced brackets at {text[match.start() :]!r}")
        names.extend(_expand_item(text, item))
        if len(names) > MAX_HOSTS:
            raise _bad(text, f"it names more than {MAX_HOSTS} hosts")
    return names
