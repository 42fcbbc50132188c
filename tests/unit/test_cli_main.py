"""The ``hpcplat`` entry point: every command and subcommand has working --help, errors become
messages with exit codes, and nothing heavy is imported for --help."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from hpcplat.cli.main import COMMANDS, cli, main
from hpcplat.errors import HpcplatError, UsageError


def walk(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{' '.join((*prefix, name))} is listed but cannot be loaded"
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from walk(command, ctx, (*prefix, name))


ALL_COMMANDS = sorted(walk(cli, click.Context(cli)))


def test_every_command_of_the_map_loads() -> None:
    assert {words[0] for words in ALL_COMMANDS} == set(COMMANDS)


@pytest.mark.parametrize("words", ALL_COMMANDS, ids=" ".join)
def test_every_command_has_help(words: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*words, "--help"], prog_name="hpcplat")
    assert result.exit_code == 0, result.output
    assert f"Usage: hpcplat {' '.join(words)}" in result.output


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["submitt"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_hpcplat_errors_become_message_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    @cli.command("boom-test")
    def boom() -> None:
        raise UsageError("the thing is wrong", hint="do the other thing")

    try:
        with pytest.raises(SystemExit) as info:
            main(["boom-test"])
    finally:
        cli.commands.pop("boom-test", None)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: the thing is wrong" in err and "hint: do the other thing" in err
    assert "Traceback" not in err
    assert HpcplatError.exit_code == 1


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from hpcplat.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ['sqlalchemy', 'sqlmodel', 'torch', 'paramiko', 'jinja2', 'yaml', 'numpy']\n"
        "print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_python_dash_m_hpcplat_works() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hpcplat", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "0.1.0" in out.stdout


def test_the_demo_finds_its_training_example() -> None:
    from hpcplat.sandbox import demo

    assert (demo.REPO_EXAMPLES / "train_digits.py").is_file()
