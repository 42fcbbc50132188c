"""``hpcplat submit`` killed (SIGKILL) at each step between spec validation and the catalog write:
after ``hpcplat reconcile`` there is either a recorded, tracked job or nothing at all.

The submission service has no fault points of its own, so the kill comes from outside: wrappers
named ``scontrol``, ``git`` and ``sbatch``, first on ``PATH``, SIGKILL their parent (the ``hpcplat
submit`` process) when ``$HPCPLAT_TEST_FAULT`` names them:

====================  =========================================================================
``scontrol:before``   during validation (the first Slurm query; a fresh facts cache forces it)
``git:before``        provenance capture starting (it overlaps validation): nothing recorded yet
``sbatch:before``     the intent is recorded (run SUBMITTING), sbatch not run
``sbatch:during``     sbatch is running: the submitter dies, sbatch still queues the job
``sbatch:after``      sbatch returned a job id, ``confirm_submission`` not reached
====================  =========================================================================
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hpcplat.catalog import RunStatus
from hpcplat.sandbox import Sandbox
from tests.faults.helpers import REPEATS, FaultReport, Harness, fault_report, harness, site_file, wait_for

__all__ = ["fault_report"]

pytestmark = pytest.mark.sandbox

WRAPPED = ("scontrol", "git", "sbatch")
POINTS = ["scontrol:before", "git:before", "sbatch:before", "sbatch:during", "sbatch:after"]
QUEUED = {"sbatch:during", "sbatch:after"}
TRACKED = {RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.REQUEUED, RunStatus.COMPLETED}

WRAPPER = """#!/bin/bash
# Fault-injection wrapper of {name} (tests/faults/test_submit_killed.py): SIGKILL the caller when
# $HPCPLAT_TEST_FAULT names {name}, then run (or not) the real program.
real={real}
log="${{HPCPLAT_TEST_FAULT_LOG:-/dev/null}}"
case "$HPCPLAT_TEST_FAULT" in
  {name}:before)
    echo "fired" > "$log"; kill -KILL "$PPID"; exit 137 ;;
  {name}:during)
    input=$(mktemp); cat > "$input"; kill -KILL "$PPID"
    "$real" "$@" < "$input" > "$log.out" 2>&1; echo "rc=$?" >> "$log.out"; rm -f "$input"
    echo "fired" > "$log"; exit 0 ;;
  {name}:after)
    input=$(mktemp); cat > "$input"; out=$("$real" "$@" < "$input"); rc=$?; rm -f "$input"
    printf '%s\\nrc=%s\\n' "$out" "$rc" > "$log.out"; echo "fired" > "$log"
    kill -KILL "$PPID"; printf '%s\\n' "$out"; exit $rc ;;
esac
exec "$real" "$@"
"""


@pytest.fixture(scope="module")
def wrappers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fault-bin")
    for name in WRAPPED:
        real = shutil.which(name)
        assert real, f"{name} not found on PATH"
        path = directory / name
        path.write_text(WRAPPER.format(name=name, real=real))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def hpcplat(
    h: Harness, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    program = str(Path(sys.executable).parent / "hpcplat")
    return subprocess.run(
        [program, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=h.tmp, check=False
    )


def slurm_jobs_named(h: Harness, name: str) -> dict[str, str]:
    """Job id -> comment of every job (queued or ended) with this name."""
    found: dict[str, str] = {}
    out = h.slurm("squeue", "-h", "--states=all", "-n", name, "-o", "%i|%k", check=False).stdout
    for line in out.splitlines():
        job, _, comment = line.partition("|")
        found[job.strip()] = comment.strip()
    hist = h.slurm(
        "sacct", "-X", "-n", "-P", "--name", name, "-S", "now-1hours", "-o", "JobID,Comment", check=False
    ).stdout
    for line in hist.splitlines():
        job, _, comment = line.partition("|")
        found.setdefault(job.strip(), comment.strip())
    return {j: c for j, c in found.items() if j}


@pytest.mark.parametrize("rep", range(REPEATS))
@pytest.mark.parametrize("point", POINTS)
def test_submit_killed_leaves_a_tracked_job_or_nothing(
    point: str, rep: int, wrappers: Path, sandbox: Sandbox, tmp_path: Path, fault_report: FaultReport
) -> None:
    with fault_report.trial("submit-killed", rep) as trial, harness(sandbox, tmp_path) as h:
        name = f"{h.tag}-killed"
        log = tmp_path / "fault.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPCPLAT_")}
        env.update(h.env)
        env.update(
            HPCPLAT_CONFIG=str(site_file(h)),
            XDG_CACHE_HOME=str(tmp_path / f"cache-{point}"),
            PATH=f"{wrappers}{os.pathsep}{h.env['PATH']}",
            HPCPLAT_TEST_FAULT=point,
            HPCPLAT_TEST_FAULT_LOG=str(log),
        )
        killed = hpcplat(h, "submit", "--name", name, "--time", "5", "--", "sleep", "20", env=env)
        try:
            assert killed.returncode == -9, (
                f"the fault point {point} was not reached: {killed.stdout}{killed.stderr}"
            )
            wait_for(f"the wrapper at {point} to finish", log.exists, timeout=60)
            if point in QUEUED:
                job_line = (Path(f"{log}.out")).read_text()
                assert "rc=0" in job_line, job_line
                h.job_ids.append(job_line.split()[0].split(";")[0])
        finally:
            h.job_ids.extend(slurm_jobs_named(h, name))

        env.pop("HPCPLAT_TEST_FAULT")
        reconciled = hpcplat(h, "reconcile", "--grace", "0", "--json", env=env)
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr

        jobs = slurm_jobs_named(h, name)
        catalog = h.catalog()
        runs = catalog.list_runs(limit=None)
        details = [catalog.details(r.id) for r in runs]
        tracked = [d for d in details if d.run.status in TRACKED]
        summary = (
            f"jobs {jobs}; runs "
            f"{[(d.run.id[:8], d.run.status.value, [a.job_id for a in d.attempts]) for d in details]}; "
            f"reconcile {json.loads(reconciled.stdout)}"
        )
        if point in QUEUED:
            # A recorded, tracked job: one job, one run that has it as its attempt, linked by comment.
            ok = (
                len(jobs) == 1
                and len(details) == 1
                and len(tracked) == 1
                and [a.job_id for a in tracked[0].attempts] == list(jobs)
                and jobs[next(iter(jobs))] == f"hpcplat:{tracked[0].run.id}"
            )
            trial.count("submitted jobs tracked by the catalog", expected=1, found=int(ok))
        else:
            # Nothing at all: no job; any run recorded says it was not submitted.
            ok = not jobs and all(d.run.status is RunStatus.NOT_SUBMITTED for d in details)
            trial.count("submissions resolved to nothing", expected=1, found=int(ok))
            if point == "sbatch:before":
                assert len(details) == 1, summary  # the intent was recorded before the kill
            else:
                assert not details, summary  # killed before record_intent: nothing written
        assert ok, summary
