"""``hpcplat sweep submit | status | results | list``: hyperparameter sweeps as Slurm job arrays."""

from __future__ import annotations

import json
from typing import Any

import click

from hpcplat.cli.output import echo_json, echo_table
from hpcplat.cli.specflags import job_options, overrides_from_options, spec_from_options
from hpcplat.errors import UsageError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def sweep() -> None:
    """Hyperparameter sweeps: grid or random search, submitted as job arrays."""


@sweep.command()
@job_options
@click.option("-s", "--sweep-file", type=click.Path(dir_okay=False), help="Sweep file (parameters + job).")
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2,...", help="Grid parameter (repeatable).")
@click.option(
    "--random",
    "random_params",
    multiple=True,
    metavar="NAME=DIST:MIN:MAX|V1,V2",
    help="Random-search parameter: uniform/loguniform/int range or values (repeatable).",
)
@click.option("--samples", type=int, help="Points to draw (random search).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--max-concurrent", type=int, help="At most N points running at once (%N).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def submit(
    *,
    command: tuple[str, ...],
    sweep_file: str | None,
    grid: tuple[str, ...],
    random_params: tuple[str, ...],
    samples: int | None,
    seed: int,
    max_concurrent: int | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Submit a sweep. Placeholders {name} in the command take each point's value; the point's
    parameters are also in $HPCPLAT_PARAMS (JSON), and a point reports results by writing JSON
    to $HPCPLAT_RESULT_FILE.

    \b
    hpcplat sweep submit --grid lr=0.1,0.01 --grid bs=32,64 --max-concurrent 4 \\
        -- python train.py --lr {lr} --bs {bs}
    hpcplat sweep submit --random lr=loguniform:1e-5:1e-1 --samples 50 -- python train.py --lr {lr}
    hpcplat sweep submit -s sweep.yaml
    """
    from hpcplat.spec import SpecError
    from hpcplat.submission.sweep import (
        Distribution,
        SearchMethod,
        Sweep,
        load_sweep_file,
        parse_cli_parameter,
        submit_sweep,
    )

    if sweep_file:
        definition = load_sweep_file(sweep_file, job_overrides=overrides_from_options(options, command))
        if grid or random_params:
            raise UsageError("give the parameters either in the sweep file or with --grid/--random, not both")
    else:
        if grid and random_params:
            raise UsageError(
                "--grid and --random cannot be mixed", hint="a sweep is either a grid or a random search"
            )
        if not grid and not random_params:
            raise UsageError(
                "no parameters to sweep over",
                hint="add --grid NAME=V1,V2, or --random NAME=loguniform:MIN:MAX --samples N, or -s FILE",
            )
        job = spec_from_options(options, command)
        parameters: dict[str, Distribution] = dict(parse_cli_parameter(p) for p in (grid or random_params))
        try:
            definition = Sweep(
                job=job,
                parameters=parameters,
                method=SearchMethod.GRID if grid else SearchMethod.RANDOM,
                samples=samples,
                seed=seed,
                max_concurrent=max_concurrent,
            )
        except SpecError as exc:
            raise UsageError("invalid sweep: " + "; ".join(str(p) for p in exc.problems)) from None
    if max_concurrent is not None and sweep_file:
        from dataclasses import replace

        definition = replace(definition, max_concurrent=max_concurrent)
    record = submit_sweep(definition)
    arrays = ", ".join(f"{a.job_id} ({a.size} tasks)" for a in record.arrays)
    if as_json:
        echo_json(
            {
                "sweep_id": record.sweep_id,
                "directory": record.directory,
                "points": len(record.points),
                "arrays": [vars(a) for a in record.arrays],
            },
            compact=True,
        )
        return
    click.echo(f"Submitted sweep {record.sweep_id}: {len(record.points)} points as array job(s) {arrays}")
    click.echo(f"  results: hpcplat sweep results {record.sweep_id}")


@sweep.command()
@click.argument("sweep_ref", metavar="SWEEP")
def status(sweep_ref: str) -> None:
    """Count a sweep's points by state (one squeue call)."""
    from hpcplat.submission.sweep import collect, find_sweep

    record = find_sweep(sweep_ref)
    counts: dict[str, int] = {}
    for point in collect(record):
        counts[point.state.value] = counts.get(point.state.value, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    click.echo(f"{record.sweep_id}: {len(record.points)} points: {summary}")


@sweep.command()
@click.argument("sweep_ref", metavar="SWEEP")
@click.option("--wait", "wait_", is_flag=True, help="Wait for every point to finish first.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per point).")
def results(sweep_ref: str, wait_: bool, timeout: float | None, as_json: bool) -> None:
    """Each point's parameters, state and result (what it wrote to $HPCPLAT_RESULT_FILE)."""
    from hpcplat.submission.sweep import collect, find_sweep

    record = find_sweep(sweep_ref)
    try:
        points = collect(record, wait=wait_, timeout=timeout)
    except TimeoutError as exc:
        raise UsageError(str(exc)) from None
    if as_json:
        echo_json([p.to_dict() for p in points])
        return
    names = list(record.points[0]) if record.points else []
    rows = [
        [
            str(p.index),
            p.job_id,
            p.state.value,
            *(str(p.params.get(n)) for n in names),
            json.dumps(p.result, sort_keys=True) if p.result is not None else None,
        ]
        for p in points
    ]
    echo_table(["POINT", "JOB", "STATE", *names, "RESULT"], rows)


@sweep.command("list")
def list_() -> None:
    """List the sweeps under the job root (newest last)."""
    from hpcplat.siteconfig import load
    from hpcplat.submission.sweep import SweepRecord, sweeps_root

    root = sweeps_root(load())
    found = sorted(p for p in root.glob("*") if (p / "sweep.json").is_file()) if root.is_dir() else []
    if not found:
        click.echo("No sweeps.")
        return
    for path in found:
        record = SweepRecord.load(path)
        arrays = ",".join(a.job_id for a in record.arrays)
        click.echo(f"{record.sweep_id}  {len(record.points)} points  arrays {arrays}")
