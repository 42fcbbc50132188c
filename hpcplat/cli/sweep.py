"""``hpcplat sweep submit | status | results | list``: hyperparameter sweeps as Slurm job arrays."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from hpcplat.cli.output import echo_json, echo_table
from hpcplat.cli.specflags import job_options, overrides_from_options, spec_from_options
from hpcplat.errors import UsageError

if TYPE_CHECKING:
    from hpcplat.submission.objective import Ranking
    from hpcplat.submission.sweep import SweepRecord


_SEARCH_KEYS = (
    "method",
    "objective",
    "space",
    "max_trials",
    "startup_trials",
    "min_steps",
    "max_steps",
    "reduction_factor",
    "prune_grace",
    "foreground",
    "driver_tier",
    "driver_time",
    "poll",
)


def search_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a search (``--method`` and what goes with it)."""
    options = [
        click.option(
            "--method",
            type=click.Choice(["grid", "random", "tpe", "bayes", "asha", "hyperband"]),
            help="Search run by a driver with Optuna (trials are jobs; needs --objective).",
        ),
        click.option(
            "--objective",
            metavar="METRIC[:min|max[:final|best]]",
            help="The metric trials log with hpcplat.track, e.g. loss:min or acc:max:best.",
        ),
        click.option(
            "--space",
            multiple=True,
            metavar="NAME=DIST:MIN:MAX|V1,V2",
            help="Search parameter (repeatable; like --random).",
        ),
        click.option("--max-trials", type=int, help="Trials to run (default: --samples, else 20)."),
        click.option("--startup-trials", type=int, help="TPE: random trials first (default max-trials/4)."),
        click.option("--min-steps", type=int, default=1, show_default=True, help="Pruning: first rung."),
        click.option("--max-steps", type=int, help="Pruning: steps of a full trial (hyperband needs it)."),
        click.option("--reduction-factor", type=int, default=3, show_default=True, help="Pruning: eta."),
        click.option(
            "--prune-grace",
            type=float,
            default=30.0,
            show_default=True,
            help="Seconds from the checkpoint signal to the cancel of a pruned trial.",
        ),
        click.option("--foreground", is_flag=True, help="Run the driver here instead of as a CPU job."),
        click.option("--driver-tier", help="Tier of the driver job (default: the trials' tier)."),
        click.option(
            "--driver-time", type=int, default=1440, show_default=True, help="Driver job time limit (min)."
        ),
        click.option("--poll", type=float, default=5.0, show_default=True, help="Driver cycle (seconds)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


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
@search_options
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
    hpcplat sweep submit --method asha --objective loss:min --space x=uniform:-10:10 \\
        --max-trials 30 --max-concurrent 4 --max-steps 20 -- python train.py --x {x}
    """
    search = {k: options.pop(k) for k in _SEARCH_KEYS}
    if search["method"] is not None:
        _submit_search(
            search,
            options,
            command,
            sweep_file=sweep_file,
            params=(*grid, *random_params),
            samples=samples,
            seed=seed,
            max_concurrent=max_concurrent,
            as_json=as_json,
        )
        return
    if search["objective"] is not None or search["space"]:
        raise UsageError(
            "--objective and --space need --method",
            hint="e.g. --method tpe --objective loss:min --space lr=loguniform:1e-5:1e-1",
        )
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
    from hpcplat.submission.search import is_search, ranking_of
    from hpcplat.submission.sweep import collect, find_sweep

    record = find_sweep(sweep_ref)
    if is_search(record):
        counted = ranking_of(record).summary()
        states = ("completed", "pruned", "failed", "running")
        click.echo(
            f"{record.sweep_id}: {counted['trials']} trials: "
            + ", ".join(f"{counted[k]} {k}" for k in states)
        )
        return
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
@click.option(
    "--objective",
    "objective_text",
    metavar="METRIC[:min|max[:final|best]]",
    help="Rank by this metric (default: the sweep's objective, if it has one).",
)
def results(
    sweep_ref: str, wait_: bool, timeout: float | None, as_json: bool, objective_text: str | None
) -> None:
    """Each point's parameters, state and result (what it wrote to $HPCPLAT_RESULT_FILE); with an
    objective, the trials ranked by it, the best parameters, pruned trials and GPU-hours saved."""
    from hpcplat.submission.objective import Objective
    from hpcplat.submission.search import is_search, ranking_of, ranking_of_points
    from hpcplat.submission.sweep import collect, find_sweep

    objective = Objective.parse(objective_text) if objective_text else None
    record = find_sweep(sweep_ref)
    if is_search(record):
        if wait_:
            _wait_search(record, timeout)
        ranking = ranking_of(record)
        if objective is not None and objective != ranking.objective:
            raise UsageError(
                f"this search optimizes {ranking.objective}; it cannot be ranked by {objective}",
                hint="leave out --objective",
            )
        _show_ranking(ranking, as_json)
        return
    try:
        points = collect(record, wait=wait_, timeout=timeout)
    except TimeoutError as exc:
        raise UsageError(str(exc)) from None
    if objective is None and record.definition.get("objective"):
        objective = Objective.from_dict(record.definition["objective"])
    if objective is not None:
        from hpcplat.siteconfig import load
        from hpcplat.submission.service import open_catalog

        _show_ranking(ranking_of_points(record, points, objective, open_catalog(load())), as_json)
        return
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


@sweep.command()
@click.argument("sweep_ref", metavar="SWEEP")
@click.option("--poll", type=float, default=5.0, show_default=True, help="Driver cycle (seconds).")
def drive(sweep_ref: str, poll: float) -> None:
    """Run (or resume) the driver of a search until its last trial ends. The driver job runs this;
    run it again after the driver was killed: running trials are followed, none is repeated."""
    from hpcplat.submission.search import is_search
    from hpcplat.submission.sweep import find_sweep

    record = find_sweep(sweep_ref)
    if not is_search(record):
        raise UsageError(f"sweep {record.sweep_id} is a job-array sweep; it has no driver")
    _drive(record, poll)


def _drive(record: SweepRecord, poll: float) -> None:
    from hpcplat.siteconfig import load
    from hpcplat.slurm import get_client
    from hpcplat.submission.search import Driver
    from hpcplat.submission.service import open_catalog

    config = load()
    catalog = open_catalog(config)
    if catalog is None:
        raise UsageError(
            "a search needs the catalog (trials' metrics are read from it)", hint="set [catalog] url"
        )
    driver = Driver(record, get_client(), config, catalog, poll_s=poll, echo=click.echo)
    ranking = driver.run()
    best = ranking.best
    click.echo(
        f"search {record.sweep_id} done: {len(ranking.trials)} trials, {ranking.count('PRUNED')} pruned"
        + (
            f"; best {best.value:g} with {json.dumps(best.params, sort_keys=True)}"
            if best and best.value is not None
            else ""
        )
    )


def _submit_search(
    search: dict[str, Any],
    options: dict[str, Any],
    command: tuple[str, ...],
    *,
    sweep_file: str | None,
    params: tuple[str, ...],
    samples: int | None,
    seed: int,
    max_concurrent: int | None,
    as_json: bool,
) -> None:
    """``sweep submit --method ...``: create the search, then run its driver here or as a job."""
    from hpcplat.siteconfig import load
    from hpcplat.slurm import get_client
    from hpcplat.spec import SpecError
    from hpcplat.submission.objective import Objective
    from hpcplat.submission.search import Method, Search, create, submit_driver
    from hpcplat.submission.service import open_catalog
    from hpcplat.submission.sweep import parse_cli_parameter

    if sweep_file:
        raise UsageError("--method takes its parameters from --space, not a sweep file", hint="drop -s")
    if search["objective"] is None:
        raise UsageError("a search needs an objective", hint="add --objective METRIC:min|max, e.g. loss:min")
    given = (*search["space"], *params)
    if not given:
        raise UsageError("no parameters to search", hint="add --space NAME=uniform:MIN:MAX or NAME=V1,V2")
    job = spec_from_options(options, command)
    try:
        definition = Search(
            job=job,
            parameters=dict(parse_cli_parameter(p) for p in given),
            method=Method.parse(search["method"]),
            objective=Objective.parse(search["objective"]),
            max_trials=search["max_trials"] or samples or 20,
            max_concurrent=max_concurrent or 4,
            seed=seed,
            startup_trials=search["startup_trials"],
            min_steps=search["min_steps"],
            max_steps=search["max_steps"],
            reduction_factor=search["reduction_factor"],
            prune_grace_s=search["prune_grace"],
        )
    except SpecError as exc:
        raise UsageError("invalid search: " + "; ".join(str(p) for p in exc.problems)) from None
    config = load()
    catalog = open_catalog(config)
    if catalog is None:
        raise UsageError(
            "a search needs the catalog (trials' metrics are read from it)", hint="set [catalog] url"
        )
    client = get_client()
    record = create(definition, client=client, config=config, catalog=catalog)
    if search["foreground"]:
        click.echo(
            f"Search {record.sweep_id}: driver running here (resume: hpcplat sweep drive {record.sweep_id})"
        )
        _drive(record, search["poll"])
        return
    job_id = submit_driver(
        record,
        client=client,
        config=config,
        catalog=catalog,
        tier=search["driver_tier"],
        time_limit_min=search["driver_time"],
    )
    if as_json:
        echo_json(
            {"sweep_id": record.sweep_id, "directory": record.directory, "driver_job": job_id}, compact=True
        )
        return
    click.echo(f"Submitted sweep {record.sweep_id}: {definition.method.value} search, driver job {job_id}")
    click.echo(f"  results: hpcplat sweep results {record.sweep_id}")


def _wait_search(record: SweepRecord, timeout: float | None) -> None:
    """Wait until the search has no running trial and its budget is spent."""
    import time

    from hpcplat.submission.search import Search, ranking_of

    budget = Search.from_dict(record.definition).trial_budget()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        summary = ranking_of(record).summary()
        if summary["running"] == 0 and summary["trials"] >= budget:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise UsageError(
                f"sweep {record.sweep_id}: still running after {timeout:g}s "
                f"({summary['trials']} of {budget} trials, {summary['running']} running)"
            )
        time.sleep(2)


def _show_ranking(ranking: Ranking, as_json: bool) -> None:
    if as_json:
        echo_json(ranking.to_dict())
        return
    names = sorted({n for t in ranking.trials for n in t.params})
    rows = [
        [
            str(i + 1) if t.value is not None else "-",
            str(t.number),
            t.job_id,
            t.state,
            *(_short(t.params.get(n)) for n in names),
            f"{t.value:.6g}" if t.value is not None else None,
            str(t.steps),
            f"{t.elapsed_s:.0f}",
            t.note,
        ]
        for i, t in enumerate(ranking.trials)
    ]
    metric = ranking.objective.metric.upper()
    echo_table(["RANK", "TRIAL", "JOB", "STATE", *names, metric, "STEPS", "SECONDS", "NOTE"], rows)
    summary = ranking.summary()
    best = ranking.best
    click.echo(f"objective: {ranking.objective}")
    if best is not None and best.value is not None:
        click.echo(
            f"best: trial {best.number}, {ranking.objective.metric} = {best.value:.6g}, "
            f"params {json.dumps(best.params, sort_keys=True)}"
        )
    click.echo(
        f"trials: {summary['trials']} ({summary['completed']} completed, {summary['pruned']} pruned, "
        f"{summary['failed']} failed, {summary['running']} running)"
    )
    click.echo(
        f"trial-hours used {summary['trial_hours_used']:.4f} of {summary['trial_hours_full']:.4f} for a full "
        f"run (saved {summary['trial_hours_saved']:.4f}); GPU-hours used {summary['gpu_hours_used']:.4f}, "
        f"saved {summary['gpu_hours_saved']:.4f}"
    )


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
