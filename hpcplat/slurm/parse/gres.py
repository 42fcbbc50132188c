"""GPUs in Slurm's GRES and TRES strings.

* a GRES with indices, as ``scontrol show job -d`` prints per node: ``gpu:2(IDX:0-1)``,
  ``gpu:a100:2(IDX:0,2)``, ``gpu:a100:1(IDX:0),gpu:v100:1(IDX:3)``;
* a node's configured GRES: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``gpu:2,shard:8``;
* a TRES: ``cpu=4,node=1,gres/gpu=2`` (``gres/gpu:a100=2`` counts under its type too).
"""

from __future__ import annotations

import re

from hpcplat.slurm.parse.hostlist import expand_hostlist

_GPU_IDX = re.compile(r"gpu[^(,]*\(IDX:([^)]*)\)")
_DETAIL = re.compile(r"^\s*Nodes=(\S+)\s.*?\bGRES=(\S*)", re.MULTILINE)


def _split_top_level(text: str) -> list[str]:
    """``gpu:a100:4(S:0-1),shard:8`` → the items, commas inside parentheses kept."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def gpu_indices(gres: str) -> tuple[int, ...] | None:
    """The GPU indices of one node's GRES (``gpu:2(IDX:0-1)`` → ``(0, 1)``), in order, every GPU
    type together; ``None`` when it names GPUs without readable indices (``IDX:N/A``), ``()``
    when it names no GPU."""
    out: list[int] = []
    found = False
    for item in _split_top_level(gres):
        if not re.match(r"gpu(?::|$)", item):
            continue
        found = True
        match = _GPU_IDX.match(item)
        if match is None:
            return None
        for part in match.group(1).split(","):
            lo, sep, hi = part.partition("-")
            if not lo.isdigit() or (sep and not hi.isdigit()):
                return None
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return tuple(out) if found else ()


def parse_gpu_indices(text: str) -> dict[str, list[int]]:
    """GPU indices per node from the detail lines of ``scontrol show job -d``
    (``Nodes=n[1-2] CPU_IDs=0-1 Mem=0 GRES=gpu:2(IDX:0-1)``); nodes without readable indices are
    left out."""
    result: dict[str, list[int]] = {}
    for match in _DETAIL.finditer(text):
        indices = gpu_indices(match.group(2))
        if not indices:
            continue
        for node in expand_hostlist(match.group(1)):
            result[node] = list(indices)
    return result


def gres_gpu_count(gres: str) -> int:
    """GPUs in a GRES string: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``gpu:2,shard:8`` → 4, 4, 2."""
    total = 0
    for item in _split_top_level(gres):
        pieces = re.sub(r"\(.*?\)", "", item).split(":")
        if pieces[0] == "gpu" and len(pieces) >= 2 and pieces[-1].isdigit():
            total += int(pieces[-1])
    return total


def tres_gpu_count(tres: str) -> int:
    """GPUs in a TRES string (``cpu=1,node=1,gres/gpu=2`` → 2); 0 without ``gres/gpu``."""
    for item in tres.split(","):
        key, _, value = item.strip().partition("=")
        if key == "gres/gpu" and value.isdigit():
            return int(value)
    return 0
