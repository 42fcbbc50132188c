"""Slurm host-list and file-list expansion: ``n[1-4]``, ``n[01-10],gpu7``, ``/dev/nvidia[0-3]``."""

from __future__ import annotations

import re

_RANGE = re.compile(r"\[([^\[\]]*)\]")


def _expand_brackets(spec: str) -> list[str]:
    match = _RANGE.search(spec)
    if match is None:
        return [spec]
    head, body, tail = spec[: match.start()], match.group(1), spec[match.end() :]
    values: list[str] = []
    for part in body.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                raise ValueError(f"bad range {part!r} in host list {spec!r}")
            width = len(lo) if lo.startswith("0") else 0
            values.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
        elif part.isdigit():
            values.append(part)
        else:
            raise ValueError(f"bad item {part!r} in host list {spec!r}")
    out: list[str] = []
    for value in values:
        out.extend(_expand_brackets(head + value + tail))
    return out


def _split_top_level(text: str) -> list[str]:
    items: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item.strip() for item in items if item.strip()]


def expand(text: str) -> list[str]:
    """Expand a Slurm host list (or a gres.conf ``File=`` list) in order; raises ``ValueError``."""
    if text.count("[") != text.count("]"):
        raise ValueError(f"unbalanced brackets in host list {text!r}")
    names: list[str] = []
    for item in _split_top_level(text.strip()):
        names.extend(_expand_brackets(item))
    return names
