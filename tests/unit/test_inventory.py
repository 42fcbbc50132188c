"""The shared Ansible inventory as hpcplat reads it: merging, selection, and every bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from hpcplat.errors import UsageError
from hpcplat.fleet.inventory import (
    HOST_DEFAULTS,
    RENAMED_VARS,
    InventoryError,
    expand_host_pattern,
    load_inventory,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "ansible" / "inventory" / "hosts.example.yml"

GOOD = """
all:
  vars:
    ansible_user: admin
    node_agent_port: 9000
  children:
    controller:
      hosts:
        ctl1: {ansible_host: 10.0.0.1}
    dbd:
      hosts:
        ctl1:
    login:
      hosts:
        login1: {ansible_host: 10.0.0.5, ansible_user: ops}
    compute:
      vars:
        gpu_count: 8
        node_agent_port: 9100
      hosts:
        gpu[01:03]:
      children:
        a100:
          vars: {gpu_count: 4}
          hosts:
            big1: {ansible_host: 10.0.1.1, ansible_port: 2222, slurm_node_name: b1}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryError) as info:
        load_inventory(write(tmp_path, text))
    return info.value.problems


def test_groups_hosts_and_merged_variables(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, GOOD))
    assert list(inv.hosts) == ["ctl1", "login1", "gpu01", "gpu02", "gpu03", "big1"]
    assert set(inv.groups["compute"]) == {"gpu01", "gpu02", "gpu03", "big1"}
    assert inv.groups["a100"] == ("big1",)

    ctl = inv.hosts["ctl1"]
    assert ctl.groups == {"controller", "dbd"}
    assert (ctl.address, ctl.port, ctl.user) == ("10.0.0.1", 22, "admin")

    gpu = inv.hosts["gpu02"]
    assert gpu.address == "gpu02"  # no ansible_host: the name is the address
    assert gpu.gpu_count == 8
    assert gpu.node_agent_port == 9100  # the group beats all
    assert gpu.slurm_node_name == "gpu02"

    big = inv.hosts["big1"]
    assert big.groups == {"compute", "a100"}
    assert big.gpu_count == 4  # the child group beats its parent
    assert (big.port, big.slurm_node_name) == (2222, "b1")
    assert inv.hosts["login1"].user == "ops"  # host vars beat everything
    assert big.node_agent_log == HOST_DEFAULTS["node_agent_log"]


def test_select_hosts_groups_and_all_in_order_without_duplicates(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, GOOD))
    assert [h.name for h in inv.select(["gpu02", "compute", "ctl1"])] == [
        "gpu02",
        "gpu01",
        "gpu03",
        "big1",
        "ctl1",
    ]
    assert len(inv.select(["all"])) == 6


def test_unknown_host_names_close_matches_and_groups(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, GOOD))
    with pytest.raises(UsageError) as info:
        inv.select(["gpu04", "compte"])
    text = str(info.value)
    assert "'gpu04'" in text and "did you mean" in text and "gpu01" in text
    assert "'compte'" in text and "compute" in text
    assert "groups: a100, compute, controller, dbd, login" in text


