"""The catalog commands (runs, run show/plot, runs compare, rerun, reconcile, data) on a real SQLite
catalog, plus the plot and metric-agreement helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcplat.catalog import Catalog, RunIntent
from hpcplat.catalog import spool as spool_format
from hpcplat.catalog.agreement import agreement
from hpcplat.cli.main import main
from hpcplat.plot import text_plot


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"sqlite:///{tmp_path / 'catalog.db'}"
    monkeypatch.setenv("HPCPLAT_CATALOG_URL", value)
    return value


@pytest.fixture
def catalog(url: str) -> Iterator[Catalog]:
    with Catalog.open(url) as cat:
        yield cat


@dataclass
class Outcome:
    exit_code: int
    output: str
    """stdout and stderr, as a user sees them."""


def invoke(*args: str) -> Outcome:
    """Run ``hpcplat ARGS`` through its real entry point (errors become messages and exit codes)."""
    with CliRunner().isolation() as (_out, _err, mixed):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return Outcome(code, mixed.getvalue().decode())


def _run(catalog: Catalog, name: str, lr: float, commit: str = "c" * 40, **kw: object) -> str:
    run_id = catalog.record_intent(
        RunIntent(
            name=name,
            owner="alice",
            team="vision",
            tags=["sweep"],
            spec={"command": ["python", "train.py"]},
            params={"lr": lr},
            provenance={
                "code": {"vcs": "git", "root": "/nowhere", "commit": commit, "branch": "main"},
                "env": {},
            },
            **kw,  # type: ignore[arg-type]
        )
    )
    catalog.log_metrics(run_id, [(0, s, "loss", 1.0 / (s + 1) * lr, float(s)) for s in range(50)])
    return run_id


def test_cli_without_catalog_never_imports_sqlalchemy() -> None:
    code = (
        "import sys\n"
        "from hpcplat.cli.main import cli\n"
        "helps = (['--help'], ['runs', '--help'], ['run', 'show', '--help'], ['data', '--help'],\n"
        "         ['db', '--help'], ['rerun', '--help'], ['reconcile', '--help'])\n"
        "for args in helps:\n"
        "    try:\n"
        "        cli.main(args=args, prog_name='hpcplat', standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "names = ('sqlalchemy', 'sqlmodel', 'alembic', 'pydantic', 'matplotlib')\n"
        "heavy = sorted(m for m in names if m in sys.modules)\n"
        "print(','.join(heavy) or 'none')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "none"


def test_runs_list_and_filters(catalog: Catalog) -> None:
    a = _run(catalog, "alpha", 0.1)
    b = _run(catalog, "beta", 0.2)
    catalog.confirm_submission(b, "31337")
    result = invoke("runs")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["RUN", "NAME", "OWNER", "TEAM", "STATUS", "JOB", "CREATED", "TAGS"]
    assert lines[1].startswith(b[:8]) and "31337" in lines[1] and "QUEUED" in lines[1]
    assert lines[2].startswith(a[:8]) and "SUBMITTING" in lines[2]
    data = json.loads(invoke("runs", "--json", "--status", "queued").output)
    assert [r["id"] for r in data] == [b]
    assert invoke("runs", "--user", "bob").output.strip() == "no runs match"
    bad = invoke("runs", "--status", "sleeping")
    assert bad.exit_code == 2 and "unknown run status 'sleeping'" in bad.output


def test_runs_on_sqlite_needs_no_sqlalchemy(catalog: Catalog) -> None:
    """The list of an existing SQLite catalog is read with the stdlib, and agrees with the general path."""
    from hpcplat.catalog.listing import list_runs_at

    for i in range(3):
        _run(catalog, f"r{i}", 0.1 * i)
    assert list_runs_at(catalog.url, tag="sweep") == catalog.list_runs(tag="sweep")
    code = (
        "import sys\n"
        "from hpcplat.cli.main import main\n"
        "try:\n"
        "    main(['runs', '--limit', '2'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    env = {**os.environ, "HPCPLAT_CATALOG_URL": catalog.url}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "False" and lines[1].split()[1] == "r2"


def test_run_show(catalog: Catalog) -> None:
    run_id = _run(catalog, "alpha", 0.1)
    catalog.confirm_submission(run_id, "99")
    text = invoke("run", "show", run_id[:8]).output
    for expected in (
        "run " + run_id,
        "status   QUEUED",
        "/nowhere @ " + "c" * 40,
        "lr = 0.1",
        "loss = ",
        "at step 49",
    ):
        assert expected in text
    assert "GPU-hours  allocated 0.00" in text and "SUBMITTED" in text
    data = json.loads(invoke("run", "show", run_id, "--json").output)
    assert data["params"] == {"lr": 0.1} and data["attempts"][0]["job_id"] == "99"
    missing = invoke("run", "show", "ffffffff")
    assert missing.exit_code == 2 and "no run 'ffffffff'" in missing.output


def test_run_show_wildcards_match_nothing(catalog: Catalog) -> None:
    _run(catalog, "alpha", 0.1)
    for ref in ("%%%%", "____"):
        shown = invoke("run", "show", ref)
        assert shown.exit_code == 2 and f"no run '{ref}'" in shown.output


def test_run_plot(catalog: Catalog, tmp_path: Path) -> None:
    run_id = _run(catalog, "alpha", 0.1)
    out = tmp_path / "loss.png"
    result = invoke("run", "plot", run_id[:8], "--metric", "loss", "--out", str(out), "--height", "8")
    assert result.exit_code == 0
    assert "*" in result.output and f"PNG: {out}" in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unknown = invoke("run", "plot", run_id[:8], "--metric", "acc", "--no-png")
    assert unknown.exit_code == 2 and "no metric 'acc' (metrics: loss)" in unknown.output


def test_runs_compare_highlights(catalog: Catalog) -> None:
    a = _run(catalog, "alpha", 0.1)
    b = _run(catalog, "beta", 0.2)
    result = invoke("runs", "compare", a[:8], b[:8])
    lines = result.output.splitlines()
    lr = next(line for line in lines if " lr " in f" {line} ")
    assert lr.startswith("*") and "0.1" in lr and "0.2" in lr
    commit = next(
        line for line in invoke("runs", "compare", a, b, "--all").output.splitlines() if "commit" in line
    )
    assert not commit.startswith("*")
    one = invoke("runs", "compare", a)
    assert one.exit_code == 2 and "at least two runs" in one.output


def test_rerun_refuses_on_drift(catalog: Catalog) -> None:
    run_id = _run(catalog, "alpha", 0.1)
    result = invoke("rerun", run_id[:8])
    assert result.exit_code == 2
    assert "cannot be rerun as recorded" in result.output
    assert "code repository: recorded /nowhere, now missing on this machine" in result.output
    assert "--allow-drift" in result.output


def test_rerun_of_a_plain_sbatch_run(catalog: Catalog) -> None:
    from hpcplat.catalog.selfregister import JobEnvironment

    run_id, _ = catalog.register_job(JobEnvironment(job_id="5"))
    result = invoke("rerun", run_id[:8])
    assert result.exit_code == 2 and "started with plain sbatch" in result.output


def test_reconcile_ingests_a_spool(catalog: Catalog, tmp_path: Path) -> None:
    run_id = _run(catalog, "alpha", 0.1)
    path = spool_format.spool_path(tmp_path, run_id)
    spool_format.append(path, [{"t": "m", "r": run_id, "a": 0, "pts": [[100, "acc", 0.5, 1.0]]}])
    result = invoke("reconcile", "--spool", str(path))
    assert result.exit_code == 0 and "1 spooled metric points ingested" in result.output
    assert catalog.metric_series(run_id, "acc") == [(100, 0.5)]


def test_data_commands(url: str, tmp_path: Path) -> None:
    data = tmp_path / "digits"
    data.mkdir()
    (data / "x.npy").write_bytes(b"1234")
    first = invoke("data", "register", "digits", str(data))
    assert first.output.startswith("registered digits@1 (1 files, 4 B")
    assert "nothing registered" in invoke("data", "register", "digits", str(data)).output
    (data / "y.npy").write_bytes(b"5")
    assert invoke("data", "register", "digits", str(data)).output.startswith("registered digits@2")
    listing = invoke("data", "ls").output.splitlines()
    assert listing[1].split()[:3] == ["digits", "2", "2"]
    shown = invoke("data", "show", "digits@1").output
    assert "dataset digits@1" in shown and "x.npy" in shown and "y.npy" not in shown.split("versions")[0]
    verified = invoke("data", "show", "digits", "--verify").output
    assert "unchanged since registration" in verified
    (data / "x.npy").write_bytes(b"12345")
    changed = invoke("data", "show", "digits", "--verify")
    assert changed.exit_code == 2 and "changed since it was registered: changed: x.npy" in changed.output
    bad = invoke("data", "show", "digits@9")
    assert bad.exit_code == 2 and "has no version 9 (versions: 1, 2)" in bad.output


# -- helpers ----------------------------------------------------------------------------------------


def test_text_plot_shapes() -> None:
    rising = text_plot([(x, float(x)) for x in range(100)], width=20, height=5)
    rows = rising.splitlines()
    assert len(rows) == 7
    assert rows[0].rstrip().endswith("*") and rows[4].split("|", 1)[1].startswith("*")
    assert "99" in rows[-1] and rows[0].lstrip().startswith("99")
    flat = text_plot([(0, 2.0), (1, 2.0)], width=10, height=3)
    assert flat.count("*") == 2
    assert text_plot([]) == "(no points)"


def test_metric_agreement() -> None:
    original = {"loss": [(0, 1.0), (1, 0.5)], "acc": [(0, 0.1)]}
    [acc, loss] = agreement(original, {"loss": [(0, 1.0), (1, 0.5)], "acc": [(0, 0.1)]})
    assert acc.bit_exact and loss.bit_exact and str(loss) == "loss: bit-exact over 2 steps"
    [_, loss] = agreement(original, {"loss": [(0, 1.0), (1, 0.5000001)], "acc": [(0, 0.1)]})
    assert not loss.bit_exact and loss.max_abs_diff == pytest.approx(1e-7)
    [_, loss] = agreement(original, {"loss": [(0, 1.0)], "acc": [(0, 0.1)]})
    assert not loss.bit_exact and loss.only_original == 1
