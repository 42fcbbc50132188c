"""The node agent is killed (SIGKILL) and started again: no false reclaim, no sample counted twice.

Two jobs submitted through hpcplat share a node: a busy one (a CPU-bound loop: the emulated GPU
reads its CPU use) and an idle one (``sleep``). The agent runs as the real ``hpcplat-node-agent``
process with windows of seconds, scoped to this test's jobs (``only_job_names``); it is killed
once it has warned the idle job, and started again at once. The idle job must be reclaimed by the
second agent (the positive control); the busy job must never be warned, signalled or requeued; and
the GPU-usage windows in the catalog must not overlap.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpcplat.sandbox import Sandbox
from tests.faults.helpers import (
    REPEATS,
    FaultReport,
    Harness,
    fault_report,
    free_node,
    harness,
    site_file,
    wait_for,
)

__all__ = ["fault_report"]

pytestmark = pytest.mark.sandbox

INTERVAL_S = 1.0
ACT_AFTER_S = 6.0
BUSY_S = 20
RECLAIM = {"checkpoint_signal", "requeue", "cancel"}


def agent_events(h: Harness, job_id: str) -> list[dict[str, object]]:
    path = h.job_dir(job_id) / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_agent(h: Harness, config: Path, node: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCPLAT_")}
    env.update(h.env, HPCPLAT_CONFIG=str(config))
    program = str(Path(sys.executable).parent / "hpcplat-node-agent")
    with log.open("ab") as out:
        return subprocess.Popen(
            [program, "--node", node, "--metrics-port", "0", "--spool-dir", str(h.tmp / "spool")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=60)


@pytest.mark.parametrize("rep", range(REPEATS))
def test_agent_killed_and_restarted_never_touches_a_busy_job_and_counts_no_sample_twice(
    rep: int, sandbox: Sandbox, tmp_path: Path, fault_report: FaultReport
) -> None:
    with fault_report.trial("agent-restart", rep) as trial, harness(sandbox, tmp_path) as h:
        node = free_node(h, 2)
        config = site_file(
            h,
            {
                "node_agent": {
                    "interval_s": INTERVAL_S,
                    "slurm_poll_s": 1,
                    "report_window_s": 3,
                    "flush_interval_s": 1,
                    "metrics_port": 0,
                },
                "node_agent.idle": {
                    "warn_after_s": [2.0],
                    "act_after_s": ACT_AFTER_S,
                    "requeue_grace_s": 3.0,
                    "only_job_names": [f"{h.tag}-*"],
                },
                "node_agent.orphans": {"enabled": False},
                "node_agent.health": {"enabled": False},
            },
        )
        loop = f"import time\nend = time.time() + {BUSY_S}\nwhile time.time() < end:\n    pass\n"
        busy = h.submit(h.spec([sys.executable, "-c", loop], name="busy"), sbatch_args=["-w", node])
        idle = h.submit(h.spec(["sleep", "120"], name="idle"), sbatch_args=["-w", node])
        for sub in (busy, idle):
            h.wait_running(sub.job_id)

        log = tmp_path / "agent.log"
        first = start_agent(h, config, node, log)
        try:
            wait_for(
                "the first agent to warn the idle job",
                lambda: any(e["action"] == "idle_warning" for e in agent_events(h, idle.job_id)),
                timeout=60,
                describe=lambda: log.read_text()[-2000:],
            )
        finally:
            stop(first, signal.SIGKILL)
        restarted_at = time.time()
        second = start_agent(h, config, node, log)
        try:
            wait_for(
                "the restarted agent to reclaim the idle job",
                lambda: [e for e in agent_events(h, idle.job_id) if e["action"] in RECLAIM],
                timeout=90,
                describe=lambda: f"{agent_events(h, idle.job_id)} {log.read_text()[-2000:]}",
            )
            still = h.job(busy.job_id)
            assert still is not None and still.state == "RUNNING", "the busy job ended before the reclaim"
            assert h.final_state(busy.job_id, timeout=120) == "COMPLETED", h.output(busy.job_id)
        finally:
            stop(second, signal.SIGTERM)

        # No false reclaim: the busy job was never warned, signalled or requeued.
        busy_events = agent_events(h, busy.job_id)
        state = h.job(busy.job_id)
        untouched = not busy_events and "hpcplat-node-agent" not in h.output(busy.job_id)
        untouched = untouched and (state is None or state.restarts == 0)
        trial.count("busy job untouched", expected=1, found=int(untouched))
        assert untouched, (busy_events, h.output(busy.job_id))
        # The idle job (the positive control): warned by the first agent, reclaimed by the second,
        # whose idle clock started afresh (a restart never shortens the grace a job gets).
        reclaimed = [e for e in agent_events(h, idle.job_id) if e["action"] in RECLAIM]
        assert float(str(reclaimed[0]["at"])) - restarted_at >= ACT_AFTER_S - INTERVAL_S, reclaimed

        # Send what the agents spooled, then check the catalog's usage windows.
        for spool in sorted(p for p in (tmp_path / "spool").iterdir() if p.is_dir()):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "node_agent.reporter",
                    "--spool",
                    str(spool),
                    "--catalog",
                    h.catalog_url,
                ],
                env={**os.environ, **h.env},
                check=True,
                timeout=120,
                capture_output=True,
            )
        usage = usage_windows(h, busy.job_id)
        assert usage, "no GPU usage recorded for the busy job"
        overlapping = 0
        for gpu in {w.gpu_uuid for w in usage}:
            ordered = sorted((w for w in usage if w.gpu_uuid == gpu), key=lambda w: w.start)
            for before, after in itertools.pairwise(ordered):
                if (before.end - after.start).total_seconds() > INTERVAL_S / 2:
                    overlapping += 1
        samples = sum(w.samples for w in usage)
        trial.count("GPU usage samples", expected=samples, found=samples, duplicated=overlapping)
        assert overlapping == 0, [(w.start, w.end, w.samples) for w in usage]
        assert len({w.gpu_uuid for w in usage}) == 1
        # The busy job's GPU is busy: an edge window (interpreter start-up, the last samples after the
        # loop ended, a starved moment on a loaded 2-core machine) may hold only idle samples.
        busy_samples = sum(w.busy_samples for w in usage)
        assert busy_samples * 2 >= samples, [(w.start, w.end, w.samples, w.busy_samples) for w in usage]
        assert all(w.run_id == busy.run_id for w in usage)


def usage_windows(h: Harness, job_id: str) -> list[Any]:
    from sqlmodel import Session, select

    from hpcplat.catalog.models import GpuUsage

    with Session(h.catalog().engine) as session:
        return list(session.exec(select(GpuUsage).where(GpuUsage.job_id == job_id)).all())
