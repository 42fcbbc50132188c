"""`hpcplat sandbox` commands that need no running cluster: bad input, env, status of a stopped one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcplat.cli.main import cli
from hpcplat.cli.main import main as hpcplat_main


def test_nodes_zero_is_a_usage_error_before_anything_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "sb"
    monkeypatch.setenv("HPCPLAT_SANDBOX_DIR", str(state))
    with pytest.raises(SystemExit) as info:
        hpcplat_main(["sandbox", "up", "--nodes", "0"])
    assert info.value.code == 2
    assert "--nodes must be at least 1, got 0" in capsys.readouterr().err
    assert not state.exists()


def test_env_prints_shell_quoted_exports_that_eval_restores(tmp_path: Path) -> None:
    state = tmp_path / "it's here"
    result = CliRunner().invoke(cli, ["sandbox", "env", "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    assert all(line.startswith("export ") for line in result.output.splitlines())
    shown = subprocess.run(
        ["bash", "-c", 'eval "$1"; printf "%s\\n" "$SLURM_CONF" "$HPCPLAT_SANDBOX_DIR"', "_", result.output],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.splitlines()
    assert shown == [f"{state}/etc/slurm.conf", str(state)]


def test_status_of_a_stopped_sandbox_says_so_and_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sandbox", "status", "--json", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["running"] is False
    assert {d["name"] for d in report["daemons"]} >= {
        "munged",
        "mariadb",
        "slurmdbd",
        "slurmctld",
        "slurmd-n1",
    }
    assert not any(d["alive"] for d in report["daemons"])
    assert [n["state"] for n in report["nodes"]] == ["unknown"] * 4


def test_status_table_names_every_daemon_and_node(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sandbox", "status", "--state-dir", str(tmp_path)])
    assert "NOT up" in result.output
    for name in ("munged", "mariadb", "slurmdbd", "slurmctld", "slurmd-n4", "127.0.1.4"):
        assert name in result.output


def test_down_of_a_sandbox_that_never_ran_stops_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sandbox", "down", "--state-dir", str(tmp_path / "sb")])
    assert result.exit_code == 0, result.output
    assert "was not running" in result.output


def test_every_sandbox_subcommand_has_help() -> None:
    for sub in ("up", "down", "status", "env"):
        result = CliRunner().invoke(cli, ["sandbox", sub, "--help"])
        assert result.exit_code == 0
        assert "--state-dir" in result.output
