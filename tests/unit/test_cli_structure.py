"""The CLI's shared pieces: the one table of spec flags (options, overrides, names in messages), the
one table/JSON layout, and command modules that do not import each other."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from hpcplat.cli.output import table, to_json
from hpcplat.cli.specflags import SPEC_FLAGS, option_name, overrides_from_options
from hpcplat.spec import JobSpec
from tests.fixtures.submission import invoke

CLI = Path(__file__).resolve().parents[2] / "hpcplat" / "cli"
SHARED = {"hpcplat.cli.common", "hpcplat.cli.output", "hpcplat.cli.specflags"}


@pytest.mark.parametrize("words", [["submit"], ["sweep", "submit"]], ids=" ".join)
def test_every_spec_flag_is_an_option_with_its_help(words: list[str]) -> None:
    text = " ".join(invoke([*words, "--help"]).output.split())
    for flag in SPEC_FLAGS:
        shown = f"{flag.short}, {flag.flag}" if flag.short else flag.flag
        assert shown in text, shown
        assert " ".join(flag.help.split()) in text, flag.help


def test_overrides_put_every_flag_in_its_spec_field() -> None:
    options = {
        "name": "n",
        "nodes": 2,
        "tasks_per_node": 4,
        "gpus_per_node": 4,
        "cpus_per_task": 8,
        "mem": "16G",
        "time_limit": "2h",
        "tier": "normal",
        "account": "nlp",
        "partition": "gpu",
        "modules": ("cuda/12", "nccl"),
        "venv": None,
        "conda": "torch",
        "container": "img.sif",
        "binds": ("/data",),
        "env_vars": ("A=1", "B=x=y"),
        "datasets": ("imagenet@3",),
        "params": ("lr=0.1", "steps=10", "fast=true", "opt=adam"),
        "workdir": "/w",
        "checkpoint_dir": "/c",
        "max_requeues": 3,
        "signal_warn_s": 60,
        "depends_on": ("12",),
        "tags": ("a", "b"),
    }
    assert overrides_from_options(options, ["python", "t.py"]) == {
        "command": ["python", "t.py"],
        "name": "n",
        "tier": "normal",
        "account": "nlp",
        "partition": "gpu",
        "workdir": "/w",
        "checkpoint_dir": "/c",
        "max_requeues": 3,
        "signal_warn_s": 60,
        "datasets": ["imagenet@3"],
        "params": {"lr": 0.1, "steps": 10, "fast": True, "opt": "adam"},
        "depends_on": ["12"],
        "tags": ["a", "b"],
        "resources": {"nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4, "cpus_per_task": 8}
        | {"memory": "16G", "time": "2h"},
        "environment": {
            "modules": ["cuda/12", "nccl"],
            "conda": "torch",
            "container": "img.sif",
            "container_binds": ["/data"],
            "vars": {"A": "1", "B": "x=y"},
        },
    }
    assert overrides_from_options({}, []) == {}


def test_every_field_of_the_table_is_a_job_spec_field() -> None:
    spec = JobSpec.from_dict({"command": ["x"]}).to_dict()
    for flag in SPEC_FLAGS:
        node = spec
        for part in flag.field.split("."):
            assert isinstance(node, dict) and part in node, f"{flag.flag}: no spec field {flag.field}"
            node = node[part]


@pytest.mark.parametrize(
    ("field", "flag"),
    [
        ("resources.memory", "--mem"),
        ("resources.time", "--time"),
        ("resources.nodes", "--nodes"),
        ("signal_warn_s", "--signal-warn"),
        ("environment.modules[1]", "--module"),
        ("environment.container_binds[0]", "--bind"),
        ("environment.vars.FOO", "--env FOO"),
        ("params.lr", "--param"),
        ("params", "--param"),
        ("datasets[0]", "--dataset"),
        ("depends_on[2]", "--after"),
        ("tags[0]", "--tag"),
        ("name", "--name"),
        ("command[0]", "command"),
        ("resources", "--resources"),
    ],
)
def test_errors_name_the_flag_of_the_field(field: str, flag: str) -> None:
    assert option_name(field) == flag


def test_table_aligns_and_shows_missing_values_as_dash() -> None:
    text = table(["NAME", "GPUS", "RUN"], [["a", 12, None], ["long-name", None, "x"]], right={"GPUS"})
    assert text.splitlines() == [
        "NAME       GPUS  RUN",
        "a            12  -",
        "long-name     -  x",
    ]
    assert table(["A", "B"], []) == "A  B"


def test_json_is_indented_or_one_line() -> None:
    data = {"b": [1, 2], "a": Path("/x")}
    assert json.loads(to_json(data)) == {"b": [1, 2], "a": "/x"}
    assert to_json(data).startswith('{\n "b"')  # one-space indent, keys in order
    assert "\n" not in to_json(data, compact=True)


def test_command_modules_do_not_import_each_other() -> None:
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("hpcplat.cli.") and name.count(".") == 2:
                    assert name in SHARED, f"{path.name} imports {name}"
