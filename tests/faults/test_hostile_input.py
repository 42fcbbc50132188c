"""Hostile input to the CLI and to spec files, generated with hypothesis: bad user input never
gives a traceback, always a clear message and exit code 2, and nothing is recorded or queued.

The real entry point (``hpcplat.cli.main.main``: errors become ``error: ...`` and their exit code)
runs in-process under click's ``CliRunner``, with a private site configuration and catalog, from a
private working directory; a few inputs also go through the installed ``hpcplat`` program. Every
generated ``submit`` carries at least one value that must be refused, next to hostile values
(quotes, ``$(...)``, backticks, newlines, escape sequences, long strings) in the fields that accept
free text. Each trial uses its own hypothesis seed (reproducible, different per trial).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st

from hpcplat.cli.main import main as hpcplat_main
from hpcplat.sandbox import Sandbox
from hpcplat.spec.units import parse_memory_mb, parse_time_minutes
from tests.faults.helpers import REPEATS, FaultReport, Harness, Trial, fault_report, harness, site_file

__all__ = ["fault_report"]

pytestmark = pytest.mark.sandbox

EXAMPLES = 40
PWNED = "/tmp/hpcplat-fault-pwned"
HOSTILE = [
    "",
    " ",
    "a b",
    "'",
    '"',
    "`touch /tmp/hpcplat-fault-pwned`",
    "$(touch /tmp/hpcplat-fault-pwned)",
    "; touch /tmp/hpcplat-fault-pwned",
    "\n",
    "line1\nline2",
    "#SBATCH --wrap=touch",
    "\\",
    "-",
    "-x",
    "%j%x%A",
    "{x}",
    "\t",
    "é",
    "\U0001f4a5",
    "\x1b[31mred",
    "\r",
    "a" * 5000,
    "../../etc/passwd",
    "=",
    "@",
    "*",
    # Numbers that overflow, digits of other scripts, trailing newlines (a `$` in a pattern lets
    # them through), non-finite floats.
    "9" * 300,
    "١٢",
    "²",
    "12\n",
    "nan",
    "-inf",
    "1e999",
]
KNOWN_OPTIONS = {
    "file", "name", "nodes", "tasks-per-node", "gpus-per-node", "cpus-per-task", "mem", "time", "tier",
    "account", "partition", "module", "venv", "conda", "container", "bind", "env", "dataset", "param",
    "workdir", "checkpoint-dir", "max-requeues", "signal-warn", "after", "tag", "dry-run", "no-validate",
    "json", "help",
}  # fmt: skip

text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=30)
hostile = st.sampled_from(HOSTILE) | text


def _fails(parse: Any) -> Any:
    def check(value: str) -> bool:
        try:
            parse(value)
        except ValueError:
            return True
        return False

    return check


def _none_of(*names: str) -> Any:
    return lambda value: value.strip() not in {*names, ""}


def _not_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return True
    return False


# Options that must each be refused, whatever comes with them.
invalid_option = st.one_of(
    st.tuples(st.just("--nodes"), hostile.filter(_not_int) | st.integers(-5, 0).map(str)),
    st.tuples(st.just("--gpus-per-node"), st.integers(5, 10**6).map(str) | st.integers(-9, -1).map(str)),
    st.tuples(st.just("--cpus-per-task"), st.integers(100, 10**6).map(str)),
    st.tuples(st.just("--time"), hostile.filter(_fails(parse_time_minutes)) | st.sampled_from(["3d", "99h"])),
    st.tuples(st.just("--mem"), hostile.filter(_fails(parse_memory_mb)) | st.sampled_from(["999G", "1T"])),
    st.tuples(st.just("--tier"), hostile.filter(_none_of("urgent", "normal", "preemptible"))),
    st.tuples(st.just("--partition"), hostile.filter(_none_of("gpu", "debug"))),
    st.tuples(st.just("--account"), hostile.filter(_none_of("vision", "nlp", "root"))),
    st.tuples(st.just("--param"), hostile.filter(lambda s: "=" not in s)),
    st.tuples(st.just("--env"), hostile.filter(lambda s: "=" not in s) | hostile.map("SLURM_X={}".format)),
    st.tuples(st.just("--dataset"), hostile.map(lambda s: f"nosuch-{s}@1")),
    st.tuples(st.just("--max-requeues"), st.integers(-100, -1).map(str) | hostile.filter(_not_int)),
    st.tuples(st.just("--signal-warn"), st.integers(-100, -1).map(str)),
    st.tuples(st.just("--after"), hostile.filter(lambda s: not (s.isascii() and s.isdigit()))),
    st.tuples(st.just("--time"), st.integers(10**6, 10**400).map(str)),
    st.tuples(st.just("--mem"), st.integers(10**13, 10**400).map("{}T".format)),
    st.tuples(st.just("--param"), st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999"]).map("K={}".format)),
    st.tuples(st.just("--env"), hostile.map("FOO{}\n=x".format)),
    st.tuples(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
        .filter(lambda s: s.strip("-") and s not in KNOWN_OPTIONS)
        .map(lambda s: f"--{s}"),
        hostile,
    ),
)  # fmt: skip
# Options whose values are free text: hostile strings here may be accepted or refused.
free_option = st.tuples(
    st.sampled_from(
        ["--name", "--tag", "--module", "--venv", "--container", "--workdir", "--checkpoint-dir"]
    ),
    hostile,
) | st.tuples(st.sampled_from(["--param", "--env"]), hostile.map(lambda value: f"K={value}"))


@st.composite
def submit_args(draw: st.DrawFn) -> list[str]:
    pairs = [*draw(st.lists(free_option, max_size=4)), draw(invalid_option)]
    pairs += draw(st.lists(invalid_option, max_size=2))
    order = draw(st.permutations(pairs))
    command = draw(st.lists(hostile, min_size=0, max_size=3))
    argv = [token for pair in order for token in pair]
    return ["submit", *argv, "--", "true", *command]


scalar = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | hostile
structure = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile, inner, max_size=3),
    max_leaves=8,
)
SPEC_KEYS = [
    "name", "command", "resources", "tier", "account", "partition", "environment", "datasets",
    "params", "workdir", "checkpoint_dir", "max_requeues", "signal_warn_s", "depends_on", "tags",
]  # fmt: skip


@st.composite
def spec_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, content): garbage, or a YAML/TOML document with wrong types and an unknown key."""
    kind = draw(
        st.sampled_from(["yaml-garbage", "toml-garbage", "bytes", "yaml-typed", "toml-typed", "yaml-special"])
    )
    if kind == "yaml-garbage":
        return "spec.yaml", draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "toml-garbage":
        return "spec.toml", draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(st.sampled_from(["spec.yaml", "spec.toml", "spec.yml"])), draw(st.binary(max_size=200))
    data = {
        key: draw(structure) for key in draw(st.lists(st.sampled_from(SPEC_KEYS), unique=True, max_size=6))
    }
    data["bogus_" + draw(st.text(alphabet="abcxyz", min_size=1, max_size=5))] = draw(structure)
    if kind == "yaml-typed":
        return "spec.yaml", yaml.safe_dump(data, allow_unicode=True).encode()
    if kind == "toml-typed":
        plain = {
            k: v if isinstance(v, (str, int)) and not isinstance(v, bool) else str(v) for k, v in data.items()
        }
        lines = [f"{json.dumps(str(k))} = {json.dumps(v)}" for k, v in plain.items()]
        return "spec.toml", "\n".join(lines).encode()
    special = draw(
        st.sampled_from(
            [
                "a: &a [1, 2]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\nbogus: [*c, *c, *c]\n",
                "name: x\nname: y\ncommand: true\nbogus: 1\n",
                "command: true\nresources:\n\tnodes: 2\n",
                "command: !!python/object/apply:os.system ['touch /tmp/hpcplat-fault-pwned']\n",
                "command: [true\nresources: {nodes: 1\n",
                'command: "a\\0b"\nname: "x\\0y"\nbogus: 1\n',
                "--- \n- not\n- a\n- mapping\n",
                "command: true\nresources: {nodes: 99999999999999999999999}\n",
                "command: true\nresources: {time: 1e400, memory: -1}\n",
                'command: ["true"]\nresources: {nodes: "--1", gpus_per_node: "²"}\n',
                'command: ["true"]\nbogus: &x [*x]\n',
                'command: ["true"]\nbogus: &x {k: *x}\n',
                'command: ["true"]\nparams: {lr: .nan, big: "' + "x" * 100_000 + '"}\n',
                'command: ["true"]\ndepends_on: ["12\\n", "١٢"]\n',
            ]
        )
    )
    return "spec.yaml", special.encode()


