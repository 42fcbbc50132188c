"""``scontrol show job`` in its multi-line form (without ``-o``).

The one-line ``-o`` form cannot be split reliably: a job name, comment or path may hold blanks and
``=`` (``JobName=a JobState=COMPLETED``), so a split on blanks reads fields the user wrote. In
the multi-line form every such free-text field ends its line (:data:`LINE_END_FIELDS`; the job
name ends the first line), so its value is the rest of the line; the other fields are
``Key=value`` pairs whose values hold no blanks. Slurm prints a newline inside a free-text value
as it is: a line that does not start with a blank continues the value before it, and a record
starts only at a ``JobId=`` line that opens the text or follows an empty line. The per-node
detail lines of ``-d`` (``Nodes=n1 CPU_IDs=0 Mem=0 GRES=gpu:2(IDX:0-1)``) are left to
:func:`hpcplat.slurm.parse.gres.parse_gpu_indices`.
"""

from __future__ import annotations

import re

LINE_END_FIELDS = (
    "JobName",
    "Comment",
    "AdminComment",
    "SystemComment",
    "StdOut",
    "StdErr",
    "StdIn",
    "WorkDir",
    "Command",
    "Container",
    "ContainerID",
)
"""Fields whose value runs to the end of its line (it may hold blanks and ``=``)."""

_PAIR = re.compile(r"(?:^|\s)([A-Za-z][\w:/]*)=(\S*)")


def _record(lines: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    first, _, name = lines[0].partition(" JobName=")
    # JobId=46 ArrayJobId=42 ArrayTaskId=2 JobName=the name, to the end of the line
    for match in _PAIR.finditer(first):
        fields.setdefault(match.group(1), match.group(2))
    fields["JobName"] = name.rstrip()
    last = "JobName"
    for raw in lines[1:]:
        if not raw[:1].isspace():
            # Slurm prints a newline of a free-text value as it is: the value goes on
            fields[last] += "\n" + raw.rstrip()
            continue
        line = raw.strip()
        if line.startswith("Nodes="):
            continue  # a per-node detail line of -d (GPU indices): parse_gpu_indices
        key, sep, value = line.partition("=")
        if sep and key in LINE_END_FIELDS:
            if key not in fields:
                fields[key] = value.rstrip()
                last = key
            continue
        for match in _PAIR.finditer(line):
            fields.setdefault(match.group(1), match.group(2))
    return fields


def parse_show_jobs(text: str) -> list[dict[str, str]]:
    """Every record of a multi-line ``scontrol show job [-d]`` answer (an array's base id lists
    every task), each as field → value (``JobState``, ``PreemptTime``, ``StdOut``...)."""
    records: list[list[str]] = []
    after_blank = True
    for line in text.splitlines():
        if not line.strip():
            after_blank = True
            continue
        if line.startswith("JobId=") and (after_blank or not records):
            records.append([line])
        elif records:
            records[-1].append(line)
        after_blank = False
    return [_record(lines) for lines in records]


def parse_show_job(text: str) -> dict[str, str]:
    """The first record of a multi-line ``scontrol show job`` answer; ``{}`` when it has none."""
    records = parse_show_jobs(text)
    return records[0] if records else {}
