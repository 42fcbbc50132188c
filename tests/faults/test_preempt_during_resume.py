"""A preempted job is preempted again while it restores its checkpoint, and still ends with the
result of an uninterrupted run.

Each trial pins a 4-GPU ``preemptible`` job to a node (``-w``); a 4-GPU ``urgent`` job on the same
node preempts it; when the requeued job reports that it is restoring (the workload spends
``RESUME_DELAY`` seconds there), a second ``urgent`` job preempts it again. The trials run side by
side on two nodes: each preemption costs about 20 s of requeue delay in the sandbox.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from hpcplat.catalog import RunStatus
from hpcplat.sandbox import Sandbox
from tests.faults.helpers import (
    REPEATS,
    Events,
    FaultReport,
    Harness,
    fault_report,
    free_node,
    harness,
    wait_for,
    workload_command,
)
from tests.faults.workload import reference

__all__ = ["fault_report"]

pytestmark = pytest.mark.sandbox

STEPS = 40
STEP_SLEEP = 0.25
RESUME_DELAY = 3.0


def preempt_twice(h: Harness, node: str, rep: int, report: FaultReport) -> None:
    with report.trial("preempt-during-resume", rep) as trial:
        events = Events(h.tmp / f"events-{rep}.jsonl")
        result = h.tmp / f"result-{rep}.json"
        command = workload_command(
            steps=STEPS, events=events.path, result=result, step_sleep=STEP_SLEEP, resume_delay=RESUME_DELAY
        )
        victim = h.submit(
            h.spec(command, name=f"victim{rep}", tier="preemptible", gpus=4), sbatch_args=["-w", node]
        )
        first = events.wait("checkpoint", timeout=120)
        h.submit(
            h.spec(["sleep", "2"], name=f"urgent{rep}a", tier="urgent", gpus=4), sbatch_args=["-w", node]
        )
        resuming = events.wait("resuming", restart=1, timeout=150)
        h.submit(
            h.spec(["sleep", "2"], name=f"urgent{rep}b", tier="urgent", gpus=4), sbatch_args=["-w", node]
        )
        events.wait("start", restart=2, timeout=150)
        assert h.final_state(victim.job_id, timeout=150) == "COMPLETED", h.output(victim.job_id)

        expected = reference(STEPS)
        assert json.loads(result.read_text())["final"] == expected[-1]
        stops = [(e["restart"], e["step"], e["reason"]) for e in events.of("stopping")]
        assert [s[0] for s in stops] == [0, 1], stops
        assert all(reason == "StopReason.PREEMPTED" for _, _, reason in stops), stops
        if stops[1][1] is not None:
            trial.note(
                f"second preemption arrived after the resume had finished (stopped at step {stops[1][1]})"
            )
        # No checkpoint lost: each attempt resumes from the step the previous one saved last.
        starts = {e["restart"]: e["resumed_from"] for e in events.of("start")}
        saved_before_first_stop = max(e["step"] for e in events.of("checkpoint", restart=0))
        assert starts[1] == saved_before_first_stop == resuming["step"], (starts, saved_before_first_stop)
        assert starts[2] == starts[1], starts
        trial.count(
            "checkpoint steps carried over",
            expected=2,
            found=int(starts[1] >= first["step"]) + int(starts[2] == starts[1]),
        )

        def completed() -> bool:
            h.reconcile()
            return bool(h.catalog().run(victim.run_id).status is RunStatus.COMPLETED)

        wait_for("the catalog to see the run complete", completed, timeout=60, every=1)
        details = h.catalog().details(victim.run_id)
        assert [a.restart for a in details.attempts] == [0, 1, 2]
        series = h.catalog().metric_series(victim.run_id, "x")
        trial.count(
            "metric points",
            expected=STEPS,
            found=sum(1 for step, value in series if 0 <= step < STEPS and value == expected[step]),
            duplicated=len(series) - len({s for s, _ in series}),
        )
        assert series == list(enumerate(expected))


def test_job_preempted_again_while_resuming_ends_like_an_uninterrupted_run(
    sandbox: Sandbox, tmp_path: Path, fault_report: FaultReport
) -> None:
    with harness(sandbox, tmp_path) as h:
        nodes: list[str] = []
        for _ in range(REPEATS):
            try:
                nodes.append(free_node(h, 4, exclude=nodes))
            except AssertionError:
                break
        assert nodes, "no node with 4 free GPUs"
        h.catalog()  # opened once, before the threads share it
        errors: list[BaseException] = []

        def one(rep: int, node: str) -> None:
            try:
                preempt_twice(h, node, rep, fault_report)
            except BaseException as exc:
                errors.append(exc)

        reps = list(range(REPEATS))
        while reps:  # side by side on as many free nodes as there are, then the rest
            batch = [(rep, node) for rep, node in zip(reps, nodes, strict=False)]
            threads = [threading.Thread(target=one, args=item) for item in batch]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            reps = reps[len(batch) :]
        if errors:
            raise errors[0]
