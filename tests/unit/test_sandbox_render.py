"""Rendering of the sandbox's configuration files, checked against golden files.

Regenerate the golden files after an intended template change with:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_sandbox_render.py
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from hpcplat.sandbox import SandboxConfig
from hpcplat.sandbox.layout import Layout
from hpcplat.sandbox.render import build_context, render_all, render_template, write_atomic

GOLDEN = Path(__file__).parents[1] / "golden" / "sandbox"
FIXED = SandboxConfig(state_dir=Path("/srv/hpcsb"), nodes=2, gpus_per_node=2, port_base=17000)


def fixed_context(config: SandboxConfig = FIXED) -> dict[str, object]:
    layout = Layout(config.state_dir, config.name)
    return build_context(config, layout, control_host="ctl", db_password="golden-password")


def rendered(config: SandboxConfig = FIXED) -> dict[str, str]:
    layout = Layout(config.state_dir, config.name)
    return {f.path.name: f.text for f in render_all(layout, fixed_context(config))}


@pytest.mark.parametrize("name", ["slurm.conf", "gres.conf", "slurmdbd.conf", "mariadb.cnf", "hpcplat.toml"])
def test_matches_golden_file(name: str) -> None:
    text = rendered()[name]
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1 to create it"
    assert text == golden.read_text(), f"{name} differs from {golden}; if intended, UPDATE_GOLDEN=1"


def test_slurm_conf_has_one_node_line_per_node_with_its_address_and_port() -> None:
    config = SandboxConfig(
        state_dir=Path("/srv/x"), nodes=3, loopback_net=7, node_prefix="t", port_base=20000
    )
    lines = [line for line in rendered(config)["slurm.conf"].splitlines() if line.startswith("NodeName=")]
    assert lines == [
        f"NodeName=t{i} NodeAddr=127.0.7.{i} Port={20010 + i} CPUs=4 RealMemory=4000 Gres=gpu:4 State=UNKNOWN"
        for i in (1, 2, 3)
    ]


def test_slurm_conf_carries_the_policies_the_platform_relies_on() -> None:
    conf = dict(
        line.split("=", 1) for line in rendered()["slurm.conf"].splitlines() if "=" in line and line[0] != "#"
    )
    assert conf["PreemptType"] == "preempt/qos"
    assert conf["PreemptMode"] == "REQUEUE"
    assert conf["AccountingStorageEnforce"] == "associations,limits,qos"
    assert conf["AccountingStorageTRES"] == "gres/gpu"
    assert conf["PriorityType"] == "priority/multifactor"
    assert conf["KillWait"] == "10"
    assert conf["JobRequeue"] == "1"
    assert conf["AuthInfo"].startswith("socket=/srv/hpcsb/munge/")
    assert conf["SlurmctldPort"] == "17000"
    assert conf["AccountingStoragePort"] == "17001"


def test_zero_gpus_gives_no_gres_on_nodes_and_an_empty_gres_conf() -> None:
    files = rendered(SandboxConfig(state_dir=Path("/srv/x"), nodes=1, gpus_per_node=0))
    assert "Gres=" not in files["slurm.conf"]
    assert "File=" not in files["gres.conf"]


def test_gres_conf_lists_each_gpu_device_in_index_order() -> None:
    lines = [line for line in rendered()["gres.conf"].splitlines() if line.startswith("NodeName=")]
    assert lines == [
        "NodeName=n1 Name=gpu File=/srv/hpcsb/gpu/n1gpu0",
        "NodeName=n1 Name=gpu File=/srv/hpcsb/gpu/n1gpu1",
        "NodeName=n2 Name=gpu File=/srv/hpcsb/gpu/n2gpu0",
        "NodeName=n2 Name=gpu File=/srv/hpcsb/gpu/n2gpu1",
    ]


def test_site_config_has_the_shape_other_modules_read() -> None:
    site = tomllib.loads(rendered()["hpcplat.toml"])
    assert site["cluster"] == {"name": "hpcsb"}
    assert site["defaults"] == {"account": "vision", "tier": "normal", "partition": "gpu"}
    assert site["catalog"] == {"url": "sqlite:////srv/hpcsb/catalog.db"}
    assert site["tiers"]["urgent"] == {"partition": "gpu", "qos": "urgent", "preemptible": False}
    assert site["tiers"]["normal"] == {"partition": "gpu", "qos": "normal", "preemptible": False}
    assert site["tiers"]["preemptible"] == {"partition": "gpu", "qos": "preemptible", "preemptible": True}


def test_context_is_plain_data_so_another_tool_can_render_the_templates() -> None:
    context = fixed_context()
    through_json = json.loads(json.dumps(context))  # fails on Paths, dataclasses, enums
    assert render_template("slurm.conf.j2", through_json) == render_template("slurm.conf.j2", context)


def test_a_missing_variable_is_an_error_not_an_empty_string() -> None:
    context = fixed_context()
    del context["munge_socket"]
    with pytest.raises(Exception, match="munge_socket"):
        render_template("slurm.conf.j2", context)


def test_secrets_files_are_written_with_mode_600(tmp_path: Path) -> None:
    config = SandboxConfig(state_dir=tmp_path)
    layout = Layout(config.state_dir, config.name)
    layout.etc_dir.mkdir()
    modes = {}
    for f in render_all(layout, fixed_context(config)):
        if f.path.parent == layout.etc_dir:
            write_atomic(f.path, f.text, f.mode)
            modes[f.path.name] = f.path.stat().st_mode & 0o777
    assert modes["slurmdbd.conf"] == 0o600
    assert modes["mariadb.cnf"] == 0o600
    assert modes["slurm.conf"] == 0o644


def test_write_atomic_reports_whether_anything_changed(tmp_path: Path) -> None:
    target = tmp_path / "f.conf"
    assert write_atomic(target, "a\n", 0o644) is True
    assert write_atomic(target, "a\n", 0o644) is False
    assert write_atomic(target, "b\n", 0o644) is True
    assert target.read_text() == "b\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.conf"]
