"""The Ansible roles: lint and syntax check, then site.yml applied for real to a test root.

The play runs with connection=local on this machine; every "machine" of the test inventory gets
its own ``hpcplat_root`` under tmp_path, packages/services/users are left alone, and what the
roles render is then handed to the real consumers: ``slurmd -G`` parses slurm.conf and gres.conf
(device files included), real Lmod finds the module tree, the node agent and tomllib read the site
file. slurm.conf is also compared byte for byte with the sandbox's own renderer.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpcplat.runner import CommandResult, run

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOK = BIN / "ansible-playbook"
LINT = BIN / "ansible-lint"

pytestmark = [
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible-core is not installed (pip install -e .[dev])"),
    pytest.mark.timeout(300),
]

GPUS = 2
NODES = {"gpu1": "127.0.1.22", "gpu2": "127.0.1.23"}
DB_PASSWORD = "Correct-Horse_Battery9"


def ansible_env(tmp: Path) -> dict[str, str]:
    home = tmp / "ansible-home"
    return {
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }


SAFE = {"hpcplat_install_packages": False, "hpcplat_manage_services": False, "hpcplat_manage_users": False}
"""Every test inventory sets these: the play must not install, start or create anything on this machine."""


def playbook(tmp: Path, inventory: Path, *args: str, timeout: float = 240) -> CommandResult:
    data = yaml.safe_load(inventory.read_text())["all"]
    assert {k: data["vars"].get(k) for k in SAFE} == SAFE, (
        "a test inventory must keep the play off this machine"
    )
    for group in data["children"].values():
        for name, host_vars in group["hosts"].items():
            assert host_vars is None or str(host_vars.get("hpcplat_root", "")).startswith(str(tmp)), name
    return run(
        [str(PLAYBOOK), "-i", str(inventory), "site.yml", *args],
        timeout=timeout,
        cwd=str(ANSIBLE_DIR),
        env=ansible_env(tmp),
        check=False,
    )


def test_lint_production_profile_and_syntax_check(tmp_path: Path) -> None:
    syntax = run(
        [str(PLAYBOOK), "--syntax-check", "-i", "inventory/hosts.example.yml", "site.yml"],
        timeout=120,
        cwd=str(ANSIBLE_DIR),
        env=ansible_env(tmp_path),
        check=False,
    )
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    if not LINT.exists():
        pytest.skip("ansible-lint is not installed")
    lint = run(
        [str(LINT), "--offline", "--profile", "production", "--nocolor"],
        timeout=240,
        cwd=str(ANSIBLE_DIR),
        env={**ansible_env(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")},
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Profile 'production' was required, and it passed" in lint.stderr + lint.stdout


@pytest.mark.parametrize(
    ("gpu1", "gpu2", "message"),
    [
        (
            {"gpus": 2},
            {"gpu_count": 2},
            "gpu1: variable 'gpus' was renamed in hpcplat 0.1; rename gpus to gpu_count",
        ),
        (
            {"gpu_count": 2},
            {"gpu_count": 2},
            "slurmdbd_config.db_password must be set (at least 12 characters, without '#'",
        ),
    ],
    ids=["renamed-variable", "hash-in-db-password"],
)
def test_inventory_errors_stop_the_play_with_the_fix(
    tmp_path: Path, gpu1: dict[str, Any], gpu2: dict[str, Any], message: str
) -> None:
    node = {"cpus": 1, "memory_mb": 100}
    password = "with#hash-is-a-comment" if "db_password" in message else DB_PASSWORD
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": sys.executable,
                        **SAFE,
                        "slurmdbd_config": {"db_password": password},
                    },
                    "children": {
                        "controller": {"hosts": {"ctl": {"hpcplat_root": str(tmp_path / "ctl")}}},
                        "dbd": {"hosts": {"ctl": None}},
                        "compute": {
                            "hosts": {
                                "gpu1": {**gpu1, **node, "hpcplat_root": str(tmp_path / "gpu1")},
                                "gpu2": {**gpu2, **node, "hpcplat_root": str(tmp_path / "gpu2")},
                            }
                        },
                    },
                }
            }
        )
    )
    result = playbook(tmp_path, inventory, "--limit", "ctl,gpu1", timeout=120)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split()), result.stdout[-3000:]
    assert not (tmp_path / "gpu1" / "etc" / "slurm").exists()


def test_ansible_and_hpcplat_read_the_example_inventory_alike(tmp_path: Path) -> None:
    from hpcplat.fleet.inventory import load_inventory

    listed = run(
        [str(BIN / "ansible-inventory"), "-i", "inventory/hosts.example.yml", "--list"],
        timeout=60,
        cwd=str(ANSIBLE_DIR),
        env=ansible_env(tmp_path),
    )
    ansible_view = json.loads(listed.stdout)
    ours = load_inventory(ANSIBLE_DIR / "inventory" / "hosts.example.yml")
    assert set(ansible_view["_meta"]["hostvars"]) == set(ours.hosts)
    for group, members in ours.groups.items():
        if group != "all":
            assert set(ansible_view[group]["hosts"]) == set(members), group
    for name, host in ours.hosts.items():
        theirs = ansible_view["_meta"]["hostvars"][name]
        for key in ("ansible_host", "gpu_count", "cpus", "slurm_node_name"):
            assert theirs.get(key) == host.vars.get(key), (name, key)


def make_device(path: Path) -> None:
    """An emulated GPU: a character device with /dev/null's numbers (slurmd wants a device)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


