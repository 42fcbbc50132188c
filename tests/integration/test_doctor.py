"""``hpcplat doctor`` against the sandbox as it is: what it has is ok (accounting, preemption by
QOS, GPU GRES, munge, the server), what it lacks is reported with the setting to change
(cgroup confinement: it runs proctrack/linuxproc), and a site file whose job root is missing
makes the checklist 'missing' with the fix and exit code 2. Nothing is changed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from hpcplat.runner import CommandResult, run
from hpcplat.sandbox import Sandbox

pytestmark = pytest.mark.sandbox


def doctor(env: dict[str, str], *args: str) -> CommandResult:
    return run([sys.executable, "-m", "hpcplat", "doctor", *args], timeout=120, env=env, check=False)


def checks(result: CommandResult) -> dict[str, dict[str, Any]]:
    document = json.loads(result.stdout)
    return {c["name"]: c for c in document["checks"]}


def test_sandbox_checklist(sandbox: Sandbox) -> None:
    env = dict(sandbox.env())
    result = doctor(env, "--json")
    document = json.loads(result.stdout)
    assert set(document) == {"status", "exit_code", "checks"}
    for item in document["checks"]:
        assert set(item) == {"name", "title", "status", "detail", "fix", "why"}
        assert item["status"] in {"ok", "degraded", "missing", "skipped"}
        assert (item["fix"] is None) == (item["status"] in {"ok", "skipped"}), item
    found = checks(result)
    for name in (
        "accounting",
        "accounting-enforce",
        "preempt-type",
        "tier-qos",
        "preempt-list",
        "preempt-mode",
        "grace-time",
        "gres-types",
        "gpu-gres",
        "requeue",
        "munge",
        "server",
        "job-root",
    ):
        assert found[name]["status"] == "ok", found[name]
    cgroup = found["cgroup"]
    assert cgroup["status"] == "degraded"
    assert "proctrack/linuxproc" in cgroup["detail"]
    assert "ProctrackType=proctrack/cgroup" in cgroup["fix"]
    assert "preempt_send_user_signal" in found["preempt-signal"]["fix"]
    assert document["status"] == "degraded"
    assert result.returncode == document["exit_code"] == 1


def test_table_names_each_fix(sandbox: Sandbox) -> None:
    result = doctor(dict(sandbox.env()))
    assert result.returncode == 1
    assert result.stdout.startswith("ITEM")
    assert "cgroup confinement (degraded):\n  fix: " in result.stdout
    assert "Traceback" not in result.stderr


def test_missing_job_root_is_missing_with_its_fix(sandbox: Sandbox, tmp_path: Path) -> None:
    env = dict(sandbox.env())
    site = Path(env["HPCPLAT_CONFIG"]).read_text()
    absent = tmp_path / "no-such-root"
    lines = [f'job_root = "{absent}"' if ln.startswith("job_root") else ln for ln in site.splitlines()]
    (tmp_path / "site.toml").write_text("\n".join(lines) + "\n")
    env["HPCPLAT_CONFIG"] = str(tmp_path / "site.toml")
    result = doctor(env, "--json")
    found = checks(result)
    assert found["job-root"]["status"] == "missing"
    assert f"install -d -m 1777 {absent}" in found["job-root"]["fix"]
    assert json.loads(result.stdout)["status"] == "missing"
    assert result.returncode == 2
    assert not absent.exists()  # doctor changes nothing


def test_job_root_writable_by_all_is_degraded(sandbox: Sandbox, tmp_path: Path) -> None:
    env = dict(sandbox.env())
    root = tmp_path / "jobs"
    root.mkdir()
    root.chmod(0o777)
    site = Path(env["HPCPLAT_CONFIG"]).read_text()
    lines = [f'job_root = "{root}"' if ln.startswith("job_root") else ln for ln in site.splitlines()]
    (tmp_path / "site.toml").write_text("\n".join(lines) + "\n")
    env["HPCPLAT_CONFIG"] = str(tmp_path / "site.toml")
    found = checks(doctor(env, "--json"))
    assert found["job-root"]["status"] == "degraded"
    assert found["job-root"]["fix"] == f"chmod 1777 {root}"


def test_malformed_site_file_is_a_clear_error(sandbox: Sandbox, tmp_path: Path) -> None:
    env = dict(sandbox.env())
    (tmp_path / "site.toml").write_text("[submission\n")
    env["HPCPLAT_CONFIG"] = str(tmp_path / "site.toml")
    result = doctor(env)
    assert result.returncode == 2
    assert "malformed site configuration" in result.stderr
    assert "Traceback" not in result.stderr
