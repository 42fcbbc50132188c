"""``hpcplat submit | jobs | show | logs | cancel | wait``: thin commands over the submission
service, the Slurm client and the shared status watcher.

Exit codes: 0 success, 1 a job failed (or Slurm refused), 2 bad input (nothing submitted).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hpcplat.cli.common import check_ids as _check_ids
from hpcplat.cli.common import elapsed, find_jobs, info_dict, output_path, run_id_of
from hpcplat.cli.common import site_config as _config
from hpcplat.cli.common import slurm_client as _client
from hpcplat.cli.output import echo_json, echo_table
from hpcplat.cli.specflags import job_options, spec_from_options
from hpcplat.errors import HpcplatError, SlurmError, UsageError
from hpcplat.slurm.state import JobState, parse_job_id

if TYPE_CHECKING:
    from hpcplat.slurm.client import SlurmClient


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
        echo_json(
            {
                "job_id": result.job_id,
                "run_id": result.run_id,
                "output": result.output_path,
                "job_dir": result.job_dir,
                "tracked": result.tracked,
            },
            compact=True,
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
    from datetime import datetime, timedelta

    from hpcplat.siteconfig import current_user
    from hpcplat.spec import parse_time_minutes

    client = _client()
    user = None if all_users else current_user()
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
        echo_json([info_dict(r) for r in ordered])
        return
    if not ordered:
        click.echo("No jobs." + ("" if since else " (--history 1d shows finished ones)"))
        return
    rows = [
        [
            r.job_id,
            r.name[:30],
            r.state.value,
            r.qos or None,
            r.partition,
            r.num_nodes or None,
            r.gpus or None,
            elapsed(r),
            r.nodes or (f"({r.reason})" if r.reason else None),
            run_id_of(r)[:8] or None,
        ]
        for r in ordered
    ]
    echo_table(
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
        rows,
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
        echo_json(data)
        return
    labels = {key: _SHOW_LABELS.get(key, key) for key in data}
    width = max(len(label) for label in labels.values())
    for key, value in data.items():
        if value not in (None, "", 0) or key in ("job_id", "state"):
            click.echo(f"{labels[key].ljust(width)}  {value}")


# Labels of `show` where the JSON key alone does not say what the number is.
_SHOW_LABELS = {"gpus": "total_gpus"}


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
    from hpcplat.slurm.watcher import Watcher

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

    With an hpcplat server (the site file's [server]), jobs hpcplat submitted are followed in the
    catalog the server keeps in step with Slurm: no Slurm call at all. Otherwise one squeue call per
    refresh for all the jobs (plus sacct for ended ones), backing off to 30 s.
    """
    from hpcplat.slurm.watcher import Watcher

    ids = _check_ids(job_ids)
    progress = Progress(ids, enabled=not quiet)
    try:
        final: dict[str, Any] | None = _wait_on_server(ids, timeout, progress)
        if final is None:
            client = _client()
            find_jobs(client, ids)
            final = Watcher.shared(client).wait(ids, timeout=timeout, on_cycle=progress.update)
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


@dataclass(frozen=True)
class _Recorded:
    """A job as the server's catalog records it (what ``wait`` prints and ``Progress`` counts)."""

    state: JobState
    exit_code: int | None
    reason: str
    done: bool


_MAYBE_REQUEUED = (JobState.PREEMPTED, JobState.NODE_FAIL)
_TRACKED_RUNS = ("QUEUED", "RUNNING", "REQUEUED")
SERVER_POLL_S = (0.5, 5.0)
"""``wait`` on the server: first and longest pause between polls (the pause grows by half)."""


def _server_states(client: Any, ids: Sequence[str]) -> dict[str, _Recorded]:
    from urllib.parse import urlencode

    out = {}
    for j in client.get("/api/v1/jobs?" + urlencode({"ids": ",".join(ids)})):
        state = JobState(j["state"])
        done = state.is_terminal and (state not in _MAYBE_REQUEUED or j["run_status"] not in _TRACKED_RUNS)
        out[j["job_id"]] = _Recorded(state, j["exit_code"], j["reason"], done)
    return out


def _wait_on_server(
    ids: Sequence[str], timeout: float | None, progress: Progress
) -> dict[str, _Recorded] | None:
    """Follow the jobs in the server's catalog until all are done; ``None`` when the server is not
    configured or does not answer, or when it does not know one of the jobs (not submitted by
    hpcplat): the caller then asks Slurm."""
    from hpcplat.cli.common import from_server

    deadline = None if timeout is None else time.monotonic() + timeout
    pause = SERVER_POLL_S[0]
    while True:
        seen = from_server(None, lambda client: _server_states(client, ids))
        if seen is None or any(j not in seen for j in ids):
            return None
        progress.update(seen)
        if all(seen[j].done for j in ids):
            return {j: seen[j] for j in ids}
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                pending = [f"{j} ({seen[j].state.value})" for j in ids if not seen[j].done]
                raise TimeoutError(f"still not finished after {timeout:g} s: {', '.join(pending)}")
            pause = min(pause, left)
        time.sleep(pause)
        pause = min(pause * 1.5, SERVER_POLL_S[1])


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


__all__ = ["Progress", "cancel", "jobs", "logs", "show", "submit", "wait"]
