"""Where a job's output file is.

Slurm's own answer comes first: ``StdOut`` of ``scontrol show job`` (patterns such as ``%j``
expanded), which the controller holds while the job is queued or running and for ``MinJobAge``
(5 minutes by default) after it ends. Accounting does not record output paths (``sacct`` has no
``StdOut`` field in Slurm 22.05), so for a job Slurm has forgotten the path is guessed from what
accounting does keep, the job's working directory: Slurm's default ``slurm-<id>.out`` there (what
plain ``sbatch`` and the ``slurm_templates/`` write) or hpcplat's ``<job root>/<id>.out`` (what
``hpcplat submit`` writes), whichever exists, and the location says it was guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpcplat.slurm.client import SlurmClient
from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.parse import run_id_from_comment

_NO_PATH = ("", "(null)")


@dataclass(frozen=True)
class OutputLocation:
    path: Path
    guess: str = ""
    """Empty when Slurm reported the path; else what the guess was based on."""

    @property
    def guessed(self) -> bool:
        return bool(self.guess)


def _file_name(job_id: str) -> str:
    """``123`` → ``123``; ``123_4`` → ``123_4`` (``%A_%a``, as Slurm and hpcplat name array tasks)."""
    return job_id.split(".", 1)[0]


def locate_output(
    info: JobInfo, job_id: str, *, reported: dict[str, str], job_root: Path, hpcplat_job: bool
) -> OutputLocation:
    """Where job ``job_id``'s output is, from ``reported`` (:meth:`SlurmClient.job_paths`, ``{}``
    when Slurm has forgotten the job) or ``info``; ``hpcplat_job`` says hpcplat submitted it."""
    for answer in (info.stdout_path, reported.get("StdOut", "")):
        if answer not in _NO_PATH:
            return OutputLocation(Path(answer))
    name = _file_name(job_id)
    ours = job_root / f"{name}.out"
    work_dir = info.work_dir or reported.get("WorkDir", "")
    candidates: list[tuple[Path, str]] = []
    if hpcplat_job:
        candidates.append((ours, "hpcplat's job root"))
    if work_dir and work_dir not in _NO_PATH:
        candidates.append(
            (Path(work_dir) / f"slurm-{name}.out", "Slurm's default name in its working directory")
        )
    if not hpcplat_job:
        candidates.append((ours, "hpcplat's job root"))
    path, why = next(((p, w) for p, w in candidates if p.exists()), candidates[0])
    return OutputLocation(
        path,
        guess=(
            f"Slurm no longer holds job {job_id} and accounting does not record output paths; "
            f"this is {why}" + ("" if path.exists() else " (no such file)")
        ),
    )


def output_location(client: SlurmClient, info: JobInfo, job_id: str, *, job_root: Path) -> OutputLocation:
    """:func:`locate_output` with Slurm's answer (one ``scontrol show job`` unless ``info`` has it)."""
    reported = {} if info.stdout_path not in _NO_PATH else client.job_paths(job_id)
    hpcplat_job = run_id_from_comment(info.comment) is not None
    return locate_output(info, job_id, reported=reported, job_root=job_root, hpcplat_job=hpcplat_job)
