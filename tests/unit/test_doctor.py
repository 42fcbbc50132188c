"""``hpcplat doctor``'s parsers and judgements, on output recorded from the sandbox's Slurm
(``tests/data/slurm/scontrol_show_config.txt``, ``sacctmgr_show_qos_doctor.txt``,
``sinfo_nodes_gres.txt``) and on one setting changed at a time."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hpcplat.doctor.checks import (
    Check,
    Status,
    config_checks,
    exit_code,
    gpu_nodes,
    job_root,
    parse_config,
    parse_duration,
    parse_gpu_gres,
    parse_qos,
    parse_sinfo_nodes,
    tier_qos,
)
from hpcplat.siteconfig import SiteConfig, from_data

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
SITE = from_data(
    {
        "tiers": {
            "urgent": {"qos": "urgent"},
            "normal": {"qos": "normal"},
            "preemptible": {"qos": "preemptible", "preemptible": True},
        }
    }
)


def recorded_config() -> dict[str, str]:
    return parse_config((DATA / "scontrol_show_config.txt").read_text())


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_parse_config_reads_the_settings_doctor_needs() -> None:
    cfg = recorded_config()
    assert cfg["AccountingStorageType"] == "accounting_storage/slurmdbd"
    assert cfg["AccountingStorageEnforce"] == "associations,limits,qos"
    assert cfg["PreemptType"] == "preempt/qos"
    assert cfg["PreemptMode"] == "REQUEUE"
    assert cfg["SlurmctldParameters"] == ""  # (null)
    assert cfg["TaskPlugin"] == "task/none"
    assert cfg["ProctrackType"] == "proctrack/linuxproc"
    assert cfg["SelectTypeParameters"] == "CR_CPU"
    assert cfg["MaxArraySize"] == "1001"
    assert cfg["GresTypes"] == "gpu"
    assert cfg["JobRequeue"] == "1"
    assert cfg["AuthInfo"].startswith("socket=")
    assert "Configuration data as of" not in " ".join(cfg)


def test_parse_config_first_occurrence_wins_and_values_keep_equals() -> None:
    text = "SlurmctldParameters = a=1,b\nCgroup Support Configuration:\nSlurmctldParameters = later\n"
    assert parse_config(text) == {"SlurmctldParameters": "a=1,b"}


def test_recorded_sandbox_config_judged() -> None:
    checks = by_name(config_checks(recorded_config(), SITE))
    for ok in ("accounting", "accounting-enforce", "preempt-type", "requeue", "gres-types", "array-size"):
        assert checks[ok].status is Status.OK, checks[ok]
        assert checks[ok].fix is None
    assert checks["cgroup"].status is Status.DEGRADED
    assert "ProctrackType=proctrack/cgroup" in (checks["cgroup"].fix or "")
    assert "TaskPlugin=task/cgroup" in (checks["cgroup"].fix or "")
    assert checks["preempt-signal"].status is Status.DEGRADED
    assert checks["preempt-signal"].fix == "SlurmctldParameters=preempt_send_user_signal in slurm.conf"
    assert checks["memory"].status is Status.DEGRADED
    assert "CR_Core_Memory" in (checks["memory"].fix or "")


@pytest.mark.parametrize(
    ("key", "value", "name", "status", "fix"),
    [
        ("AccountingStorageType", "accounting_storage/none", "accounting", Status.MISSING, "slurmdbd"),
        ("AccountingStorageEnforce", "associations", "accounting-enforce", Status.DEGRADED, "limits,qos"),
        ("PreemptType", "preempt/none", "preempt-type", Status.MISSING, "PreemptType=preempt/qos"),
        ("JobRequeue", "0", "requeue", Status.DEGRADED, "JobRequeue=1"),
        ("GresTypes", "", "gres-types", Status.MISSING, "GresTypes=gpu"),
        ("MaxArraySize", "0", "array-size", Status.MISSING, "MaxArraySize=1001"),
        ("MaxArraySize", "100", "array-size", Status.DEGRADED, "MaxArraySize=1001"),
        (
            "SlurmctldParameters",
            "enable_configless",
            "preempt-signal",
            Status.DEGRADED,
            "SlurmctldParameters=enable_configless,preempt_send_user_signal",
        ),
    ],
)
def test_one_setting_changed_is_reported_with_its_fix_and_nothing_else(
    key: str, value: str, name: str, status: Status, fix: str
) -> None:
    base = by_name(config_checks(recorded_config(), SITE))
    cfg = recorded_config()
    cfg[key] = value
    changed = by_name(config_checks(cfg, SITE))
    assert changed[name].status is status
    assert fix in (changed[name].fix or "")
    assert changed[name].why
    for other, check in changed.items():  # accounting off: its enforcement is not judged at all
        assert other == name or check.status is base[other].status, check


def test_fixed_settings_are_ok() -> None:
    cfg = recorded_config()
    cfg.update(
        SlurmctldParameters="enable_configless,preempt_send_user_signal",
        TaskPlugin="task/affinity,task/cgroup",
        ProctrackType="proctrack/cgroup",
        SelectTypeParameters="CR_Core_Memory",
    )
    assert exit_code(config_checks(cfg, SITE)) == 0


def test_qos_recorded_from_the_sandbox() -> None:
    qos = parse_qos((DATA / "sacctmgr_show_qos_doctor.txt").read_text())
    assert qos["urgent"].preempt == ("preemptible",)
    assert qos["preemptible"].preempt_mode == "requeue"
    assert qos["preemptible"].grace_seconds == 10
    checks = by_name(tier_qos(qos, recorded_config(), SITE))
    assert {n: c.status for n, c in checks.items()} == {
        "tier-qos": Status.OK,
        "preempt-list": Status.OK,
        "preempt-mode": Status.OK,
        "grace-time": Status.OK,
    }


def test_qos_problems_named_with_their_sacctmgr_fix() -> None:
    text = "normal||cluster|00:00:00\npreemptible||cluster|00:00:00\n"
    cfg = {**recorded_config(), "PreemptMode": "CANCEL"}
    checks = by_name(tier_qos(parse_qos(text), cfg, SITE))
    assert checks["tier-qos"].status is Status.MISSING
    assert checks["tier-qos"].fix is not None and "sacctmgr add qos urgent" in checks["tier-qos"].fix
    assert checks["preempt-list"].fix == "sacctmgr modify qos normal set Preempt+=preemptible"
    assert checks["preempt-mode"].status is Status.MISSING
    assert "set PreemptMode=requeue" in (checks["preempt-mode"].fix or "")
    assert checks["grace-time"].fix == "sacctmgr modify qos preemptible set GraceTime=120"


def test_no_tiers_skips_the_qos_checks() -> None:
    checks = tier_qos({}, {}, SiteConfig())
    assert [c.status for c in checks] == [Status.SKIPPED]
    assert exit_code(checks) == 0


@pytest.mark.parametrize(
    ("text", "seconds"), [("00:00:10", 10), ("02:00", 120), ("1-00:00:00", 86400), ("30", 30), ("x", None)]
)
def test_parse_duration(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


def test_gres_and_nodes() -> None:
    assert parse_gpu_gres("gpu:a100:2(S:0-1),gpu:v100:2,shard:8") == (4, ("a100", "v100"))
    assert parse_gpu_gres("(null)") == (0, ())
    nodes = parse_sinfo_nodes((DATA / "sinfo_nodes_gres.txt").read_text())
    assert [(n.name, n.address, n.gpus) for n in nodes] == [
        ("n1", "127.0.1.1", 4),
        ("n2", "127.0.1.2", 4),
        ("n3", "127.0.1.3", 4),
        ("n4", "127.0.1.4", 4),
    ]
    assert gpu_nodes(nodes).status is Status.OK
    assert gpu_nodes(parse_sinfo_nodes("n1|10.0.0.1|(null)\n")).status is Status.MISSING


def _stat(mode: int, uid: int = 1000) -> Any:
    return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, uid, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("root", "mine", "writable", "status", "fix"),
    [
        (None, None, False, Status.MISSING, "install -d -m 1777"),
        (_stat(0o1777, 0), None, True, Status.OK, None),
        (_stat(0o777, 0), None, True, Status.DEGRADED, "chmod 1777"),
        (_stat(0o755, 0), None, False, Status.MISSING, "install -d -o alice -m 0700"),
        (_stat(0o755, 0), _stat(0o700), False, Status.OK, None),
        (_stat(0o755, 0), _stat(0o750), False, Status.DEGRADED, "chmod 0700"),
        (_stat(0o755, 0), _stat(0o700, uid=1001), False, Status.MISSING, "chown alice"),
    ],
)
def test_job_root(root: Any, mine: Any, writable: bool, status: Status, fix: str | None) -> None:
    site = from_data({"submission": {"job_root": "/shared/jobs"}})
    check = job_root(site, root, mine, user="alice", uid=1000, writable=writable)
    assert check.status is status, check
    assert (check.fix is None) if fix is None else (fix in (check.fix or ""))
