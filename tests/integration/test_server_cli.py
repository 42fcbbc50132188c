"""The CLI as a client of the sandbox's hpcplat server (started by ``hpcplat sandbox up``).

``hpcplat runs``, ``run show`` and ``wait`` read from the server when the site file has a
``[server]`` section; the server's live loop keeps the catalog in step with Slurm, so a finished
job shows COMPLETED within seconds without anyone running ``hpcplat reconcile``, with the times
accounting reports. Output is the same as reading the catalog directly; a server that does not
answer is said in one line on stderr and the catalog is read directly.

These tests use the sandbox's own site file (its catalog and server) and cancel what they submit.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hpcplat.runner import run
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState

pytestmark = pytest.mark.sandbox

PROBE = """
import json, sys
from hpcplat.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "sqlmodel"})
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    env = dict(sandbox.env())
    env.pop("HPCPLAT_CATALOG_URL", None)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


@pytest.fixture
def slurm(env: dict[str, str]) -> Iterator[CliBackend]:
    client = CliBackend(env=env)
    yield client


def hpcplat(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, list[str], str]:
    """``hpcplat ARGS`` in a fresh interpreter: exit code, stdout, heavy modules imported, stderr."""
    proc = run([sys.executable, "-c", PROBE, *args], env=env, timeout=timeout, check=False)
    *rest, last = proc.stderr.splitlines() or ["{}"]
    probe = json.loads(last)
    return int(probe.get("code") or 0), proc.stdout, probe.get("heavy", []), "\n".join(rest)


def catalog_url(env: dict[str, str]) -> str:
    import tomllib

    url: str = tomllib.loads(Path(env["HPCPLAT_CONFIG"]).read_text())["catalog"]["url"]
    return url


def submit(env: dict[str, str], *command: str) -> dict[str, str]:
    name = f"srv-{uuid.uuid4().hex[:6]}"
    code, out, _, err = hpcplat(env, "submit", "--json", "--name", name, "--time", "5", "--", *command)
    assert code == 0, err
    data: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return data


def _utc(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


def test_a_finished_job_shows_completed_within_seconds_with_sacct_times(
    env: dict[str, str], slurm: CliBackend
) -> None:
    job = submit(env, "sleep", "2")
    try:
        deadline = time.monotonic() + 120
        while True:  # Slurm's own word that the job ended; no hpcplat command runs meanwhile
            [info] = slurm.history([job["job_id"]]) or [None]
            if info is not None and info.state.is_terminal and info.end_time is not None:
                break
            assert time.monotonic() < deadline, "the job did not end in 120 s"
            time.sleep(0.5)
        assert info.state is JobState.COMPLETED
        while True:
            code, out, heavy, err = hpcplat(env, "runs", "--json", "--limit", "20")
            assert code == 0 and not heavy, (err, heavy)
            [row] = [r for r in json.loads(out) if r["id"] == job["run_id"]]
            if row["status"] == "COMPLETED":
                break
            lag = (datetime.now(UTC) - info.end_time.astimezone(UTC)).total_seconds()
            assert lag < 10, f"still {row['status']} {lag:.1f} s after sacct's End"
            time.sleep(0.3)
        code, out, heavy, err = hpcplat(env, "run", "show", job["run_id"], "--json")
        assert code == 0 and not heavy, (err, heavy)
        details = json.loads(out)
        states = {
            e["reason"].split(" -> ", 1)[1].split(" ", 1)[0]: _utc(e["at"])
            for e in details["events"]
            if e["kind"] == "STATE"
        }
        assert states["RUNNING"] == info.start_time.astimezone(UTC)  # type: ignore[union-attr]
        assert states["COMPLETED"] == info.end_time.astimezone(UTC)
        [attempt] = details["attempts"]
        assert attempt["state"] == "COMPLETED"
        assert _utc(attempt["start"]) == info.start_time.astimezone(UTC)  # type: ignore[union-attr]
        assert _utc(attempt["end"]) == info.end_time.astimezone(UTC)
    finally:
        slurm.cancel([job["job_id"]])


def test_runs_and_show_through_the_server_match_the_direct_path(env: dict[str, str]) -> None:
    url = catalog_url(env)
    for args in (["runs", "--limit", "30"], ["runs", "--json", "--limit", "30"]):
        code, via_server, heavy, err = hpcplat(env, *args)
        assert code == 0 and heavy == [] and "warning" not in err, (err, heavy)
        code, direct, _, _ = hpcplat(env, *args, "--catalog", url)
        assert code == 0 and via_server == direct
    runs = json.loads(hpcplat(env, "runs", "--json", "--limit", "5")[1])
    if not runs:
        pytest.skip("the sandbox catalog has no runs yet")
    for args in ([], ["--json"], ["--script"]):
        code, via_server, heavy, err = hpcplat(env, "run", "show", runs[0]["id"][:8], *args)
        assert code == 0 and heavy == [], (err, heavy)
        code, direct, _, _ = hpcplat(env, "run", "show", runs[0]["id"][:8], *args, "--catalog", url)
        assert code == 0 and via_server == direct


def test_a_bad_reference_is_exit_2_through_the_server(env: dict[str, str]) -> None:
    code, _, heavy, err = hpcplat(env, "run", "show", "zzzzzzzz")
    assert code == 2 and heavy == []
    assert "no run 'zzzzzzzz' in the catalog" in err and "Traceback" not in err


def test_a_server_that_does_not_answer_is_one_line_and_the_catalog_is_read(
    env: dict[str, str], tmp_path: Path
) -> None:
    text = Path(env["HPCPLAT_CONFIG"]).read_text()
    lines = [
        'socket = "/nonexistent/hpcplat.sock"' if ln.startswith("socket =") else ln
        for ln in text.splitlines()
        if not ln.startswith(("port =", "host ="))
    ]
    site = tmp_path / "down.toml"
    site.write_text("\n".join(lines) + "\n")
    down = {**env, "HPCPLAT_CONFIG": str(site)}
    code, out, _, err = hpcplat(down, "runs", "--limit", "5")
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.strip()]
    assert len(warnings) == 1 and "reading the catalog directly" in warnings[0], err
    assert out == hpcplat(env, "runs", "--limit", "5", "--catalog", catalog_url(env))[1]


def test_wait_follows_the_server_and_reports_as_slurm_would(env: dict[str, str], slurm: CliBackend) -> None:
    ok, bad = submit(env, "sleep", "1"), submit(env, "bash", "-c", "exit 3")
    try:
        code, out, _, err = hpcplat(env, "wait", ok["job_id"], timeout=120)
        assert code == 0 and f"{ok['job_id']} COMPLETED" in out, err
        code, out, _, err = hpcplat(env, "wait", bad["job_id"], timeout=120)
        assert code == 1 and f"{bad['job_id']} FAILED (exit 3)" in out, err
        log = Path(env["HPCPLAT_SANDBOX_DIR"], "log", "server.log").read_text()
        assert f"GET /api/v1/jobs?ids={bad['job_id']} " in log  # polled the server, not Slurm
    finally:
        slurm.cancel([ok["job_id"], bad["job_id"]])
