"""slurmd dies on the node running a job: the job is requeued as a node failure, resumes from its
checkpoint on another node, and the node comes back when slurmd restarts.

The job runs alone on its node (``--exclusive``), so killing that slurmd touches nobody else's job.
Slurm would declare the node down after ``SlurmdTimeout`` (300 s); the test does it at once with
``scontrol update state=down``. The first attempt's processes keep running meanwhile (slurmd's death
does not kill them, as on a real node that lost its daemon); the restarted slurmd must end them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcplat.catalog import RunStatus
from hpcplat.sandbox import Sandbox
from tests.faults.helpers import (
    REPEATS,
    Events,
    FaultReport,
    Harness,
    eventually,
    fault_report,
    harness,
    job_processes,
    kill_daemon,
    node_state,
    restore,
    wait_for,
    workload_command,
)
from tests.faults.workload import reference

__all__ = ["fault_report"]

pytestmark = pytest.mark.sandbox

STEPS = 100
STEP_SLEEP = 0.3


def reconciled(h: Harness, run_id: str) -> bool:
    h.reconcile()
    return bool(h.catalog().run(run_id).status is RunStatus.COMPLETED)


@pytest.mark.parametrize("rep", range(REPEATS))
def test_job_on_a_node_whose_slurmd_dies_resumes_elsewhere(
    rep: int, sandbox: Sandbox, tmp_path: Path, fault_report: FaultReport
) -> None:
    with fault_report.trial("slurmd-killed", rep) as trial, harness(sandbox, tmp_path) as h:
        events = Events(tmp_path / "events.jsonl")
        result = tmp_path / "result.json"
        spec = h.spec(
            workload_command(steps=STEPS, events=events.path, result=result, step_sleep=STEP_SLEEP),
            name="slurmd",
            tier="preemptible",
        )
        sub = h.submit(spec, sbatch_args=["--exclusive"])
        first = events.wait("checkpoint", timeout=120)
        node = first["node"]
        try:
            kill_daemon(sandbox, f"slurmd-{node}")
            h.slurm("scontrol", "update", f"nodename={node}", "state=down", f"reason=fault-injection {h.tag}")
            resumed = events.wait("start", restart=1, timeout=120)
        finally:
            restore(sandbox)
        assert resumed["node"] != node, "the requeued job must run on another node"
        assert resumed["resumed_from"] is not None and resumed["resumed_from"] >= first["step"], resumed

        # The node is back in service, and nothing of the first attempt survives on it.
        wait_for(
            f"{node} back in service",
            lambda: (s := node_state(h, node)) and "down" not in s and "drain" not in s and "*" not in s,
            timeout=60,
        )
        orphans = eventually(
            lambda: job_processes(sub.job_id, node=node, restart=0), lambda pids: not pids, timeout=60
        )
        trial.count("first attempt ended on the failed node", expected=1, found=0 if orphans else 1)
        assert not orphans, f"processes of the first attempt still alive on {node}: {orphans}"
        zombie = [e for e in events.of("checkpoint", restart=0) if e["t"] > first["t"]]
        if zombie:
            trial.note(
                f"the first attempt kept running on {node} after slurmd died and wrote {len(zombie)} more "
                "checkpoint(s) until slurmd came back"
            )

        assert h.final_state(sub.job_id, timeout=120) == "COMPLETED", h.output(sub.job_id)
        expected = reference(STEPS)
        assert json.loads(result.read_text())["final"] == expected[-1]
        done = events.of("done")
        assert done and all(e["restart"] >= 1 and e["node"] != node for e in done), done

        wait_for(
            "the catalog to see the run complete", lambda: reconciled(h, sub.run_id), timeout=60, every=1
        )
        details = h.catalog().details(sub.run_id)
        restarts = [a.restart for a in details.attempts]
        assert restarts == [0, 1], [(a.job_id, a.restart, a.state, a.nodes) for a in details.attempts]
        assert details.attempts[0].nodes == node and details.attempts[1].nodes != node
        series = h.catalog().metric_series(sub.run_id, "x")
        trial.count(
            "metric points",
            expected=STEPS,
            found=sum(1 for step, value in series if 0 <= step < STEPS and value == expected[step]),
            duplicated=len(series) - len({s for s, _ in series}),
        )
        assert series == list(enumerate(expected))
