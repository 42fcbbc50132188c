"""Parsing and printing of the quantities a job spec holds: time limits and memory sizes.

Time limits accept every form ``sbatch --time`` does (``90``, ``1:30:00``, ``2-12``,
``1-00:00:00``) plus the short forms people type (``90m``, ``2h``, ``1d``, ``30s``). Memory
accepts ``4000`` (megabytes, as Slurm), ``16G``, ``512M``, ``1T`` and ``16GB``.
"""

from __future__ import annotations

import math
import re

_SUFFIX_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
# ASCII digits only ([0-9], not \d) and \Z, not $ (which lets a trailing newline through); at most
# 12 digits a number, so no value overflows a float or Slurm's own fields.
_SHORT_TIME = re.compile(r"(?P<n>[0-9]{1,12}(?:\.[0-9]{1,6})?)[ \t]*(?P<unit>s|m|min|h|d)\Z", re.IGNORECASE)
_SLURM_TIME = re.compile(r"(?:(?P<days>[0-9]{1,6})-)?(?P<rest>[0-9]{1,12}(?::[0-9]{1,12}){0,2})\Z")
_MEMORY = re.compile(r"(?P<n>[0-9]{1,12}(?:\.[0-9]{1,6})?)[ \t]*(?P<unit>[KMGT]?)(?:I?B)?\Z", re.IGNORECASE)
MAX_TIME_MINUTES = 365 * 1440
"""A year: longer than any site's MaxTime; Slurm's own limit is a 32-bit count of minutes."""
MAX_MEMORY_MB = 1 << 40
"""A million terabytes per node: far past any machine, far below Slurm's 64-bit field."""
_MEMORY_FACTOR_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}

TIME_FORMS = "minutes (90), H:MM:SS (1:30:00), D-HH (2-12), D-HH:MM:SS (1-00:00:00) or 90m / 2h / 1d"
MEMORY_FORMS = "megabytes (4000) or a size with a unit (512M, 16G, 1T)"


def parse_time_minutes(value: str | int) -> int:
    """A time limit in whole minutes (seconds round up, as Slurm does). Raises ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a time limit, got {value!r}; use {TIME_FORMS}")
    if isinstance(value, int):
        return _at_least_one(value, str(value))
    text = value.strip()
    short = _SHORT_TIME.match(text)
    if short:
        seconds = float(short.group("n")) * _SUFFIX_SECONDS[short.group("unit").lower()]
        return _at_least_one(math.ceil(seconds / 60), text)
    match = _SLURM_TIME.match(text)
    if match is None:
        raise ValueError(f"not a time limit: {value!r}; use {TIME_FORMS}")
    days = int(match.group("days") or 0)
    parts = [int(p) for p in match.group("rest").split(":")]
    if match.group("days") is not None:
        # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = [*parts, 0, 0][:3]
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = parts
    minutes_bounded = match.group("days") is not None or len(parts) == 3
    if (
        seconds >= 60
        or (minutes_bounded and minutes >= 60)
        or (match.group("days") is not None and hours >= 24)
    ):
        raise ValueError(f"not a time limit: {value!r} (a field is out of range); use {TIME_FORMS}")
    total = days * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)
    return _at_least_one(total, text)


def _at_least_one(minutes: int, text: str) -> int:
    if minutes < 1:
        raise ValueError(f"time limit must be at least 1 minute, got {text!r}")
    if minutes > MAX_TIME_MINUTES:
        raise ValueError(f"time limit {text!r} is longer than a year; use at most 365-00:00:00")
    return minutes


def format_time_minutes(minutes: int) -> str:
    """``D-HH:MM:SS`` as Slurm prints it (``1-00:00:00``), or ``HH:MM:SS`` under a day."""
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{mins:02d}:00"
    return f"{hours:02d}:{mins:02d}:00"


def parse_memory_mb(value: str | int) -> int:
    """A memory size in megabytes (rounded up). Raises ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a memory size, got {value!r}; use {MEMORY_FORMS}")
    if isinstance(value, int):
        megabytes = value
    else:
        match = _MEMORY.match(value.strip())
        if match is None:
            raise ValueError(f"not a memory size: {value!r}; use {MEMORY_FORMS}")
        megabytes = math.ceil(float(match.group("n")) * _MEMORY_FACTOR_MB[match.group("unit").upper()])
    if megabytes < 1:
        raise ValueError(f"memory must be at least 1 MB, got {value!r}")
    if megabytes > MAX_MEMORY_MB:
        raise ValueError(f"memory {value!r} is more than any node has; use at most {MAX_MEMORY_MB >> 20}T")
    return megabytes


def format_memory_mb(megabytes: int) -> str:
    """``16G`` when a whole number of gigabytes, else ``1500M``."""
    if megabytes % 1024 == 0:
        return f"{megabytes // 1024}G"
    return f"{megabytes}M"
