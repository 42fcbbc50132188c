"""The Ansible roles' Python parts and their tie to the sandbox's templates (no play is run here)."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "ansible" / "roles"
SHARED = REPO / "hpcplat" / "sandbox" / "templates"

pytest.importorskip("ansible")


def plugin(role: str, name: str) -> ModuleType:
    path = ROLES / role / "filter_plugins" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hpcplat_test_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def template_task(role: str, src: str) -> dict[str, Any]:
    tasks = yaml.safe_load((ROLES / role / "tasks" / "main.yml").read_text())
    for task in tasks:
        if task.get("ansible.builtin.template", {}).get("src") == src:
            return dict(task)
    raise AssertionError(f"role {role} has no template task for {src}")


def template_variables(name: str) -> set[str]:
    import jinja2
    from jinja2 import meta

    env = jinja2.Environment(autoescape=False)
    return set(meta.find_undeclared_variables(env.parse((SHARED / name).read_text())))


@pytest.mark.parametrize(
    ("role", "src", "shared"),
    [
        ("slurm_common", "slurm.conf.j2", "slurm.conf.j2"),
        ("slurm_compute", "gres.conf.j2", "gres.conf.j2"),
        ("slurmdbd", "slurmdbd.conf.j2", "slurmdbd.conf.j2"),
        ("hpcplat_site", "site.toml.j2", "hpcplat.toml.j2"),
    ],
)
def test_roles_give_every_variable_the_sandbox_templates_use(role: str, src: str, shared: str) -> None:
    link = ROLES / role / "templates" / shared
    assert link.is_symlink() and link.resolve() == (SHARED / shared).resolve()
    given = set(template_task(role, src).get("vars", {}))
    missing = template_variables(shared) - given
    assert not missing, (
        f"hpcplat/sandbox/templates/{shared} uses {sorted(missing)}, which the {role} role does not "
        f"pass: add them to the `vars:` of its template task (ansible/roles/{role}/tasks/main.yml)"
    )


class FakeHostvars(dict[str, dict[str, Any]]):
    """hostvars as the filter sees it: host name -> that host's variables."""


def test_slurm_nodes_filter_defaults_and_errors() -> None:
    nodes_of = plugin("slurm_common", "hpcplat_slurm").hpcplat_slurm_nodes
    hostvars = FakeHostvars(
        gpu01={"ansible_host": "10.0.0.1", "gpu_count": 2, "cpus": 64, "memory_mb": 512000},
        gpu02={
            "slurm_node_name": "g2",
            "gpu_count": 2,
            "gpu_devices": ["/dev/a", "/dev/b"],
            "cpus": 8,
            "memory_mb": 1,
            "slurmd_port": 7000,
        },
    )
    nodes = nodes_of(["gpu01", "gpu02"], hostvars, 6818)
    assert nodes[0] == {
        "name": "gpu01",
        "addr": "10.0.0.1",
        "port": 6818,
        "cpus": 64,
        "memory_mb": 512000,
        "gpus": 2,
        "gpu_files": ["/dev/nvidia0", "/dev/nvidia1"],
    }
    assert (nodes[1]["name"], nodes[1]["addr"], nodes[1]["port"], nodes[1]["gpu_files"]) == (
        "g2",
        "gpu02",
        7000,
        ["/dev/a", "/dev/b"],
    )

    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match="gpu03: set cpus and memory_mb"):
        nodes_of(["gpu03"], FakeHostvars(gpu03={"gpu_count": 1}), 6818)
    with pytest.raises(AnsibleFilterError, match="gpu04: gpu_count is 2 but gpu_devices lists 1"):
        nodes_of(
            ["gpu04"],
            FakeHostvars(gpu04={"gpu_count": 2, "gpu_devices": ["/dev/x"], "cpus": 1, "memory_mb": 1}),
            6818,
        )
    with pytest.raises(AnsibleFilterError, match="gpu05: gpu_count must be a whole number"):
        nodes_of(["gpu05"], FakeHostvars(gpu05={"gpu_count": "8", "cpus": 1, "memory_mb": 1}), 6818)


