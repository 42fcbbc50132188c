"""Hostile strings in names, params, paths and arguments cannot inject shell.

Every string a user controls lands in the script either shell-quoted (bash reads it back as one
word) or, for ``#SBATCH`` lines, escaped for sbatch's own parser with newlines refused. These tests
render with hostile values, check bash accepts the script, and run a fragment of it to show each
value arrives byte for byte — and that nothing it contains was executed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hpcplat.siteconfig import current_user, from_data
from hpcplat.spec import Environment, JobSpec, SpecError
from hpcplat.submission import library
from hpcplat.submission.render import render

HOSTILE = [
    "plain words with spaces",
    'it\'s "quoted" both ways',
    "semi; touch PWNED_SEMI",
    "$(touch PWNED_SUBST)",
    "`touch PWNED_TICK`",
    "${HOME} $PATH $((1+1))",
    "new\nline; touch PWNED_NL",
    "back\\slash \\\" and \\' mixes",
    "glob * ? [a-z] ~ {a,b}",
    "redirect > /tmp/PWNED_REDIRECT < /dev/null | cat &",
    "#comment-looking",
    "-flag-looking --uid=0",
    "tab\there",
    "unicode ✓ ünïcödé",
    "",
]
NO_NEWLINE = [h for h in HOSTILE if "\n" not in h and "\t" not in h and h]


@pytest.fixture(params=range(len(HOSTILE)), ids=lambda i: f"hostile{i}")
def hostile(request: pytest.FixtureRequest) -> str:
    return HOSTILE[request.param]


def config(root: Path) -> object:
    return from_data(
        {
            "defaults": {"account": "vision", "tier": "normal"},
            "catalog": {"url": "sqlite:////tmp/x.db"},
            "tiers": {"normal": {"partition": "gpu", "qos": "normal"}},
            "submission": {"job_root": str(root / "jobs dir; $(x)")},
        }
    )


def run_fragment(script: str, tmp_path: Path) -> dict[str, object]:
    """Run the script up to the srun line, then dump argv, cwd and environment as JSON."""
    head = script.split('\necho "hpcplat: run', 1)[0]
    dump = (
        f'\n{sys.executable} -c "import json,os,sys; '
        "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': dict(os.environ)}, sys.stdout)\" "
        '"${HPCPLAT_ARGV[@]}"\n'
    )
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "4242", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", "-c", head + dump],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def assert_nothing_ran(tmp_path: Path) -> None:
    leftovers = [p.name for p in tmp_path.rglob("PWNED*")] + [
        p for p in ["/tmp/PWNED_REDIRECT"] if os.path.exists(p)
    ]
    assert not leftovers, f"hostile text was executed: {leftovers}"


def test_hostile_values_arrive_intact(hostile: str, tmp_path: Path) -> None:
    workdir = tmp_path / ("work " + hostile.replace("/", "_").replace("\x00", ""))
    workdir.mkdir()
    argv = ("prog", hostile, f"--opt={hostile}", hostile * 2 or "x")
    spec = JobSpec(
        command=argv,
        name="hostile",
        params={"p": hostile, "n": 1},
        environment=Environment(vars={"USER_VALUE": hostile}),
        workdir=str(workdir),
        checkpoint_dir=str(tmp_path / ("ckpt " + hostile.replace("/", "_"))),
    )
    script = render(spec, config(tmp_path), run_id="r1", python=sys.executable)  # type: ignore[arg-type]
    check = subprocess.run(
        check=False, args=["bash", "-n"], input=script, capture_output=True, text=True, timeout=10
    )
    assert check.returncode == 0, check.stderr
    out = run_fragment(script, tmp_path)
    env = out["env"]
    assert isinstance(env, dict)
    assert out["argv"] == list(argv)
    assert out["cwd"] == str(workdir)
    assert env["USER_VALUE"] == hostile
    assert json.loads(env["HPCPLAT_PARAMS"]) == {"p": hostile, "n": 1}
    assert json.loads(Path(env["HPCPLAT_PARAMS_FILE"]).read_text()) == {"p": hostile, "n": 1}
    assert env["HPCPLAT_CHECKPOINT_DIR"] == str(tmp_path / ("ckpt " + hostile.replace("/", "_")))
    assert env["HPCPLAT_JOB_DIR"] == str(tmp_path / "jobs dir; $(x)" / current_user() / "4242")
    assert Path(env["HPCPLAT_CHECKPOINT_DIR"]).is_dir()
    assert_nothing_ran(tmp_path)


def test_hostile_modules_venv_and_container_stay_quoted(hostile: str, tmp_path: Path) -> None:
    if not hostile:
        pytest.skip("an empty module name is refused by the spec")
    if "\n" in hostile or "\t" in hostile:
        with pytest.raises(SpecError, match="control characters"):
            Environment(modules=(hostile,))
        return
    spec = JobSpec(
        command=("prog",),
        environment=Environment(
            modules=(hostile,),
            venv=f"/v/{hostile}",
            container=f"/img/{hostile}.sif",
            container_binds=(hostile,),
        ),
    )
    script = render(spec, config(tmp_path), run_id="r1", python=sys.executable)  # type: ignore[arg-type]
    assert (
        subprocess.run(
            check=False, args=["bash", "-n"], input=script, capture_output=True, text=True, timeout=10
        ).returncode
        == 0
    )
    # The value appears only inside single-quoted words (or bare when it has no special character).
    assert f"module load {shlex.quote(hostile)} ||" in script
    assert f"source {shlex.quote('/v/' + hostile)}/bin/activate" in script


def test_names_with_newlines_are_refused_before_rendering() -> None:
    with pytest.raises(SpecError, match=r"name: must not contain control characters"):
        JobSpec(command=("x",), name="ok\n#SBATCH --uid=0")
    with pytest.raises(SpecError, match=r"tags\[0\]"):
        JobSpec(command=("x",), tags=("a\nb",))


@pytest.mark.parametrize("name", NO_NEWLINE)
def test_hostile_job_name_is_one_sbatch_argument(name: str, tmp_path: Path) -> None:
    script = render(JobSpec(command=("x",), name=name), config(tmp_path), run_id="r", python="py")  # type: ignore[arg-type]
    job_lines = [line for line in script.splitlines() if line.startswith("#SBATCH --job-name=")]
    assert len(job_lines) == 1
    # The header comment keeps the name on one line too.
    assert all(
        not line.startswith("#SBATCH") or line.startswith("#SBATCH --") for line in script.splitlines()
    )


def test_hostile_template_values(hostile: str, tmp_path: Path) -> None:
    values = {
        "command": f"prog {shlex.quote(hostile)} x",
        "job_name": hostile.replace("\n", " ").replace("\t", " ") or "n",
        "workdir": str(tmp_path),
        "python": "/no/such/python",
    }
    if "\n" in hostile:
        with pytest.raises(Exception, match="control characters"):
            library.render("single-gpu", {**values, "job_name": hostile})
    script = library.render("single-gpu", values)
    assert (
        subprocess.run(
            check=False, args=["bash", "-n"], input=script, capture_output=True, text=True, timeout=10
        ).returncode
        == 0
    )
    head = script.split("\nsrun ", 1)[0]
    dump = (
        f'\n{sys.executable} -c "import json,sys; print(json.dumps(sys.argv[1:]))" "${{HPCPLAT_ARGV[@]}}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", head + dump],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": "7"},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["prog", hostile, "x"]
    assert_nothing_ran(tmp_path)
