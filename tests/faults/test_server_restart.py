"""The hpcplat server is killed (SIGKILL) while jobs run and log metrics through ``hpcplat.track``,
and the jobs end while it is down; once it is started again its live loop alone (no ``reconcile``
command) brings the runs to COMPLETED, and nothing is lost or counted twice: every metric point
once, one attempt per job with accounting's times, each state change recorded once.

The server is this module's own (a private socket and catalog), so killing it disturbs nobody.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hpcplat.sandbox import Sandbox
from hpcplat.server.client import Client, ServerError
from tests.faults.helpers import (
    REPEATS,
    Events,
    FaultReport,
    Harness,
    _toml,
    fault_report,
    harness,
    site_file,
    wait_for,
    workload_command,
)
from tests.faults.workload import reference

__all__ = ["fault_report"]

pytestmark = pytest.mark.sandbox

STEPS = 40
JOBS = 2


class PrivateServer:
    """``hpcplat server`` as users start it, on a socket under the test's directory."""

    def __init__(self, h: Harness) -> None:
        data = tomllib.loads(site_file(h).read_text())
        self.socket = h.tmp / "run" / "server.sock"
        data["server"] = {"socket": str(self.socket), "admins": ["root"], "reconcile_interval_s": 1.0}
        lines: list[str] = []
        for name, values in data.items():
            if name == "tiers":
                for tier, table in values.items():
                    lines += [f"[tiers.{tier}]", *(f"{k} = {_toml(v)}" for k, v in table.items()), ""]
                continue
            lines += [f"[{name}]", *(f"{k} = {_toml(v)}" for k, v in values.items()), ""]
        self.site = h.tmp / "server-site.toml"
        self.site.write_text("\n".join(lines))
        self.log = h.tmp / "server.log"
        self.env = {**h.env, "HPCPLAT_CONFIG": str(self.site)}
        self.env.pop("HPCPLAT_CATALOG_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Client(socket=str(self.socket), use_munge=False, timeout=10)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpcplat", "server", f"--log-file={self.log}"], env=self.env
        )

        def answers() -> bool:
            try:
                self.client.whoami()
            except ServerError:
                return False
            return True

        wait_for("the server to answer", answers, timeout=60, every=0.2)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def status(self, run_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.get(f"/api/v1/runs/{run_id}/details")
        return answer


@pytest.fixture
def server_harness(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[Harness, PrivateServer]]:
    with harness(sandbox, tmp_path) as h:
        server = PrivateServer(h)
        try:
            yield h, server
        finally:
            server.stop()


def _utc(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize("rep", range(REPEATS))
def test_server_killed_while_jobs_log_loses_and_doubles_nothing(
    rep: int, server_harness: tuple[Harness, PrivateServer], fault_report: FaultReport
) -> None:
    h, server = server_harness
    with fault_report.trial("server-restart", rep) as trial:
        h.catalog()  # create the private catalog before the server opens it
        server.start()
        jobs = []
        for i in range(JOBS):
            events = Events(h.tmp / f"events-{i}.jsonl")
            spec = h.spec(workload_command(steps=STEPS, events=events.path, step_sleep=0.15), name=f"srv{i}")
            jobs.append((h.submit(spec), events))
        for sub, events in jobs:
            events.wait("checkpoint", step=9, timeout=120)
            wait_for(
                "the live loop to see the job running",
                lambda s=sub: server.status(s.run_id)["run"]["status"] == "RUNNING",
                timeout=30,
            )
        server.kill()
        for sub, _ in jobs:  # the jobs end while nobody reconciles
            assert h.final_state(sub.job_id) == "COMPLETED", h.output(sub.job_id)
        server.start()
        started = time.monotonic()
        wait_for(
            "the restarted server to show the runs COMPLETED",
            lambda: all(server.status(s.run_id)["run"]["status"] == "COMPLETED" for s, _ in jobs),
            timeout=30,
            every=0.5,
        )
        trial.note(f"runs COMPLETED {time.monotonic() - started:.0f} s after the restart")
        time.sleep(2.5)  # two more cycles of the live loop: they must add nothing
        expected = reference(STEPS)
        for sub, _ in jobs:
            [accounting] = h.client.history([sub.job_id])
            details = server.status(sub.run_id)
            series = h.catalog().metric_series(sub.run_id, "x")
            trial.count(
                "metric points",
                expected=STEPS,
                found=sum(1 for step, value in series if 0 <= step < STEPS and value == expected[step]),
                duplicated=len(series) - len({s for s, _ in series}),
            )
            states = [e["reason"] for e in details["events"] if e["kind"] == "STATE"]
            assert any("COMPLETED" in s for s in states), states
            trial.count(
                "state changes",
                expected=len(set(states)),
                found=len(set(states)),
                duplicated=len(states) - len(set(states)),
            )
            attempts = details["attempts"]
            trial.count(
                "attempts", expected=1, found=min(1, len(attempts)), duplicated=max(0, len(attempts) - 1)
            )
            assert series == list(enumerate(expected)), h.output(sub.job_id)
            assert len(states) == len(set(states)), json.dumps(details["events"], indent=1)
            [attempt] = attempts
            assert attempt["state"] == "COMPLETED"
            assert _utc(attempt["start"]) == accounting.start_time.astimezone(UTC)  # type: ignore[union-attr]
            assert _utc(attempt["end"]) == accounting.end_time.astimezone(UTC)  # type: ignore[union-attr]