def build_inventory(tmp: Path) -> dict[str, Any]:
    hosts: dict[str, dict[str, Any]] = {}

    def host(name: str, **more: Any) -> dict[str, Any]:
        hosts[name] = {"hpcplat_root": str(tmp / name), **more}
        return hosts[name]

    compute = {}
    for name, address in NODES.items():
        devices = [str(tmp / "dev" / f"{name}gpu{i}") for i in range(GPUS)]
        for device in devices:
            make_device(Path(device))
        compute[name] = host(
            name, ansible_host=address, gpu_count=GPUS, gpu_devices=devices, cpus=4, memory_mb=4000
        )
    return {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                **SAFE,
                "slurm_config": {"cluster_name": "ansibletest"},
                "slurm_conf": {"MinJobAge": 60, "PrologFlags": "Contain", "JobCompType": None},
                "slurmdbd_config": {"db_password": DB_PASSWORD},
                "hpcplat_site_config": {
                    "catalog_url": f"sqlite:///{tmp}/catalog.db",
                    "default_account": "vision",
                },
            },
            "children": {
                "controller": {"hosts": {"ctl": host("ctl", ansible_host="127.0.1.21")}},
                "dbd": {"hosts": {"ctl": None}},
                "compute": {"hosts": compute},
                "login": {"hosts": {"ctl": None}},
            },
        }
    }


