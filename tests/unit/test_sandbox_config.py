"""SandboxConfig: validation of user input and the values derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcplat.errors import UsageError
from hpcplat.sandbox import Sandbox, SandboxConfig


def test_defaults_are_four_nodes_of_four_gpus_named_n1_to_n4() -> None:
    config = SandboxConfig(state_dir=Path("/srv/sb"))
    config.validate()
    assert config.name == "hpcsb"
    assert config.node_names == ["n1", "n2", "n3", "n4"]
    assert [config.node_addr(i) for i in (1, 4)] == ["127.0.1.1", "127.0.1.4"]
    assert config.gpus_per_node == 4


def test_every_port_derives_from_the_base_and_none_collide() -> None:
    config = SandboxConfig(state_dir=Path("/srv/sb"), nodes=3, port_base=20000)
    ports = config.ports()
    assert ports == {
        "slurmctld": 20000,
        "slurmdbd": 20001,
        "mariadb": 20002,
        "server": 20003,
        "slurmd-n1": 20011,
        "slurmd-n2": 20012,
        "slurmd-n3": 20013,
    }
    assert len(set(ports.values())) == len(ports)


def test_default_state_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HPCPLAT_SANDBOX_DIR", str(tmp_path / "sb"))
    assert Sandbox.default().config.state_dir == tmp_path / "sb"
    monkeypatch.delenv("HPCPLAT_SANDBOX_DIR")
    assert Sandbox.default().config.state_dir == Path.home() / ".local/state/hpcplat/sandbox"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"nodes": 0}, "--nodes must be between 1"),
        ({"nodes": -2}, "--nodes must be between 1"),
        ({"gpus_per_node": -1}, "--gpus-per-node"),
        ({"name": "Bad Name"}, "sandbox name"),
        ({"node_prefix": "n-"}, "node prefix"),
        ({"loopback_net": 0}, "loopback_net"),
        ({"port_base": 80}, "--port-base"),
        ({"state_dir": Path("/tmp/with space")}, "characters"),
        ({"state_dir": Path("/tmp/" + "x" * 80)}, "too long"),
    ],
)
def test_bad_values_are_usage_errors_that_say_what_is_allowed(changes: dict[str, object], words: str) -> None:
    base: dict[str, object] = {"state_dir": Path("/srv/sb")}
    base.update(changes)
    config = SandboxConfig(**base)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=words) as info:
        config.validate()
    assert info.value.exit_code == 2


def test_unknown_node_is_a_usage_error_listing_the_nodes() -> None:
    sb = Sandbox(SandboxConfig(state_dir=Path("/srv/sb"), nodes=2))
    with pytest.raises(UsageError, match="n1, n2"):
        sb.gpu_device_paths("n9")


def test_gpu_device_paths_are_in_index_order_under_the_state_dir() -> None:
    sb = Sandbox(SandboxConfig(state_dir=Path("/srv/sb"), gpus_per_node=3))
    assert sb.gpu_device_paths("n2") == [Path(f"/srv/sb/gpu/n2gpu{i}") for i in range(3)]


def test_env_points_slurm_and_hpcplat_at_the_sandbox_and_keeps_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/a:/b")
    env = Sandbox(SandboxConfig(state_dir=Path("/srv/sb"))).env()
    assert env == {
        "SLURM_CONF": "/srv/sb/etc/slurm.conf",
        "HPCPLAT_CONFIG": "/srv/sb/hpcplat.toml",
        "HPCPLAT_SANDBOX_DIR": "/srv/sb",
        "PATH": "/a:/b",
    }


def test_config_round_trips_through_its_saved_form(tmp_path: Path) -> None:
    config = SandboxConfig(
        name="x1", state_dir=tmp_path, nodes=2, node_prefix="t", loopback_net=3, port_base=21000
    )
    assert SandboxConfig.from_dict(config.to_dict()) == config


def test_at_reads_the_saved_config_of_a_state_dir(tmp_path: Path) -> None:
    config = SandboxConfig(name="hpcsbx", state_dir=tmp_path, nodes=1, port_base=21000)
    sb = Sandbox(config)
    sb.layout.config_json.write_text(__import__("json").dumps(config.to_dict()))
    assert Sandbox.at(tmp_path).config == config
    assert Sandbox.at(tmp_path / "empty").config.nodes == 4
