"""``hpcplat demo``: the end-to-end story on the local sandbox (:mod:`hpcplat.sandbox.demo`)."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--epochs", default=6, show_default=True, type=click.IntRange(1, 100), help="Training epochs.")
@click.option(
    "--step-sleep",
    default=0.08,
    show_default=True,
    type=click.FloatRange(0, 5),
    help="Seconds each training step sleeps, so the run lives long enough to be preempted.",
)
def demo(epochs: int, step_sleep: float) -> None:
    """Bring the sandbox up and run the end-to-end story: dataset, 2-node DDP training in the
    preemptible tier, preemption and resume, idle-GPU reclaim, provenance, rerun."""
    from hpcplat.sandbox.demo import run_demo

    run_demo(epochs=epochs, step_sleep=step_sleep)
