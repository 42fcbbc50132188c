"""The one command runner: deadlines, no shell, typed errors that keep what happened."""

from __future__ import annotations

import sys
import time

import pytest

from hpcplat.errors import CommandError, CommandNotFound, CommandTimeout, SlurmError
from hpcplat.runner import run


def test_success_returns_output() -> None:
    result = run([sys.executable, "-c", "print('hi')"], timeout=10)
    assert result.returncode == 0
    assert result.stdout.strip() == "hi"


def test_failure_keeps_command_exit_code_and_stderr() -> None:
    with pytest.raises(SlurmError) as info:
        run(
            [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"],
            timeout=10,
            error=SlurmError,
        )
    err = info.value
    assert err.returncode == 3
    assert err.stderr == "boom"
    assert err.argv[0] == sys.executable
    assert "exit code 3" in str(err) and "boom" in str(err)


def test_timeout_kills_and_raises_typed_error() -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 10
    assert isinstance(info.value, CommandError)
    assert "0.5 s" in str(info.value)


def test_missing_program_is_command_not_found() -> None:
    with pytest.raises(CommandNotFound, match="command not found"):
        run(["hpcplat-no-such-program"], timeout=5)


def test_no_shell_interpretation() -> None:
    result = run(["echo", "$(whoami); rm -rf /"], timeout=5)
    assert result.stdout.strip() == "$(whoami); rm -rf /"


def test_check_false_returns_nonzero_result() -> None:
    assert run(["false"], timeout=5, check=False).returncode == 1


def test_env_is_added_to_the_environment() -> None:
    result = run(
        [sys.executable, "-c", "import os; print(os.environ['HPCPLAT_X'], 'PATH' in os.environ)"],
        timeout=10,
        env={"HPCPLAT_X": "42"},
    )
    assert result.stdout.split() == ["42", "True"]