def test_host_ranges_keep_zero_padding() -> None:
    assert expand_host_pattern("gpu[08:10]") == ["gpu08", "gpu09", "gpu10"]
    assert expand_host_pattern("n[1:5:2]") == ["n1", "n3", "n5"]
    assert expand_host_pattern("r[1:2]n[1:2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]


def test_host_listed_twice_in_one_group_names_host_and_lines(tmp_path: Path) -> None:
    text = """
    all:
      children:
        controller: {hosts: {ctl1: }}
        compute:
          hosts:
            gpu01: {gpu_count: 8}
            gpu02: {gpu_count: 8}
            gpu01: {gpu_count: 4}
    """
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert "'gpu01' is given twice" in problems[0] and "lines 7 and 9" in problems[0]


def test_host_listed_twice_with_conflicting_values(tmp_path: Path) -> None:
    text = """
    all:
      children:
        controller: {hosts: {ctl1: {ansible_host: 10.0.0.1}}}
        compute:
          hosts:
            ctl1: {ansible_host: 10.0.0.9}
            gpu01:
    """
    (problem,) = problems_of(tmp_path, text)
    assert "host 'ctl1' is listed twice with different ansible_host" in problem
    assert "'10.0.0.1' (under 'controller')" in problem and "'10.0.0.9' (under 'compute')" in problem


def test_one_machine_under_two_names(tmp_path: Path) -> None:
    text = """
    all:
      children:
        controller: {hosts: {ctl1: {ansible_host: 10.0.0.1}}}
        compute:
          hosts:
            gpu01: {ansible_host: 10.0.0.7}
            gpu1: {ansible_host: 10.0.0.7}
    """
    (problem,) = problems_of(tmp_path, text)
    assert "'gpu01' and 'gpu1' both point at 10.0.0.7:22" in problem


def test_missing_and_empty_required_groups(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "all:\n  children:\n    compute:\n    login: {hosts: {l1: }}\n")
    assert any("required group 'controller' is missing" in p for p in problems)
    assert any("required group 'compute' is empty" in p for p in problems)


@pytest.mark.parametrize(("old", "new"), [(r.old, r.new) for r in RENAMED_VARS.values()])
def test_renamed_variables_say_rename_x_to_y(tmp_path: Path, old: str, new: str) -> None:
    text = f"""
    all:
      children:
        controller: {{hosts: {{ctl1: }}}}
        compute:
          hosts:
            gpu01: {{{old}: 4}}
    """
    (problem,) = problems_of(tmp_path, text)
    assert f"host 'gpu01': variable '{old}' was renamed" in problem
    assert f"rename {old} to {new}" in problem


def test_renamed_variable_in_group_vars(tmp_path: Path) -> None:
    text = """
    all:
      children:
        controller: {hosts: {ctl1: }}
        compute:
          vars: {gpus: 8}
          hosts: {gpu01: }
    """
    (problem,) = problems_of(tmp_path, text)
    assert "group 'compute'" in problem and "rename gpus to gpu_count" in problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """
    all:
      children:
        compute:
          hosts:
            gpu01: {gpus: 4, ansible_port: 70000}
            gpu02: {gpu_count: -1}
            gpu03: {gpu_count: 2, gpu_devices: [/dev/nvidia0]}
    """
    problems = problems_of(tmp_path, text)
    joined = "\n".join(problems)
    assert "rename gpus to gpu_count" in joined
    assert "ansible_port 70000 is not a TCP port" in joined
    assert "host 'gpu02': gpu_count must be a whole number >= 0" in joined
    assert "gpu_count is 2 but gpu_devices lists 1 device(s)" in joined
    assert "required group 'controller' is missing" in joined
    assert len(problems) == 5


def test_wrong_shapes(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path, "all:\n  children:\n    controller:\n      hosts: [ctl1]\n    compute:\n      host: {g: }\n"
    )
    joined = "\n".join(problems)
    assert "'hosts' must be a mapping" in joined
    assert "group 'compute': unknown key(s) host" in joined


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not valid YAML"):
        load_inventory(write(tmp_path, "all: [unclosed"))
    with pytest.raises(UsageError, match="does not exist"):
        load_inventory(tmp_path / "nope.yml")


def test_example_inventory_loads() -> None:
    inv = load_inventory(EXAMPLE)
    assert inv.groups["controller"] and inv.groups["compute"]
    assert all(h.gpu_count > 0 for h in inv.select(["compute"]))


def test_ansible_roles_mirror_python_tables() -> None:
    """The roles check the same renamed variables and use the same defaults as hpcplat fleet."""
    roles = REPO / "ansible" / "roles"
    common = yaml.safe_load((roles / "common" / "vars" / "main.yml").read_text())
    table = {(r["old"], r["new"], r["since"]) for r in common["common_renamed_vars"]}
    assert table == {(r.old, r.new, r.since) for r in RENAMED_VARS.values()}
    agent = yaml.safe_load((roles / "node_agent" / "defaults" / "main.yml").read_text())
    for key in ("node_agent_port", "node_agent_log"):
        assert agent[key] == HOST_DEFAULTS[key], key
    slurm = yaml.safe_load((roles / "slurm_common" / "defaults" / "main.yml").read_text())
    assert f"default('{HOST_DEFAULTS['slurmd_log']}')" in slurm["slurm_common_defaults"]["slurmd_log_file"]
    site = (roles / "hpcplat_site" / "defaults" / "main.yml").read_text()
    assert f"node_agent_port | default({HOST_DEFAULTS['node_agent_port']})" in site
