"""``hpcplat submit | jobs | show | logs | cancel | wait``: thin commands over the submission
service, the Slurm client and the shared status watcher.

Exit codes: 0 success, 1 a job failed (or Slurm refused), 2 bad input (nothing submitted).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hpcplat.errors import HpcplatError, SlurmError, UsageError
from hpcplat.slurm.state import JobState, parse_job_id
from hpcplat.spec import JobSpec, SpecError, load_spec_file

if TYPE_CHECKING:
    from hpcplat.siteconfig import SiteConfig
    from hpcplat.slurm.client import SlurmClient
    from hpcplat.slurm.models import JobInfo
    from hpcplat.slurm.output import OutputLocation

F = TypeVar("F", bound=Callable[..., Any])


# -- job spec options (shared with `hpcplat sweep submit`) ---------------------------------------

_JOB_OPTIONS: list[Callable[[F], F]] = [
    click.option(
        "-f", "--file", "spec_file", type=click.Path(dir_okay=False), help="Job spec file (YAML or TOML)."
    ),
    click.option("--name", help="Job name (default: the program's name)."),
    click.option("-N", "--nodes", type=int, help="Number of nodes."),
    click.option("--tasks-per-node", type=int, help="Tasks (processes) per node; for DDP, one per GPU."),
    click.option("-G", "--gpus-per-node", type=int, help="GPUs per node."),
    click.option("-c", "--cpus-per-task", type=int, help="CPUs per task."),
    click.option("--mem", help="Memory per node: 4000 (MB), 16G, 512M."),
    click.option("-t", "--time", "time_limit", help="Time limit: 90 (minutes), 1:30:00, 1-00:00:00, 2h."),
    click.option(
        "--tier", help="Priority tier (see the site configuration), e.g. urgent, normal, preemptible."
    ),
    click.option("-A", "--account", help="Slurm account (team) to charge."),
    click.option("-p", "--partition", help="Partition (overrides the tier's)."),
    click.option("--module", "modules", multiple=True, help="Lmod module to load (repeatable, in order)."),
    click.option("--venv", help="Python virtual environment to activate."),
    click.option("--conda", help="Conda environment (name or prefix) to activate."),
    click.option("--container", help="Apptainer/Singularity image to run the command in."),
    click.option("--bind", "binds", multiple=True, help="Extra container bind path (repeatable)."),
    click.option(
        "--env", "env_vars", multiple=True, metavar="KEY=VALUE", help="Environment variable (repeatable)."
    ),
    click.option(
        "--dataset", "datasets", multiple=True, metavar="NAME@VERSION", help="Dataset version (repeatable)."
    ),
    click.option(
        "--param", "params", multiple=True, metavar="KEY=VALUE", help="Hyperparameter (repeatable)."
    ),
    click.option("--workdir", type=click.Path(file_okay=False), help="Directory to run in (default: here)."),
    click.option("--checkpoint-dir", type=click.Path(file_okay=False), help="Where checkpoints go."),
    click.option("--max-requeues", type=int, help="How often a preempted/timed-out job may come back."),
    click.option(
        "--signal-warn", "signal_warn_s", type=int, help="Seconds of SIGUSR1 warning before the limit."
    ),
    click.option(
        "--after", "depends_on", multiple=True, metavar="JOB", help="Start after JOB succeeds (repeatable)."
    ),
    click.option("--tag", "tags", multiple=True, help="Tag recorded with the run (repeatable)."),
]


def job_options(func: F) -> F:
    """Every job spec field as a command-line option."""
    for option in reversed(_JOB_OPTIONS):
        func = option(func)
    return func


def _pairs(values: Iterable[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"--{what} expects KEY=VALUE, got {text!r}")
        out[key] = value
    return out


def _scalar(text: str) -> Any:
    from hpcplat.sweep import _scalar as scalar

    return scalar(text)


def overrides_from_options(options: dict[str, Any], command: Sequence[str]) -> dict[str, Any]:
    """The spec fields set on the command line, in ``JobSpec.to_dict()`` shape."""
    data: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    environment: dict[str, Any] = {}
    if command:
        data["command"] = list(command)
    for key in (
        "name",
        "tier",
        "account",
        "partition",
        "workdir",
        "checkpoint_dir",
        "max_requeues",
        "signal_warn_s",
    ):
        if options.get(key) is not None:
            data[key] = options[key]
    for key in ("nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task"):
        if options.get(key) is not None:
            resources[key] = options[key]
    if options.get("mem") is not None:
        resources["memory"] = options["mem"]
    if options.get("time_limit") is not None:
        resources["time"] = options["time_limit"]
    if options.get("modules"):
        environment["modules"] = list(options["modules"])
    for key in ("venv", "conda", "container"):
        if options.get(key) is not None:
            environment[key] = options[key]
    if options.get("binds"):
        environment["container_binds"] = list(options["binds"])
    if options.get("env_vars"):
        environment["vars"] = _pairs(options["env_vars"], "env")
    if options.get("datasets"):
        data["datasets"] = list(options["datasets"])
    if options.get("params"):
        data["params"] = {k: _scalar(v) for k, v in _pairs(options["params"], "param").items()}
    if options.get("depends_on"):
        data["depends_on"] = list(options["depends_on"])
    if options.get("tags"):
        data["tags"] = list(options["tags"])
    if resources:
        data["resources"] = resources
    if environment:
        data["environment"] = environment
    return data


def spec_from_options(
    options: dict[str, Any], command: Sequence[str], *, check_cluster: bool = False
) -> JobSpec:
    """A spec from ``-f FILE`` (if given) with the command-line options over it. With
    ``check_cluster``, an invalid request is also checked against the cluster for the rest, so that
    the error lists every problem at once."""
    from hpcplat.spec.files import SpecFileError

    overrides = overrides_from_options(options, command)
    if options.get("spec_file"):
        try:
            return load_spec_file(options["spec_file"], overrides=overrides)
        except SpecFileError as exc:
            raise _all_problems(exc, exc.located, exc.spec_error, check_cluster) from None
    if "command" not in overrides:
        raise UsageError(
            "nothing to run: give the command after --, or a spec file with -f",
            hint="hpcplat submit --gpus-per-node 1 -- python train.py --lr 0.1",
        )
    try:
        return JobSpec.from_dict(overrides)
    except SpecError as exc:
        problems = [f"{_option_name(p.field)}: {p.message}" for p in exc.problems]
        if len(problems) == 1:
            message = f"invalid job request: {problems[0]}"
        else:
            message = "invalid job request:\n" + "\n".join(f"  {p}" for p in problems)
        error = UsageError(message, hint="see `hpcplat submit --help`")
        raise _all_problems(error, problems, exc, check_cluster) from None


def _all_problems(error: UsageError, shown: list[str], spec_error: SpecError, check: bool) -> UsageError:
    if not check:
        return error
    from hpcplat.submission.service import explain_invalid

    return explain_invalid(error, shown, spec_error)


_FIELD_OPTIONS = {
    "resources.nodes": "--nodes",
    "resources.tasks_per_node": "--tasks-per-node",
    "resources.gpus_per_node": "--gpus-per-node",
    "resources.cpus_per_task": "--cpus-per-task",
    "resources.memory": "--mem",
    "resources.time": "--time",
    "environment.venv": "--venv",
    "environment.conda": "--conda",
    "environment.container": "--container",
    "max_requeues": "--max-requeues",
    "signal_warn_s": "--signal-warn",
}


def _option_name(field: str) -> str:
    if field in _FIELD_OPTIONS:
        return _FIELD_OPTIONS[field]
    head = field.split("[", 1)[0].split(".", 1)[0]
    mapping = {"depends_on": "--after", "datasets": "--dataset", "params": "--param", "tags": "--tag"}
    if field.startswith("environment.vars"):
        return "--env " + field.rsplit(".", 1)[-1]
    if field.startswith("environment.modules"):
        return "--module"
    return mapping.get(head, "--" + head.replace("_", "-")) if head != "command" else "command"


# -- shared helpers -------------------------------------------------------------------------------


def _client() -> SlurmClient:
    from hpcplat.slurm import get_client

    return get_client()


def _config() -> SiteConfig:
    from hpcplat.siteconfig import load

    return load()


def _check_ids(job_ids: Sequence[str]) -> list[str]:
    out = []
    for job_id in job_ids:
        try:
            parse_job_id(job_id)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        out.append(job_id.strip())
    return out


def find_jobs(client: SlurmClient, job_ids: Sequence[str]) -> dict[str, JobInfo]:
    """Records of the given jobs: one squeue call, plus one sacct call for those squeue lacks.
    Raises :class:`UsageError` naming the ids neither knows."""
    from hpcplat.watcher import _expand, _lookup

    live = _expand(client.jobs(list(job_ids)))
    found = {j: r for j in job_ids if (r := _lookup(j, live)) is not None}
    missing = [j for j in job_ids if j not in found]
    if missing:
        try:
            history = _expand(client.history(missing))
        except SlurmError:
            history = {}
        for j in missing:
            record = _lookup(j, history)
            if record is not None:
                found[j] = record
    unknown = [j for j in job_ids if j not in found]
    if unknown:
        word, pronoun = ("job", "it") if len(unknown) == 1 else ("jobs", "them")
        raise UsageError(
            f"no such {word}: {', '.join(unknown)} (neither squeue nor sacct knows {pronoun})",
            hint="`hpcplat jobs` lists your jobs",
        )
    return found


def run_id_of(info: JobInfo) -> str:
    comment = info.comment or ""
    return comment[len("hpcplat:") :] if comment.startswith("hpcplat:") else ""


def _elapsed(info: JobInfo) -> str:
    seconds = info.elapsed_s
    if (
        seconds is None
        and info.start_time is not None
        and info.state in (JobState.RUNNING, JobState.COMPLETING)
    ):
        seconds = max(0, int(time.time() - info.start_time.timestamp()))
    if seconds is None:
        return "-"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def info_dict(info: JobInfo) -> dict[str, Any]:
    return {
        "job_id": info.job_id,
        "name": info.name,
        "user": info.user,
        "state": info.state.value,
        "reason": info.reason,
        "partition": info.partition,
        "account": info.account,
        "qos": info.qos,
        "nodes": info.nodes,
        "num_nodes": info.num_nodes,
        "gpus": info.gpus,  # the whole job's, queued, running or in accounting
        "gpus_per_node": info.gpus_per_node,
        "exit_code": info.exit_code,
        "restarts": info.restarts,
        "submit_time": info.submit_time.isoformat() if info.submit_time else None,
        "start_time": info.start_time.isoformat() if info.start_time else None,
        "end_time": info.end_time.isoformat() if info.end_time else None,
        "elapsed_s": info.elapsed_s,
        "time_limit": info.time_limit,
        "run_id": run_id_of(info) or None,
        "work_dir": info.work_dir,
    }


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def output_path(client: SlurmClient, info: JobInfo, job_id: str, config: SiteConfig) -> OutputLocation:
    """Where a job's output is: Slurm's answer (``StdOut``) while it has one, else a guess that
    says so (:mod:`hpcplat.slurm.output`)."""
    from hpcplat.slurm.output import output_location

    return output_location(client, info, job_id, job_root=config.job_root_path())


# -- commands -------------------------------------------------------------------------------------


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@job_options
@click.option("--dry-run", is_flag=True, help="Validate and print the sbatch script; submit nothing.")
@click.option("--no-validate", is_flag=True, help="With --dry-run: do not ask the cluster (offline).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def submit(command: tuple[str, ...], dry_run: bool, no_validate: bool, as_json: bool, **options: Any) -> None:
    """Submit a training job: the command after --, or a spec file with -f.

    \b
    hpcplat submit --gpus-per-node 2 --time 2h -- python train.py --lr 0.1
    hpcplat submit -f train.yaml --tier preemptible
    hpcplat submit --nodes 2 --gpus-per-node 4 --tasks-per-node 4 -- python ddp.py
    """
    spec = spec_from_options(options, command, check_cluster=not no_validate)
    from hpcplat.submission import service

    if dry_run:
        click.echo(service.dry_run(spec, validate_cluster=not no_validate), nl=False)
        return
    result = service.submit(spec)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "job_id": result.job_id,
                    "run_id": result.run_id,
                    "output": result.output_path,
                    "job_dir": result.job_dir,
                    "tracked": result.tracked,
                }
            )
        )
        return
    click.echo(f"Submitted job {result.job_id} (run {result.run_id})")
    click.echo(f"  output: {result.output_path}")
    click.echo(f"  follow: hpcplat logs -f {result.job_id}    wait: hpcplat wait {result.job_id}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-a", "--all-users", is_flag=True, help="Everyone's jobs, not only yours.")
@click.option(
    "--history", "since", metavar="AGE", help="Also finished jobs from accounting, this far back (2h, 1d)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per job).")
def jobs(all_users: bool, since: str | None, as_json: bool) -> None:
    """List your jobs (queued, running, recently ended)."""
    import getpass
    from datetime import datetime, timedelta

    from hpcplat.spec import parse_time_minutes

    client = _client()
    user = None if all_users else getpass.getuser()
    records = {r.job_id: r for r in client.jobs(None, user=user)}
    if since:
        try:
            minutes = parse_time_minutes(since)
        except ValueError as exc:
            raise UsageError(f"--history: {exc}") from None
        start = datetime.now() - timedelta(minutes=minutes)
        for r in client.history(None, user=user, since=start):
            records.setdefault(r.job_id, r)
    ordered = sorted(records.values(), key=lambda r: _sort_key(r.job_id))
    if as_json:
        click.echo(json.dumps([info_dict(r) for r in ordered], indent=1))
        return
    if not ordered:
        click.echo("No jobs." + ("" if since else " (--history 1d shows finished ones)"))
        return
    rows = [
        [
            r.job_id,
            r.name[:30],
            r.state.value,
            r.qos or "-",
            r.partition,
            str(r.num_nodes or "-"),
            str(r.gpus or "-"),
            _elapsed(r),
            r.nodes or (f"({r.reason})" if r.reason else "-"),
            (run_id_of(r)[:8] or "-"),
        ]
        for r in ordered
    ]
    click.echo(
        table(
            rows,
            [
                "JOBID",
                "NAME",
                "STATE",
                "TIER",
                "PARTITION",
                "NODES",
                "TOTAL_GPUS",
                "ELAPSED",
                "NODELIST(REASON)",
                "RUN",
            ],
        )
    )


def _sort_key(job_id: str) -> tuple[int, int]:
    try:
        parsed = parse_job_id(job_id)
    except ValueError:
        return (sys.maxsize, 0)
    return (parsed.job, parsed.array_task if parsed.array_task is not None else -1)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(job_id: str, as_json: bool) -> None:
    """Show one job: state, resources, where it runs, its run and output."""
    (job_id,) = _check_ids([job_id])
    client = _client()
    info = find_jobs(client, [job_id])[job_id]
    data = info_dict(info)
    location = output_path(client, info, job_id, _config())
    data["output"] = str(location.path)
    data["output_guessed"] = location.guess or None
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        if value not in (None, "", 0) or key in ("job_id", "state"):
            click.echo(f"{key.ljust(width)}  {value}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the job ends.")
def logs(job_id: str, follow: bool) -> None:
    """Print a job's output (stdout and stderr)."""
    (job_id,) = _check_ids([job_id])
    client = _client()
    config = _config()
    info = find_jobs(client, [job_id])[job_id]
    location = output_path(client, info, job_id, config)
    path = location.path
    if not follow:
        if not path.exists():
            if info.state is JobState.PENDING:
                click.echo(f"job {job_id} is pending ({info.reason or 'waiting'}): no output yet", err=True)
                return
            raise HpcplatError(
                f"job {job_id} ({info.state.value}) has no output file at {path}"
                + (f" (guessed: {location.guess})" if location.guessed else ""),
                hint="it may have been written elsewhere (--output) or removed",
            )
        _copy(path, 0)
        return
    _follow(job_id, path, client)


