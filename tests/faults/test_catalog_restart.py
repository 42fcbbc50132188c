"""The catalog's PostgreSQL restarts while jobs log metrics through ``hpcplat.track``: no point is
lost or duplicated once ``reconcile`` has ingested what the jobs spooled.

The server is this module's own (not the session's shared one), so stopping it disturbs nobody.
Trial 1 stops it with ``-m fast`` (clean shutdown), trial 2 with ``-m immediate`` (a crash).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcplat.catalog import RunStatus
from hpcplat.runner import run
from hpcplat.sandbox import Sandbox
from tests.faults.helpers import (
    REPEATS,
    Events,
    FaultReport,
    fault_report,
    harness,
    wait_for,
    workload_command,
)
from tests.faults.workload import reference
from tests.fixtures.postgres import PG_BIN, PostgresServer, _free_port

__all__ = ["fault_report"]

pytestmark = [pytest.mark.sandbox, pytest.mark.postgres]

STEPS = 60
JOBS = 2
MODES = ["fast", "immediate"]


class Server(PostgresServer):
    """A PostgreSQL server as a site would run its catalog: unlike the session fixture's (tuned
    for speed), a commit is durable once acknowledged (``synchronous_commit=on``), so a crash of
    the server cannot take back points the tracker was told were written."""

    OPTIONS = "-c fsync=on -c synchronous_commit=on -c max_connections=200"

    def stop_now(self, mode: str) -> None:
        run(
            self._argv(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"), timeout=60
        )

    def running(self) -> bool:
        status = run(
            self._argv(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "status"), timeout=30, check=False
        )
        return status.returncode == 0


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    if os.geteuid() != 0:
        pytest.skip("needs root (the sandbox's jobs run as root and the server runs as 'postgres')")
    directory = Path(tempfile.mkdtemp(prefix="hpcplat-fi-pg-"))
    pg = Server(directory=directory, port=_free_port(), as_user="postgres")
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(directory, ignore_errors=True)


def catalog_database(server: Server) -> str:
    from hpcplat.catalog import schema
    from hpcplat.catalog.engine import make_engine

    url = server.create_database()
    engine = make_engine(url)
    schema.upgrade(engine)
    engine.dispose()
    return url


@pytest.mark.parametrize("rep", range(REPEATS))
def test_catalog_restart_while_jobs_log_metrics_loses_nothing(
    rep: int, server: Server, sandbox: Sandbox, tmp_path: Path, fault_report: FaultReport
) -> None:
    mode = MODES[rep % len(MODES)]
    with (
        fault_report.trial("catalog-restart", rep) as trial,
        harness(sandbox, tmp_path, catalog_url=catalog_database(server)) as h,
    ):
        jobs = []
        for i in range(JOBS):
            events = Events(tmp_path / f"events-{i}.jsonl")
            spec = h.spec(workload_command(steps=STEPS, events=events.path, step_sleep=0.15), name=f"pg{i}")
            jobs.append((h.submit(spec), events))
        try:
            for _, events in jobs:
                events.wait("checkpoint", step=9, timeout=120)
            server.stop_now(mode)
            for _, events in jobs:
                events.wait("checkpoint", step=19, timeout=120)
        finally:
            if not server.running():
                server.start_again()
        for sub, _ in jobs:
            assert h.final_state(sub.job_id) == "COMPLETED", h.output(sub.job_id)

        def all_completed() -> bool:
            h.reconcile()
            return all(h.catalog().run(s.run_id).status is RunStatus.COMPLETED for s, _ in jobs)

        wait_for("the catalog to see the runs complete", all_completed, timeout=60, every=1)
        spooled = sum(1 for s, _ in jobs if any(h.job_dir(s.job_id).glob("spool/*.jsonl")))
        if spooled < JOBS:
            trial.note(
                f"only {spooled} of {JOBS} jobs had to spool (the others' writes all fell outside the outage)"
            )
        again = h.reconcile()  # ingesting the spools again adds nothing
        assert again.spool_points == 0, again.summary()
        expected = reference(STEPS)
        for sub, _ in jobs:
            series = h.catalog().metric_series(sub.run_id, "x")
            trial.count(
                "metric points",
                expected=STEPS,
                found=sum(1 for step, value in series if 0 <= step < STEPS and value == expected[step]),
                duplicated=len(series) - len({s for s, _ in series}),
            )
            assert series == list(enumerate(expected)), h.output(sub.job_id)