def test_tier_names_that_are_not_toml_bare_keys_stop_the_play(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the play creates device files and root-owned files")
    data = build_inventory(tmp_path)
    data["all"]["vars"]["hpcplat_site_config"]["tiers"] = [
        {"name": "normal", "partition": "gpu", "qos": "normal", "preemptible": False},
        {"name": "gpu.large", "partition": "gpu", "qos": "large", "preemptible": False},
    ]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    result = playbook(tmp_path, inventory, "--limit", "ctl")
    assert result.returncode != 0
    assert (
        "a tier name may hold only letters, digits, '_' and '-' (it is a TOML key of the site file "
        'and a --tier value); rename "gpu.large"'
    ) in " ".join(result.stdout.split()), result.stdout[-3000:]
    assert not (tmp_path / "ctl" / "etc" / "hpcplat" / "hpcplat.toml").exists()


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """site.yml applied once; returns the test root (one directory per machine)."""
    if os.geteuid() != 0:
        pytest.skip("the apply test creates device files and root-owned files")
    tmp = tmp_path_factory.mktemp("ansible-root")
    inventory = tmp / "hosts.yml"
    inventory.write_text(yaml.safe_dump(build_inventory(tmp), sort_keys=False))
    # gpu2 stays in the inventory (slurm.conf and gres.conf list it) but is not configured: one
    # compute machine shows what every one gets, at two thirds of the time.
    result = playbook(tmp, inventory, "--limit", "ctl,gpu1")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    (tmp / "first-run.log").write_text(result.stdout)
    return tmp


def test_slurm_accepts_the_rendered_slurm_conf_and_gres_conf(applied: Path) -> None:
    slurmd = shutil.which("slurmd") or "/usr/sbin/slurmd"
    if not Path(slurmd).exists():
        pytest.skip("slurmd is not installed")
    for node in NODES:  # gpu2's lines are in gpu1's files: slurmd -N gpu2 checks them
        conf = applied / "gpu1" / "etc" / "slurm" / "slurm.conf"
        result = run([slurmd, "-f", str(conf), "-N", node, "-G"], timeout=30, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "error" not in output.lower(), output
        gres = [line for line in output.splitlines() if "Gres Name=gpu" in line]
        assert len(gres) == GPUS, output
        for index in range(GPUS):
            assert f"Index={index} " in gres[index] and f"File={applied}/dev/{node}gpu{index}" in gres[index]
        assert f"Gres=gpu:{GPUS}" in conf.read_text()


def test_site_overrides_reach_slurm_conf_over_production_defaults(applied: Path) -> None:
    texts = {m: (applied / m / "etc" / "slurm" / "slurm.conf").read_text() for m in ("ctl", "gpu1")}
    assert len(set(texts.values())) == 1
    conf = texts["ctl"]
    # The inventory's slurm_conf: a changed default, a new parameter, a removed default.
    assert "\nMinJobAge=60\n" in conf and "MinJobAge=300" not in conf
    assert "\nPrologFlags=Contain\n" in conf
    assert "JobCompType" not in conf
    # Production defaults: no config_overrides, Slurm's own scheduler intervals, a real MailProg,
    # the hpcplat epilog and health check.
    assert "config_overrides" not in conf and "SchedulerParameters" not in conf
    assert "\nMailProg=/usr/bin/mail\n" in conf
    assert "\nEpilog=/etc/slurm/hpcplat-epilog\n" in conf
    assert "\nHealthCheckProgram=/etc/slurm/hpcplat-healthcheck\n" in conf
    epilog = (applied / "gpu1" / "etc" / "slurm" / "hpcplat-epilog").read_text()
    assert epilog.rstrip().endswith("--dry-run")
    assert "ACT = False" in (applied / "gpu1" / "etc" / "slurm" / "hpcplat-healthcheck").read_text()
    for node, address in NODES.items():
        assert f"NodeName={node} NodeAddr={address} Port=6818 CPUs=4 RealMemory=4000 Gres=gpu:{GPUS}" in conf


def test_one_munge_key_everywhere_and_secrets_kept_private(applied: Path) -> None:
    keys = {m: applied / m / "etc" / "munge" / "munge.key" for m in ("ctl", "gpu1")}
    contents = {path.read_bytes() for path in keys.values()}
    assert len(contents) == 1 and len(contents.pop()) == 1024
    assert all(path.stat().st_mode & 0o777 == 0o400 for path in keys.values())
    dbd = applied / "ctl" / "etc" / "slurm" / "slurmdbd.conf"
    assert dbd.stat().st_mode & 0o777 == 0o600
    assert f"StoragePass={DB_PASSWORD}" in dbd.read_text()
    assert DB_PASSWORD not in (applied / "first-run.log").read_text()


def test_hosts_file_module_tree_and_site_configuration(applied: Path) -> None:
    hosts = (applied / "gpu1" / "etc" / "hosts").read_text()
    for name, address in {"ctl": "127.0.1.21", **NODES}.items():
        assert f"{address} {name}\n" in hosts

    modulepath = applied / "ctl" / "opt" / "hpcplat" / "modulefiles"
    assert (modulepath / "hpcplat" / "0.1.0.lua").is_file()
    from hpcplat.provenance.lmod import LmodUnavailable, module_availability

    try:
        found = module_availability(["hpcplat/0.1.0", "nosuch/1.0"], modulepath=str(modulepath))
    except LmodUnavailable:
        pytest.skip("Lmod is not installed")
    assert found == {"hpcplat/0.1.0": True, "nosuch/1.0": False}

    site = applied / "gpu1" / "etc" / "hpcplat" / "hpcplat.toml"
    data = tomllib.loads(site.read_text())
    assert data["cluster"]["name"] == "ansibletest"
    assert data["defaults"]["account"] == "vision"
    assert data["tiers"]["preemptible"]["preemptible"] is True
    assert data["node_agent"]["metrics_port"] == 9810
    assert data["node_agent"]["dry_run"] is True
    assert site.stat().st_mode & 0o777 == 0o644 and "@" not in data["catalog"]["url"]
    from node_agent.config import load

    agent = load(site)
    assert agent.metrics_port == 9810 and agent.catalog_url == f"sqlite:///{applied}/catalog.db"

    unit = (applied / "gpu1" / "etc" / "systemd" / "system" / "hpcplat-node-agent.service").read_text()
    assert "ExecStart=/opt/hpcplat/venv/bin/hpcplat-node-agent" in unit
    assert "StandardOutput=append:/var/log/hpcplat/node-agent.log" in unit
    link = applied / "ctl" / "usr" / "local" / "bin" / "hpcplat"
    assert os.readlink(link) == "/opt/hpcplat/venv/bin/hpcplat"


def test_second_run_changes_nothing(applied: Path) -> None:
    result = playbook(applied, applied / "hosts.yml", "--limit", "gpu1")
    assert result.returncode == 0, result.stdout[-4000:]
    recap = [line for line in result.stdout.splitlines() if " : ok=" in line]
    assert len(recap) == 1
    assert all("changed=0" in line for line in recap), "\n".join(recap)