def test_toml_tables_filter_writes_what_tomllib_reads() -> None:
    tables = plugin("hpcplat_site", "hpcplat_toml").hpcplat_toml_tables
    sections = {
        "submission": {"python": '/opt/"odd" path\\x', "lmod_init": ["/a", "/b"], "unset": None},
        "node_agent": {"metrics_port": 9810, "dry_run": False, "idle": {"act_after_s": 7200.5}},
    }
    text = tables(sections)
    assert tomllib.loads(text) == {
        "submission": {"python": '/opt/"odd" path\\x', "lmod_init": ["/a", "/b"]},
        "node_agent": {"metrics_port": 9810, "dry_run": False, "idle": {"act_after_s": 7200.5}},
    }

    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=r"node_agent.when: cannot write"):
        tables({"node_agent": {"when": object()}})


def test_toml_tables_filter_round_trips_hostile_keys_and_strings() -> None:
    tables = plugin("hpcplat_site", "hpcplat_toml").hpcplat_toml_tables
    hostile = 'emoji 🚀, "quotes", \'single\', back\\slash\nnew line\ttab \x00\x1f\x7f é 𝄞'
    sections = {
        "tiers": {
            "gpu.large": {"qos": "large", "preemptible": False},
            "with space": {"partition": "gpu 🚀"},
            'quo"te': {"n": 1},
        },
        "key.with.dots": {"a key": hostile, "🚀": [hostile, -0.5, 1e-05, 2**63 - 1]},
        "": {"x": 1.0},
    }
    text = tables(sections)
    assert tomllib.loads(text) == sections
    assert "\\ud83d" not in text and "🚀" in text  # one character, never a surrogate pair

    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=r"tiers.8: keys must be strings, got int 8; quote it"):
        tables({"tiers": {8: {"qos": "x"}}})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("inf"), r"node_agent.x: inf is not a value the site file accepts; give a finite number"),
        (float("-inf"), r"node_agent.x: -inf is not a value"),
        (float("nan"), r"node_agent.x: nan is not a value"),
        ([1.0, float("inf")], r"node_agent.x\[1\]: inf is not a value"),
        (2**63, r"node_agent.x: 9223372036854775808 is out of range \(TOML integers are 64-bit\)"),
        ("bad \udcff", r"node_agent.x: .* holds a lone surrogate"),
    ],
)
def test_toml_tables_filter_refuses_what_toml_cannot_hold(value: object, message: str) -> None:
    tables = plugin("hpcplat_site", "hpcplat_toml").hpcplat_toml_tables
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=message):
        tables({"node_agent": {"x": value}})


_TEXT = st.text(st.characters(exclude_categories=("Cs",)))
_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_TABLES = st.recursive(
    st.dictionaries(_TEXT, _SCALARS | st.lists(_SCALARS, max_size=3), max_size=4),
    lambda inner: st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(_TEXT, _TABLES, max_size=3))
@settings(max_examples=200, deadline=None)
def test_toml_tables_filter_round_trips_anything(sections: dict[str, Any]) -> None:
    tables = plugin("hpcplat_site", "hpcplat_toml").hpcplat_toml_tables
    assert tomllib.loads(tables(sections)) == sections


def test_every_role_validates_first_and_documents_its_arguments() -> None:
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        assert specs["argument_specs"]["main"]["short_description"], role.name
        tasks = yaml.safe_load((role / "tasks" / "main.yml").read_text())
        assert tasks[0] == {"name": "Validate inputs", "ansible.builtin.import_tasks": "validate.yml"}, (
            role.name
        )
        checks = yaml.safe_load((role / "tasks" / "validate.yml").read_text())
        assert all(c["ansible.builtin.assert"].get("fail_msg") for c in checks), role.name
