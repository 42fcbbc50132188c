"""The end-to-end story ``hpcplat demo`` (and ``make demo``) tells, on the local sandbox.

Each step runs the same ``hpcplat`` command a user would type, prints it first, and shows its real
output, so the demo doubles as a tour of the CLI:

1. register scikit-learn's digits as a dataset version;
2. start one node agent per sandbox node (idle reclaim windows shortened to seconds);
3. submit a 2-node DDP training run in the ``preemptible`` tier;
4. submit an ``urgent`` job that preempts it: the run checkpoints on all ranks, is requeued;
5. submit a job that holds a GPU and does nothing;
6. follow the training run: it resumes from its latest complete checkpoint and ends;
7. the idle job has been warned and reclaimed by the node agent;
8. show the finished run (provenance, params, metric curve, attempts, events, GPU-hours);
9. rerun it from the catalog and show that its metrics agree, bit for bit, with the preempted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from hpcplat.errors import CommandError, HpcplatError
from hpcplat.files import atomic_file
from hpcplat.runner import run, run_streaming, spawn

REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IDLE_JOB_NAME = "demo-idle-gpu"
TRAIN_JOB_NAME = "demo-digits"


class DemoError(HpcplatError):
    """A step of the demo did not turn out as the story says."""


@dataclass
class Demo:
    """State shared by the steps: the sandbox environment and what was submitted."""

    epochs: int = 6
    step_sleep: float = 0.08
    env: dict[str, str] = field(default_factory=dict)
    state_dir: Path = Path()
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    run_id: str = ""
    job_id: str = ""
    job_dir: Path = Path()
    idle_output: Path = Path()
    rerun_id: str = ""
    jobs_to_cancel: list[str] = field(default_factory=list)

    # -- plumbing --------------------------------------------------------------------------------

    def hpcplat(self, *args: str, timeout: float = 120, capture: bool = False) -> str:
        """Run ``hpcplat ARGS`` as a user would, printing the command first."""
        argv = [sys.executable, "-m", "hpcplat", *args]
        click.secho(f"$ hpcplat {' '.join(_quote(a) for a in args)}", fg="cyan")
        if capture:
            result = run(argv, timeout=timeout, env=self.env)
            return result.stdout
        run_streaming(argv, timeout=timeout, env=self.env)
        return ""

    def hpcplat_json(self, *args: str, timeout: float = 120) -> Any:
        argv = [sys.executable, "-m", "hpcplat", *args, "--json"]
        return json.loads(run(argv, timeout=timeout, env=self.env).stdout)

    def squeue_state(self, job_id: str) -> tuple[str, str, int]:
        """(state, reason, restarts) of a job, from ONE scontrol call."""
        from hpcplat.slurm.cli_backend import CliBackend

        details = CliBackend(env=self.env).job_details(job_id)
        return (
            details.get("JobState", "UNKNOWN"),
            details.get("Reason", ""),
            int(details.get("Restarts", "0")),
        )

    def wait_until(
        self, what: str, predicate: Callable[[], bool], *, deadline_s: float, every_s: float = 1.0
    ) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(every_s)
        raise DemoError(f"timed out after {deadline_s:.0f} s waiting for {what}")


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def banner(number: int, title: str) -> None:
    click.echo()
    click.secho(f"== {number}. {title} ", fg="green", bold=True)


# -- the steps ----------------------------------------------------------------------------------


def step_sandbox(demo: Demo) -> None:
    from hpcplat.sandbox import Sandbox

    banner(0, "A real Slurm cluster on this machine")
    click.secho("$ hpcplat sandbox up", fg="cyan")
    sandbox = Sandbox.default()
    status = sandbox.up()
    demo.env = sandbox.env()
    demo.state_dir = Path(demo.env["HPCPLAT_SANDBOX_DIR"])
    click.echo(
        f"sandbox up in {status.took_s:.1f} s: {len(status.nodes)} nodes, "
        f"{sum(1 for d in status.daemons if d.alive)} daemons running"
    )
    demo.hpcplat("sandbox", "status")


def step_dataset(demo: Demo) -> Path:
    banner(1, "Register the digits data set as a dataset version")
    import numpy as np
    from sklearn.datasets import load_digits

    folder = demo.state_dir / "datasets" / "digits"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "digits.npz"
    if not target.exists():
        digits = load_digits()
        with atomic_file(target, mode=0o644) as handle:
            np.savez(handle, data=digits.data.astype("float32"), target=digits.target.astype("int64"))
    existing = demo.hpcplat_json("data", "ls")
    if not any(d.get("name") == "digits" for d in existing):
        demo.hpcplat("data", "register", "digits", str(folder))
    demo.hpcplat("data", "show", "digits")
    return target


def step_agents(demo: Demo) -> None:
    banner(2, "Start a node agent on every node (idle-GPU windows shortened to seconds)")
    config = demo.state_dir / "demo" / "node-agent.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    site = Path(demo.env["HPCPLAT_CONFIG"]).read_text()
    config.write_text(
        site
        + f"""
