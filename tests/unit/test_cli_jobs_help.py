"""The job commands' --help, and bad input that is refused before any cluster is asked (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.submission import invoke

SUBCOMMANDS = [
    ["submit"],
    ["jobs"],
    ["show"],
    ["logs"],
    ["cancel"],
    ["wait"],
    ["sweep"],
    ["sweep", "submit"],
    ["sweep", "status"],
    ["sweep", "results"],
    ["sweep", "list"],
    ["template"],
    ["template", "list"],
    ["template", "show"],
    ["template", "render"],
    ["template", "submit"],
]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_help(words: list[str]) -> None:
    result = invoke([*words, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: hpcplat " + " ".join(words) in result.output


def test_submit_help_lists_every_spec_field() -> None:
    text = invoke(["submit", "--help"]).output
    for flag in (
        "--nodes",
        "--tasks-per-node",
        "--gpus-per-node",
        "--cpus-per-task",
        "--mem",
        "--time",
        "--tier",
        "--account",
        "--partition",
        "--module",
        "--venv",
        "--conda",
        "--container",
        "--env",
        "--dataset",
        "--param",
        "--workdir",
        "--checkpoint-dir",
        "--max-requeues",
        "--after",
        "--tag",
        "--dry-run",
    ):
        assert flag in text


@pytest.fixture
def site(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "site.toml"
    path.write_text(
        '[defaults]\ntier = "normal"\n[tiers.normal]\nqos = "normal"\n[tiers.urgent]\nqos = "urgent"\n'
    )
    return {
        "HPCPLAT_CONFIG": str(path),
        "HPCPLAT_SYSTEM_CONFIG": str(tmp_path / "none"),
        "XDG_CONFIG_HOME": str(tmp_path),
        "SLURM_CONF": str(tmp_path / "no-slurm.conf"),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "--nodes", "0", "--", "python", "t.py"], "--nodes: must be at least 1, got 0"),
        (["submit", "--time", "soon", "--", "x"], "--time: not a time limit"),
        (["submit", "--env", "NOEQUALS", "--", "x"], "--env expects KEY=VALUE"),
        (["submit"], "nothing to run"),
        (["submit", "--tier", "gold", "--", "x"], "unknown tier 'gold'; allowed tiers: normal, urgent"),
        (["submit", "-f", "missing.yaml"], "spec file not found"),
        (["show", "12;ls"], "not a Slurm job id"),
        (["cancel", "abc"], "not a Slurm job id"),
        (["template", "render", "nope"], "no template 'nope'"),
        (["template", "render", "single-gpu"], "needs command"),
        (["template", "submit", "single-gpu"], "needs command"),
        (
            ["template", "render", "single-gpu", "--set", "command=x", "--set", "mem=lots"],
            "not a memory size",
        ),
        (["sweep", "submit", "--", "x"], "no parameters to sweep over"),
        (["sweep", "results", "no-such-sweep"], "no sweep 'no-such-sweep'"),
    ],
)
def test_bad_input_exits_2_without_a_traceback(args: list[str], message: str, site: dict[str, str]) -> None:
    result = invoke(args, env=site)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_malformed_spec_file_names_line_and_field(tmp_path: Path, site: dict[str, str]) -> None:
    spec = tmp_path / "train.yaml"
    spec.write_text("command: [python, t.py]\nresources:\n  gpus_per_node: many\n")
    result = invoke(["submit", "-f", str(spec)], env=site)
    assert result.exit_code == 2
    assert f"{spec}:3: resources.gpus_per_node: must be a whole number" in result.output


def test_dry_run_offline_prints_the_script(site: dict[str, str]) -> None:
    result = invoke(
        ["submit", "--dry-run", "--no-validate", "--name", "it's", "--", "python", "t.py"], env=site
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("#!/bin/bash")
    assert '#SBATCH --job-name="it\'s"' in result.output and "--qos=normal" in result.output


def test_refusal_to_cancel_someone_elses_job_is_explained() -> None:
    from hpcplat.cli.jobs import _refusal
    from hpcplat.errors import SlurmError

    # scancel's own words when the job belongs to another user (Slurm 22.05).
    stderr = "scancel: error: Kill job error on job id 4242: Access/permission denied\n"
    exc = SlurmError("scancel 4242 failed", argv=["scancel", "4242"], returncode=1, stderr=stderr)
    refusal = _refusal(exc, ["4242"])
    assert (
        "Slurm refused to cancel: scancel: error: Kill job error on job id 4242: Access/permission denied"
        in str(refusal)
    )
    assert refusal.hint is not None and "only cancel your own jobs" in refusal.hint
    assert refusal.exit_code == 1


def test_template_render_offline_prints_the_script(site: dict[str, str]) -> None:
    result = invoke(
        ["template", "render", "multi-node-ddp", "--set", "command=python ddp.py", "--no-validate"], env=site
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("#!/bin/bash") and "#SBATCH --cpus-per-task=1" in result.output
