"""Where ``hpcplat logs``/``show`` look for a job's output (:mod:`hpcplat.slurm.output`): Slurm's
``StdOut`` while the controller holds the job, else a guess from accounting that says so."""

from __future__ import annotations

from pathlib import Path

from hpcplat.slurm.models import JobInfo
from hpcplat.slurm.output import locate_output
from hpcplat.slurm.state import JobState


def job(job_id: str = "42", work_dir: str = "", comment: str = "") -> JobInfo:
    return JobInfo(
        job_id=job_id, name="t", user="u", state=JobState.COMPLETED, work_dir=work_dir, comment=comment
    )


def test_slurms_stdout_wins(tmp_path: Path) -> None:
    reported = {"StdOut": str(tmp_path / "submit dir" / "slurm-42.out"), "WorkDir": str(tmp_path)}
    where = locate_output(job(), "42", reported=reported, job_root=tmp_path / "jobs", hpcplat_job=True)
    assert where.path == tmp_path / "submit dir" / "slurm-42.out" and not where.guessed


def test_forgotten_sbatch_job_is_guessed_in_its_working_directory(tmp_path: Path) -> None:
    (tmp_path / "slurm-42_3.out").write_text("hi\n")
    where = locate_output(
        job("42_3", work_dir=str(tmp_path)),
        "42_3",
        reported={},
        job_root=tmp_path / "jobs",
        hpcplat_job=False,
    )
    assert where.path == tmp_path / "slurm-42_3.out"
    assert where.guessed and "Slurm no longer holds job 42_3" in where.guess
    assert "Slurm's default name in its working directory" in where.guess


def test_forgotten_hpcplat_job_is_guessed_in_the_job_root(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    root.mkdir()
    (root / "42.out").write_text("hi\n")
    for hpcplat_job in (True, False):  # an existing file is preferred even without the comment
        where = locate_output(
            job(work_dir=str(tmp_path)), "42", reported={}, job_root=root, hpcplat_job=hpcplat_job
        )
        assert where.path == root / "42.out" and "hpcplat's job root" in where.guess


def test_a_guess_with_no_file_says_so(tmp_path: Path) -> None:
    where = locate_output(
        job(work_dir=str(tmp_path)), "42", reported={}, job_root=tmp_path / "jobs", hpcplat_job=False
    )
    assert where.path == tmp_path / "slurm-42.out" and where.guess.endswith("(no such file)")