def could_be_valid(content: bytes) -> bool:
    """Random text that happens to parse as a mapping of known spec fields (``{}``, say) is a valid
    spec with ``-- true``: not hostile input."""
    import tomllib

    for parse in (yaml.safe_load, tomllib.loads):
        try:
            data = parse(content.decode())
        except (ValueError, yaml.YAMLError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(data, dict) and set(map(str, data)) <= set(SPEC_KEYS):
            return True
    return False


REFERENCE_COMMANDS = [
    "show", "logs", "cancel", "run show", "rerun", "template render", "template show", "data show",
    "sweep status", "sweep results", "runs --status", "runs --limit", "jobs --history",
]  # fmt: skip


def _not_a_number_or_option(value: str) -> bool:
    """Never a job id (no digit: nothing real can be cancelled) nor an option."""
    return not any(c.isdigit() for c in value) and value.strip() not in {"", "-", "--"} and value[:1] != "-"


class _Entry(click.Command):
    """``hpcplat ARGS`` through ``hpcplat.cli.main.main``, as the installed script runs it."""

    def __init__(self) -> None:
        super().__init__("hpcplat")

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        code = hpcplat_main(list(args or ()))
        raise SystemExit(code if isinstance(code, int) else 0)


class Battery:
    def __init__(self, h: Harness, trial: Trial, env: dict[str, str | None]) -> None:
        self.h = h
        self.trial = trial
        self.env = env
        self.tried: set[str] = set()
        self.failed: set[str] = set()

    def invoke(self, args: list[str]) -> tuple[int, str]:
        result = CliRunner().invoke(_Entry(), args, env=self.env, catch_exceptions=True)
        if not isinstance(result.exception, (SystemExit, type(None))):
            detail = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
            exc = result.exception
            raise AssertionError(
                f"hpcplat {shown(args)} raised {type(exc).__name__}: {str(exc)[:200]}\n{detail[-3000:]}"
            )
        return result.exit_code, result.output

    def expect_refusal(self, args: list[str], *, names: str | None = None) -> None:
        key = repr(args)
        self.tried.add(key)
        self.failed.add(key)
        code, output = self.invoke(args)
        assert code == 2, f"hpcplat {shown(args)} exited {code}:\n{output[-2000:]}"
        assert "Traceback" not in output, output
        assert "error:" in output.lower(), output
        if names is not None:
            assert names in output, f"the message does not name {names!r}:\n{output}"
        assert not self.h.catalog().list_runs(limit=None), f"hpcplat {shown(args)} recorded a run"
        assert not os.path.exists(PWNED), f"hpcplat {shown(args)} ran a shell command from its input"
        self.failed.discard(key)


def shown(args: list[str]) -> str:
    text = repr(args)
    return text if len(text) <= 400 else text[:400] + f"... ({len(text)} characters)"


def jobs_from(h: Harness) -> list[str]:
    out = h.slurm("squeue", "-h", "--states=all", "-o", "%i|%Z", check=False).stdout
    return [line for line in out.splitlines() if line.endswith(f"|{h.tmp}") or f"|{h.tmp}/" in line]


@pytest.mark.parametrize("rep", range(REPEATS))
def test_hostile_cli_and_spec_files_are_refused_cleanly(
    rep: int, sandbox: Sandbox, tmp_path: Path, fault_report: FaultReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with fault_report.trial("hostile-input", rep) as trial, harness(sandbox, tmp_path) as h:
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("HPCPLAT_")}
        env.update(h.env)
        env.update(
            HPCPLAT_CONFIG=str(site_file(h)),
            XDG_CACHE_HOME=str(tmp_path / "cache"),
            XDG_CONFIG_HOME=str(tmp_path / "xdg"),
            COLUMNS="120",
        )
        h.catalog()  # an empty catalog: any run recorded by a refused input is found
        before = jobs_from(h)
        battery = Battery(h, trial, env)
        common = settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[
                HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much
            ],
        )  # fmt: skip

        @common
        @seed(7919 + rep)
        @given(submit_args())
        def flags(args: list[str]) -> None:
            battery.expect_refusal(args)

        @common
        @seed(104729 + rep)
        @given(spec_files(), st.booleans())
        def files(named: tuple[str, bytes], with_command: bool) -> None:
            name, content = named
            assume(not could_be_valid(content))
            path = tmp_path / "specs" / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(content)
            battery.expect_refusal(
                ["submit", "-f", str(path), *(["--", "true"] if with_command else [])], names=name
            )

        @common
        @seed(15485863 + rep)
        @given(st.sampled_from(REFERENCE_COMMANDS), hostile.filter(_not_a_number_or_option))
        def references(command: str, value: str) -> None:
            battery.expect_refusal([*command.split(), value])

        def known_cases() -> None:
            """Inputs that once gave a traceback (kept as regression checks, outside hypothesis so
            that its generation still runs while one of them fails)."""
            control = tmp_path / "control.yaml"
            control.write_bytes(b"\x1f")  # a control character: PyYAML's reader refuses it
            cases = [["submit", "-f", str(control)], ["sweep", "status", "a" * 5000]]
            errors = []
            for args in cases:
                try:
                    battery.expect_refusal(args)
                except AssertionError as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]

        def installed_program() -> None:
            for argv, expected in (
                (["submit", "--nodes", "many", "--", "true"], "--nodes"),
                (["submit", "-f", str(tmp_path / "nosuch.yaml")], "nosuch.yaml"),
                (["sweep", "submit", "--grid", "lr", "--", "true"], "lr"),
                (["submitt", "--", "true"], "submitt"),
            ):
                battery.tried.add(repr(argv))
                battery.failed.add(repr(argv))
                done = subprocess.run(
                    [str(Path(sys.executable).parent / "hpcplat"), *argv],
                    env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert done.returncode == 2 and "Traceback" not in done.stderr, (
                    argv,
                    done.returncode,
                    done.stderr,
                )
                assert expected in done.stderr, (argv, done.stderr)
                battery.failed.discard(repr(argv))

        # Each battery runs even when an earlier one found a bug; the first failure is raised.
        failures: list[BaseException] = []
        for run_battery in (known_cases, flags, files, references, installed_program):
            try:
                run_battery()
            except Exception as exc:
                failures.append(exc)
        after = jobs_from(h)
        trial.count(
            "hostile inputs refused cleanly",
            expected=len(battery.tried),
            found=len(battery.tried - battery.failed),
        )
        trial.count(
            "jobs queued by refused inputs", expected=0, found=0, duplicated=len(set(after) - set(before))
        )
        assert set(after) == set(before), f"jobs queued from refused input: {set(after) - set(before)}"
        if failures:
            raise failures[0]
