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


def test_only_the_site_file_still_shares_the_sandbox_template() -> None:
    """The Slurm files are the roles' own (defaults + site overrides); the site file is the sandbox's."""
    link = ROLES / "hpcplat_site" / "templates" / "hpcplat.toml.j2"
    assert link.is_symlink() and link.resolve() == (SHARED / "hpcplat.toml.j2").resolve()
    for role, name in [
        ("slurm_common", "slurm.conf.j2"),
        ("slurm_compute", "gres.conf.j2"),
        ("slurmdbd", "slurmdbd.conf.j2"),
    ]:
        assert not (ROLES / role / "templates" / name).is_symlink(), (role, name)


def test_the_site_file_task_passes_every_variable_of_the_shared_template() -> None:
    """A variable added to the sandbox's hpcplat.toml.j2 ([server]...) must reach the role's render."""
    task = template_task("hpcplat_site", "site.toml.j2")
    needed = template_variables("hpcplat.toml.j2") - {"job_root"}  # optional in the template
    assert needed <= set(task["vars"]), sorted(needed - set(task["vars"]))


def test_slurm_params_filter_merges_drops_and_refuses_what_slurm_cannot_store() -> None:
    params = plugin("slurm_common", "hpcplat_slurm").hpcplat_slurm_params
    text = params(
        {
            "ClusterName": "c",
            "SchedulerParameters": ["a=1", "b"],
            "Gone": None,
            "ConstrainCores": True,
            "Port": 7,
        }
    )
    assert text == "ClusterName=c\nSchedulerParameters=a=1,b\nConstrainCores=YES\nPort=7"
    from ansible.errors import AnsibleFilterError

    with pytest.raises(
        AnsibleFilterError, match=r"slurmdbd.conf: the value of StoragePass \(hidden\) cannot be stored"
    ):
        params({"StoragePass": "abc#def"}, "slurmdbd.conf")
    with pytest.raises(AnsibleFilterError, match="not a Slurm parameter name"):
        params({"Bad Key": 1})
    with pytest.raises(AnsibleFilterError, match="cannot be stored"):
        params({"MailProg": "/bin/mail\nEvil=1"})


def test_slurm_change_filter_says_what_slurm_needs() -> None:
    change = plugin("slurm_common", "hpcplat_slurm").hpcplat_slurm_change
    old = (
        "ClusterName=c\nSchedulerType=sched/backfill\nMinJobAge=300\n"
        "NodeName=c1 CPUs=2 Gres=gpu:2\nNodeName=c2 CPUs=2 Gres=gpu:2\n"
    )
    assert change("", old, "c1") == {"ctld": "none", "slurmd": False, "why": []}
    assert change(old, old, "c1")["ctld"] == "none"
    assert change(old, old.replace("MinJobAge=300", "MinJobAge=60"), "c1") == {
        "ctld": "reconfigure",
        "slurmd": False,
        "why": ["minjobage changed"],
    }
    gpu = old.replace("c1 CPUs=2 Gres=gpu:2", "c1 CPUs=2 Gres=gpu:1")
    assert change(old, gpu, "c1")["ctld"] == "restart" and change(old, gpu, "c1")["slurmd"] is True
    assert change(old, gpu, "c2")["slurmd"] is False
    plugin_change = old.replace("sched/backfill", "sched/builtin")
    assert change(old, plugin_change, "c2") == {
        "ctld": "restart",
        "slurmd": True,
        "why": ["schedulertype changed"],
    }
    gres = plugin("slurm_common", "hpcplat_slurm").hpcplat_gres_change
    before = "AutoDetect=off\nNodeName=c1 Name=gpu File=/d/a\nNodeName=c2 Name=gpu File=/d/b\n"
    after = "AutoDetect=off\nNodeName=c2 Name=gpu File=/d/b\n"
    assert (
        gres(before, after, "c1") is True
        and gres(before, after, "c2") is False
        and gres("", after, "c2") is False
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
    hostile = "emoji 🚀, \"quotes\", 'single', back\\slash\nnew line\ttab \x00\x1f\x7f é 𝄞"
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
        asserts = [c["ansible.builtin.assert"] for c in checks if "ansible.builtin.assert" in c]
        assert asserts and all(a.get("fail_msg") for a in asserts), role.name