def _copy(path: Path, offset: int) -> int:
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    if data:
        click.echo(data.decode(errors="replace"), nl=False)
    return offset + len(data)


def _follow(job_id: str, path: Path, client: SlurmClient) -> None:
    from hpcplat.watcher import Watcher

    watcher = Watcher.shared(client)
    watcher.follow([job_id])
    offset = 0
    while True:
        if path.exists():
            offset = _copy(path, offset)
        watcher.refresh()
        if watcher.done(job_id):
            if path.exists():
                _copy(path, offset)
            info = watcher.info(job_id)
            click.echo(f"hpcplat: job {job_id} ended: {info.state.value if info else 'UNKNOWN'}", err=True)
            return
        time.sleep(0.5)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("job_ids", nargs=-1, required=True)
def cancel(job_ids: tuple[str, ...]) -> None:
    """Cancel jobs (yours; Slurm refuses other people's)."""
    ids = _check_ids(job_ids)
    client = _client()
    find_jobs(client, ids)  # unknown ids: exit 2, nothing cancelled
    try:
        client.cancel(ids)
    except SlurmError as exc:
        raise _refusal(exc, ids) from None
    click.echo(f"Cancelled {', '.join(ids)}")


def _refusal(exc: SlurmError, ids: Sequence[str]) -> HpcplatError:
    text = (exc.stderr or exc.message).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if "permission denied" in text.lower() or "access" in text.lower():
        return SlurmError(
            "Slurm refused to cancel: " + "; ".join(lines),
            argv=exc.argv,
            returncode=exc.returncode,
            stderr=exc.stderr,
            hint="you can only cancel your own jobs; ask the job's owner or an administrator",
        )
    return SlurmError(
        f"Slurm refused to cancel {', '.join(ids)}: " + "; ".join(lines),
        argv=exc.argv,
        returncode=exc.returncode,
        stderr=exc.stderr,
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 1).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def wait(job_ids: tuple[str, ...], timeout: float | None, quiet: bool) -> None:
    """Wait for jobs to finish; exit 0 if all completed, exit 1 if any failed or --timeout passed first
    (the jobs then keep running).

    One squeue call per refresh for all the jobs (plus sacct for ended ones), backing off to 30 s.
    """
    from hpcplat.watcher import Watcher

    ids = _check_ids(job_ids)
    client = _client()
    find_jobs(client, ids)
    watcher = Watcher.shared(client)
    progress = Progress(ids, enabled=not quiet)
    try:
        final = watcher.wait(ids, timeout=timeout, on_cycle=progress.update)
    except TimeoutError as exc:
        progress.close()
        raise HpcplatError(str(exc), hint="the jobs keep running; wait again or cancel them") from None
    progress.update(final)
    progress.close()
    failed = {j: i for j, i in final.items() if i is None or i.state is not JobState.COMPLETED}
    for job_id, info in final.items():
        state = info.state.value if info else "UNKNOWN"
        extra = f" (exit {info.exit_code})" if info is not None and info.exit_code else ""
        reason = f": {info.reason}" if info is not None and info.state is JobState.UNKNOWN else ""
        click.echo(f"{job_id} {state}{extra}{reason}")
    if failed:
        sys.exit(1)


class Progress:
    """A one-line live summary (rewritten in place on a terminal, printed on change otherwise)."""

    def __init__(self, ids: Sequence[str], *, enabled: bool = True) -> None:
        self.ids = list(ids)
        self.enabled = enabled
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last = ""

    def update(self, snapshot: Any) -> None:
        if not self.enabled:
            return
        counts: dict[str, int] = {}
        for job_id in self.ids:
            info = snapshot.get(job_id)
            state = info.state.value if info is not None else "UNSEEN"
            counts[state] = counts.get(state, 0) + 1
        done = sum(n for s, n in counts.items() if s in {st.value for st in JobState if st.is_terminal})
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        elapsed = int(time.monotonic() - self.started)
        line = f"[{elapsed // 60:d}:{elapsed % 60:02d}] {done}/{len(self.ids)} done: {summary}"
        if self.tty:
            click.echo("\r" + line.ljust(len(self.last)), nl=False, err=True)
        elif summary != self.last.split("done: ", 1)[-1]:
            click.echo(line, err=True)
        self.last = line

    def close(self) -> None:
        if self.enabled and self.tty and self.last:
            click.echo("", err=True)


__all__ = ["cancel", "job_options", "jobs", "logs", "show", "spec_from_options", "submit", "wait"]