[node_agent]
interval_s = 1
slurm_poll_s = 2
flush_interval_s = 5
report_window_s = 10
spool_dir = "{demo.state_dir / "demo" / "agent-spool"}"

[node_agent.idle]
warn_after_s = [6, 12]
act_after_s = 18
requeue_grace_s = 5
only_job_names = ["{IDLE_JOB_NAME}*"]

[node_agent.orphans]
enabled = false

[node_agent.health]
enabled = false
"""
    )
    logs = demo.state_dir / "demo" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    agent = Path(sys.executable).parent / "hpcplat-node-agent"
    from hpcplat.sandbox import Sandbox

    nodes = [n.name for n in Sandbox.default().status().nodes]
    for index, node in enumerate(nodes, start=1):
        argv = [
            str(agent),
            "--config",
            str(config),
            "--node",
            node,
            "--backend",
            "emulated",
            "--metrics-port",
            str(19800 + index),
        ]
        with open(logs / f"agent-{node}.log", "ab") as log:
            proc = spawn(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **demo.env})
        demo.agents.append(proc)
        click.echo(f"node agent on {node}: pid {proc.pid}, /metrics on port {19800 + index}, log {log.name}")


def step_train(demo: Demo, data: Path) -> None:
    banner(3, "Submit a 2-node distributed training run in the preemptible tier")
    result = demo.state_dir / "demo" / "first-result.json"
    result.unlink(missing_ok=True)
    out = demo.hpcplat(
        "submit",
        "--name",
        TRAIN_JOB_NAME,
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--tier",
        "preemptible",
        "--dataset",
        "digits@1",
        "--param",
        f"epochs={demo.epochs}",
        "--param",
        "lr=0.05",
        "--param",
        "seed=0",
        "--tag",
        "demo",
        "--json",
        "--",
        sys.executable,
        str(REPO_EXAMPLES / "train_digits.py"),
        "--epochs",
        str(demo.epochs),
        "--data",
        str(data),
        "--step-sleep",
        str(demo.step_sleep),
        capture=True,
    )
    submitted = json.loads(out)
    demo.run_id, demo.job_id = str(submitted["run_id"]), str(submitted["job_id"])
    demo.job_dir = Path(submitted["job_dir"])
    demo.jobs_to_cancel.append(demo.job_id)
    click.echo(f"run {demo.run_id}, Slurm job {demo.job_id}")
    demo.wait_until(
        "the training job to start and write its first checkpoint",
        lambda: demo.squeue_state(demo.job_id)[0] == "RUNNING" and _has_checkpoint(demo),
        deadline_s=180,
    )
    demo.hpcplat("jobs")


def _has_checkpoint(demo: Demo) -> bool:
    from hpcplat.job.checkpoint import scan

    folder = demo.job_dir / "checkpoints"
    return folder.exists() and any(status.complete for status in scan(folder))


def step_idle(demo: Demo) -> str:
    banner(5, "A job that holds a GPU and does nothing")
    out = demo.hpcplat(
        "submit",
        "--name",
        IDLE_JOB_NAME,
        "--gpus-per-node",
        "1",
        "--tier",
        "normal",
        "--json",
        "--",
        # Holds a GPU and sleeps; like any hpcplat-aware job it saves and stops on the checkpoint signal.
        "bash",
        "-c",
        'trap "echo checkpoint saved on USR1; exit 0" USR1; sleep 600 & wait',
        capture=True,
    )
    submitted = json.loads(out)
    job_id = str(submitted["job_id"])
    demo.idle_output = Path(submitted["output"])
    demo.jobs_to_cancel.append(job_id)
    click.echo(f"idle job {job_id} submitted; the node agent warns at 6 s and 12 s of 0% and acts at 18 s")
    return job_id


def step_preempt(demo: Demo) -> None:
    banner(4, "An urgent job preempts the training run; it checkpoints, is requeued and resumes")
    out = demo.hpcplat(
        # Three whole nodes: more than the free ones, so Slurm must preempt the training run.
        "submit",
        "--name",
        "demo-urgent",
        "--nodes",
        "3",
        "--gpus-per-node",
        "4",
        "--tier",
        "urgent",
        "--json",
        "--",
        "sleep",
        "8",
        capture=True,
    )
    urgent = str(json.loads(out)["job_id"])
    demo.jobs_to_cancel.append(urgent)
    demo.wait_until(
        "the training job to be preempted and requeued",
        lambda: demo.squeue_state(demo.job_id)[2] >= 1,
        deadline_s=120,
    )
    state, reason, restarts = demo.squeue_state(demo.job_id)
    click.echo(f"training job {demo.job_id}: {state} ({reason}), restarts={restarts}")
    demo.hpcplat("jobs")


def step_follow(demo: Demo) -> None:
    banner(6, "Follow the training run until it ends (it resumes from its latest complete checkpoint)")
    demo.hpcplat("wait", demo.job_id, timeout=600)


def step_idle_outcome(demo: Demo, idle_job: str) -> None:
    banner(7, "The idle job was noticed by the node agent and reclaimed")
    demo.wait_until(
        "the node agent to reclaim the idle job",
        lambda: demo.squeue_state(idle_job)[0] in {"CANCELLED", "COMPLETED", "FAILED"},
        deadline_s=120,
    )
    state, _, _ = demo.squeue_state(idle_job)
    click.echo(
        f"idle job {idle_job}: {state}: it saved on the checkpoint signal and stopped; its GPU is free"
    )
    log = demo.idle_output
    if log.exists():
        lines = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if "hpcplat-node-agent" in line or "checkpoint saved" in line
        ]
        for line in lines[-4:]:
            click.echo(f"  {log.name}: {line}")


def step_show(demo: Demo) -> None:
    banner(8, "The finished run: provenance, params, metrics, attempts, events, GPU-hours")
    demo.hpcplat("reconcile")
    demo.hpcplat("run", "show", demo.run_id)
    png = demo.state_dir / "demo" / f"{demo.run_id[:8]}-loss.png"
    demo.hpcplat("run", "plot", demo.run_id, "--metric", "loss", "--out", str(png))


def step_rerun(demo: Demo) -> None:
    banner(9, "Rerun it from the catalog: the same inputs give the same model")
    demo.hpcplat("rerun", demo.run_id, "--wait", timeout=600)
    runs = demo.hpcplat_json("runs", "--limit", "5")
    rerun = next((r["id"] for r in runs if r["name"] == TRAIN_JOB_NAME and r["id"] != demo.run_id), None)
    if rerun is not None:
        demo.rerun_id = str(rerun)
        click.echo("the preempted-and-resumed run and its uninterrupted rerun, side by side:")
        demo.hpcplat("runs", "compare", demo.run_id, demo.rerun_id)


def stop_agents(demo: Demo) -> None:
    for proc in demo.agents:
        if proc.poll() is None:
            proc.terminate()
    for proc in demo.agents:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    demo.agents.clear()


def cancel_leftovers(demo: Demo) -> None:
    from hpcplat.slurm.cli_backend import CliBackend

    if not demo.jobs_to_cancel:
        return
    try:
        CliBackend(env=demo.env).cancel(demo.jobs_to_cancel)
    except CommandError as exc:
        click.echo(f"note: could not cancel demo jobs {demo.jobs_to_cancel}: {exc}", err=True)


def run_demo(*, epochs: int = 6, step_sleep: float = 0.08, steps: Sequence[str] = ()) -> None:
    """Run the whole story; every job it submits is cancelled if it stops part way."""
    demo = Demo(epochs=epochs, step_sleep=step_sleep)
    started = time.monotonic()
    step_sandbox(demo)
    try:
        data = step_dataset(demo)
        step_agents(demo)
        step_train(demo, data)
        step_preempt(demo)
        idle_job = step_idle(demo)
        step_follow(demo)
        step_idle_outcome(demo, idle_job)
        step_show(demo)
        step_rerun(demo)
    finally:
        stop_agents(demo)
        cancel_leftovers(demo)
    click.echo()
    click.secho(f"Done in {time.monotonic() - started:.0f} s. To look further:", fg="green", bold=True)
    env_hint = 'eval "$(.venv/bin/hpcplat sandbox env)"'
    for line in (
        env_hint,
        f".venv/bin/hpcplat run show {demo.run_id}",
        ".venv/bin/hpcplat runs",
        f".venv/bin/hpcplat runs compare {demo.run_id} {demo.rerun_id or '<the rerun from `hpcplat runs`>'}",
        f".venv/bin/hpcplat logs {demo.job_id}",
        ".venv/bin/hpcplat template list",
        "sinfo; squeue; sacct -X",
        ".venv/bin/hpcplat sandbox down",
    ):
        click.echo(f"  {line}")
