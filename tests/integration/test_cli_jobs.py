"""``hpcplat submit | jobs | show | logs | cancel | wait | sweep`` on the real sandbox, through the
real entry point (exit codes as the shell sees them)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from hpcplat.catalog import Catalog
from hpcplat.runner import run
from hpcplat.sandbox import Sandbox
from tests.fixtures.submission import invoke, write_site_file

pytestmark = pytest.mark.sandbox


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    env = dict(sandbox.env())
    env["HPCPLAT_CONFIG"] = str(write_site_file(env, tmp_path))
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    return env


def runs(tmp_path: Path) -> list[object]:
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        return list(catalog.list_runs(limit=None))


def submit(env: dict[str, str], *args: str) -> dict[str, str]:
    result = invoke(["submit", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    data: dict[str, str] = json.loads(result.output.strip().splitlines()[-1])
    return data


def test_submit_wait_logs_show_jobs(env: dict[str, str], tmp_path: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    job = submit(
        env,
        "--name",
        name,
        "--time",
        "5",
        "--param",
        "lr=0.5",
        "--",
        "python3",
        "-c",
        "import os; print('hello from', os.environ['HPCPLAT_RUN_ID'])",
    )
    waited = invoke(["wait", job["job_id"]], env=env)
    assert waited.exit_code == 0, waited.output
    assert f"{job['job_id']} COMPLETED" in waited.output
    assert "1/1 done" in waited.output  # the progress display
    logs = invoke(["logs", job["job_id"]], env=env)
    assert logs.exit_code == 0 and f"hello from {job['run_id']}" in logs.output
    follow = invoke(["logs", "-f", job["job_id"]], env=env)
    assert f"hello from {job['run_id']}" in follow.output and "ended: COMPLETED" in follow.output
    shown = invoke(["show", "--json", job["job_id"]], env=env)
    data = json.loads(shown.output)
    assert data["run_id"] == job["run_id"] and data["name"] == name and data["state"] == "COMPLETED"
    assert len(runs(tmp_path)) == 1


def test_jobs_and_show_label_gpus_as_the_jobs_total(env: dict[str, str]) -> None:
    job = submit(env, "--time", "5", "--nodes", "2", "--gpus-per-node", "1", "--", "sleep", "120")
    try:
        shown = invoke(["show", job["job_id"]], env=env)
        assert shown.exit_code == 0, shown.output
        lines = {line.split()[0]: line.split()[1:] for line in shown.output.splitlines() if line.strip()}
        assert lines["total_gpus"] == ["2"] and lines["gpus_per_node"] == ["1"]
        assert "gpus" not in lines
        listed = invoke(["jobs"], env=env).output.splitlines()
        header = listed[0].split()
        row = next(line.split() for line in listed[1:] if line.split()[0] == job["job_id"])
        assert "TOTAL_GPUS" in header and row[header.index("TOTAL_GPUS")] == "2"
    finally:
        invoke(["cancel", job["job_id"]], env=env)


def test_failed_job_makes_wait_exit_1(env: dict[str, str]) -> None:
    job = submit(env, "--time", "5", "--", "python3", "-c", "raise SystemExit(3)")
    waited = invoke(["wait", "--quiet", job["job_id"]], env=env)
    assert waited.exit_code == 1
    assert f"{job['job_id']} FAILED" in waited.output


def test_wait_timeout_exits_as_its_help_says(env: dict[str, str]) -> None:
    """``--timeout`` gives up with exit 1 (as ``wait --help`` and docs/submission.md say); the job runs on."""
    help_text = " ".join(invoke(["wait", "--help"], env=env).output.split())
    assert "exit 1 if any failed or --timeout passed first" in help_text
    docs = (Path(__file__).resolve().parents[2] / "docs" / "submission.md").read_text()
    assert "exits 1 when --timeout passes first" in " ".join(docs.split())
    job = submit(env, "--time", "5", "--", "sleep", "120")
    try:
        waited = invoke(["wait", "--quiet", "--timeout", "1", job["job_id"]], env=env)
        assert waited.exit_code == 1, waited.output
        assert f"still not finished after 1 s: {job['job_id']}" in waited.output
        assert "the jobs keep running" in waited.output
    finally:
        invoke(["cancel", job["job_id"]], env=env)


def test_run_show_script_is_the_script_slurm_was_given(env: dict[str, str]) -> None:
    job = submit(env, "--time", "5", "--", "sleep", "120")
    try:
        shown = invoke(["run", "show", job["run_id"], "--script"], env=env)
        assert shown.exit_code == 0, shown.output
        held = run(["scontrol", "write", "batch_script", job["job_id"], "-"], timeout=30, env=env).stdout
        assert f"HPCPLAT_RUN_ID={job['run_id']}" in held  # the script carries its run id
        assert held.strip() in shown.output  # and run show prints that very script
        assert "RUN-ID-ASSIGNED" not in shown.output
    finally:
        invoke(["cancel", job["job_id"]], env=env)


def test_jobs_lists_and_cancel_cancels(env: dict[str, str]) -> None:
    job = submit(env, "--time", "5", "--", "sleep", "120")
    listed = invoke(["jobs", "--json"], env=env)
    assert listed.exit_code == 0
    mine = [j for j in json.loads(listed.output) if j["job_id"] == job["job_id"]]
    assert mine and mine[0]["run_id"] == job["run_id"]
    table = invoke(["jobs"], env=env)
    assert table.output.startswith("JOBID") and job["job_id"] in table.output
    cancelled = invoke(["cancel", job["job_id"]], env=env)
    assert cancelled.exit_code == 0 and f"Cancelled {job['job_id']}" in cancelled.output
    waited = invoke(["wait", "-q", job["job_id"]], env=env)
    assert waited.exit_code == 1 and "CANCELLED" in waited.output


@pytest.mark.parametrize("command", [["show"], ["logs"], ["cancel"], ["wait"]])
def test_a_job_that_does_not_exist_is_exit_2(command: list[str], env: dict[str, str]) -> None:
    result = invoke([*command, "987654321"], env=env)
    assert result.exit_code == 2
    assert "no such job: 987654321" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus-per-node", "8"], "largest node of partition 'gpu' has 4"),
        (["--tier", "gold"], "allowed tiers: normal, preemptible, urgent"),
        (["--nodes", "0"], "--nodes: must be at least 1"),
        (["--partition", "debug", "--time", "2h"], "over partition 'debug''s maximum"),
        (["--dataset", "nosuch@1"], "dataset nosuch@1"),
    ],
)
def test_bad_requests_exit_2_and_record_nothing(
    args: list[str], message: str, env: dict[str, str], tmp_path: Path
) -> None:
    result = invoke(["submit", *args, "--", "true"], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "catalog.db").exists() or runs(tmp_path) == []


def test_dry_run_validates_and_submits_nothing(env: dict[str, str], tmp_path: Path) -> None:
    result = invoke(["submit", "--dry-run", "--tier", "preemptible", "--", "python3", "t.py"], env=env)
    assert result.exit_code == 0, result.output
    assert "#SBATCH --requeue" in result.output and "#SBATCH --signal=USR1@90" in result.output
    assert not (tmp_path / "catalog.db").exists() or runs(tmp_path) == []


def test_submit_from_a_spec_file_with_flag_overrides(env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: from-file\ncommand: [python3, -c, 'print(1)']\nresources:\n  time: 5\n  gpus_per_node: 9\n"
    )
    job = submit(env, "-f", str(spec), "--gpus-per-node", "1")
    assert invoke(["wait", "-q", job["job_id"]], env=env).exit_code == 0


def test_sweep_cli(env: dict[str, str]) -> None:
    result = invoke(
        [
            "sweep",
            "submit",
            "--json",
            "--grid",
            "x=1,2",
            "--time",
            "5",
            "--",
            "python3",
            "-c",
            "import json,os; json.dump({'x2': int('{x}') * 2}, open(os.environ['HPCPLAT_RESULT_FILE'],'w'))",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    sweep_id = json.loads(result.output)["sweep_id"]
    results = invoke(["sweep", "results", "--wait", "--timeout", "120", "--json", sweep_id], env=env)
    assert results.exit_code == 0, results.output
    assert [p["result"] for p in json.loads(results.output)] == [{"x2": 2}, {"x2": 4}]
    assert "2 COMPLETED" in invoke(["sweep", "status", sweep_id], env=env).output
    assert sweep_id in invoke(["sweep", "list"], env=env).output


def test_template_render_is_accepted_by_sbatch(env: dict[str, str], tmp_path: Path, sandbox: Sandbox) -> None:
    from hpcplat.slurm.cli_backend import CliBackend

    out = tmp_path / "job.sbatch"
    result = invoke(
        [
            "template",
            "render",
            "single-gpu",
            "--set",
            "command=python3 t.py",
            "--set",
            "mem=500",
            "--set",
            "time=00:05:00",
            "-o",
            str(out),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    CliBackend(env=sandbox.env()).submit(out.read_text(), test_only=True)
    assert "example: hpcplat template render" in invoke(["template", "show", "single-gpu"], env=env).output


def _other_user_can_reach(env: dict[str, str]) -> bool:
    """Whether user ``nobody`` can read slurm.conf and talk to munge (not when they live under /root)."""
    import shutil
    import subprocess

    if shutil.which("runuser") is None:
        return False
    readable = subprocess.run(
        ["runuser", "-u", "nobody", "--", "test", "-r", env["SLURM_CONF"]], check=False, timeout=10
    )
    if readable.returncode != 0:
        return False
    try:
        probe = subprocess.run(
            ["runuser", "-u", "nobody", "--", "scontrol", "ping"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def test_cancelling_someone_elses_job_reports_slurms_refusal(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _other_user_can_reach(env):
        pytest.skip("another Unix user cannot reach this sandbox's munge socket and slurm.conf")
    from hpcplat.cli import jobs as jobs_cli
    from hpcplat.runner import run
    from hpcplat.slurm.cli_backend import CliBackend

    job = submit(env, "--time", "5", "--", "sleep", "120")
    as_nobody = CliBackend(
        env=env, runner=lambda argv, **kw: run(["runuser", "-u", "nobody", "--", *argv], **kw)
    )
    monkeypatch.setattr(jobs_cli, "_client", lambda: as_nobody)
    try:
        refused = invoke(["cancel", job["job_id"]], env=env)
        assert refused.exit_code == 1
        assert "Slurm refused to cancel" in refused.output and "permission denied" in refused.output.lower()
    finally:
        monkeypatch.undo()
        invoke(["cancel", job["job_id"]], env=env)
