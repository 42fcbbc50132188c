"""Values a hostile or careless user gives: overflowing numbers, look-alike digits, trailing
newlines, self-referencing YAML, huge or non-finite params. Each is a clear error with exit 2,
never a traceback, and nothing is submitted (``--dry-run --no-validate``: no cluster is asked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcplat.spec import JobSpec, SpecError
from hpcplat.spec.units import parse_memory_mb, parse_time_minutes
from tests.fixtures.submission import invoke

DIGITS_300 = "9" * 300


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", DIGITS_300], "not a time limit"),
        (["--time", f"{DIGITS_300}m"], "not a time limit"),
        (["--time", "999999999"], "longer than a year"),
        (["--mem", f"{DIGITS_300}G"], "not a memory size"),
        (["--mem", "999999999999T"], "more than any node has"),
        (["--nodes", "²"], "--nodes"),
        (["--after", "12\n"], "not a Slurm job id"),
        (["--after", "١٢"], "not a Slurm job id"),
        (["--after", "1" * 40], "not a Slurm job id"),
        (["--env", "FOO\n=x"], "--env"),
        (["--param", "lr=nan"], "finite number"),
        (["--param", "lr=-inf"], "finite number"),
    ],
)
def test_hostile_flags_are_clear_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = invoke(
        ["submit", "--dry-run", "--no-validate", *args, "--", "true"], env={"HOME": str(tmp_path)}
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert "#SBATCH" not in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('command: ["true"]\nresources:\n  nodes: "--1"\n', "resources.nodes: must be a whole number"),
        ('command: ["true"]\nresources:\n  nodes: "²"\n', "resources.nodes: must be a whole number"),
        ('command: ["true"]\nx: &a\n  - *a\n', "refers to itself"),
        ('command: ["true"]\nx: &a {k: *a}\n', "refers to itself"),
        (
            'command: ["true"]\n'
            + "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 7)),
            "expands to more than",
        ),
        ('command: ["true"]\nparams:\n  big: "' + "x" * 200_000 + '"\n', "params: too large"),
        ('command: ["true"]\nparams:\n  lr: .nan\n', "finite number"),
        ('command: ["true"]\nenvironment:\n  vars:\n    BIG: "' + "x" * 200_000 + '"\n', "too large"),
    ],
)
def test_hostile_spec_files_are_clear_errors(text: str, message: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    result = invoke(["submit", "--dry-run", "--no-validate", "-f", str(spec)], env={"HOME": str(tmp_path)})
    assert result.exit_code == 2, result.output[-2000:]
    assert message in result.output, result.output[-2000:]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["١", "²", "1" * 5000, "1\n2"])
def test_parsers_take_ascii_digits_only(value: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        parse_time_minutes(value)
    with pytest.raises(ValueError, match="not a"):
        parse_memory_mb(value)


def test_params_at_the_limit_pass_and_over_it_fail() -> None:
    JobSpec(command=("true",), params={"v": "x" * 60_000})
    with pytest.raises(SpecError, match="too large"):
        JobSpec(command=("true",), params={"v": "x" * 70_000})
