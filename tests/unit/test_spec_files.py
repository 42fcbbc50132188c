"""Spec files: errors name the file, the line and the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpcplat.errors import UsageError
from hpcplat.spec import load_spec_file


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_YAML = """\
name: resnet
command: [python, train.py, --lr, "0.1"]
resources:
  nodes: 2
  gpus_per_node: 4
  time: 2h
tier: preemptible
params:
  lr: 0.1
datasets: [digits@2]
"""


def test_yaml_file_loads(tmp_path: Path) -> None:
    spec = load_spec_file(write(tmp_path, "train.yaml", GOOD_YAML))
    assert spec.command == ("python", "train.py", "--lr", "0.1")
    assert spec.resources.nodes == 2 and spec.resources.time_limit_min == 120
    assert spec.params == {"lr": 0.1}


def test_yaml_error_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "train.yaml", GOOD_YAML.replace("gpus_per_node: 4", "gpus_per_node: -4"))
    with pytest.raises(UsageError) as caught:
        load_spec_file(path)
    assert f"{path}:5: resources.gpus_per_node: must be at least 0, got -4" in str(caught.value)
    assert caught.value.exit_code == 2


def test_yaml_unknown_key_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "command: [x]\nresources:\n  nodes: 1\n  gpu: 2\n")
    with pytest.raises(UsageError, match=r"t\.yaml:4: resources\.gpu: unknown field"):
        load_spec_file(path)


def test_yaml_list_item_line(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "command: [x]\ndepends_on:\n  - 12\n  - nope\n")
    with pytest.raises(UsageError, match=r"t\.yaml:4: depends_on\[1\]: not a Slurm job id"):
        load_spec_file(path)


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "command: [x\nresources:\n  nodes: 1\n")
    with pytest.raises(UsageError, match=r"malformed spec file: .*t\.yaml:\d+:\d+: "):
        load_spec_file(path)


def test_toml_error_names_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.toml",
        'name = "x"\ncommand = ["python", "t.py"]\n\n[resources]\nnodes = 2\ntime = "forever"\n',
    )
    with pytest.raises(UsageError, match=r"t\.toml:6: resources\.time: not a time limit"):
        load_spec_file(path)


def test_malformed_toml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", 'command = ["x"]\n[resources\nnodes = 1\n')
    with pytest.raises(UsageError, match=r"malformed spec file: .*t\.toml:2"):
        load_spec_file(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="spec file not found"):
        load_spec_file(tmp_path / "missing.yaml")
    with pytest.raises(UsageError, match="is a directory"):
        load_spec_file(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="not UTF-8"):
        load_spec_file(binary)
    empty = write(tmp_path, "e.yaml", "")
    with pytest.raises(UsageError, match="the file holds empty"):
        load_spec_file(empty)
    listing = write(tmp_path, "l.yaml", "- a\n- b\n")
    with pytest.raises(UsageError, match="expected a mapping"):
        load_spec_file(listing)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", GOOD_YAML)
    path.chmod(0)
    with pytest.raises(UsageError, match="permission denied"):
        load_spec_file(path)


def test_overrides_apply_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "train.yaml", GOOD_YAML)
    spec = load_spec_file(path, overrides={"resources": {"nodes": 1}, "tier": "urgent"})
    assert spec.resources.nodes == 1 and spec.resources.gpus_per_node == 4 and spec.tier == "urgent"
