"""The Slurm backend that runs Slurm's own commands with fixed, parsable output formats.

Every call goes through :func:`hpcplat.runner.run` with a deadline and raises
:class:`hpcplat.errors.SlurmError` (command, exit code and Slurm's stderr) on failure. Queries about
many jobs are ONE call (``squeue --jobs=a,b,c``), never one call per job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from hpcplat.errors import SlurmError
from hpcplat.runner import CommandResult, Runner, run
from hpcplat.slurm.models import (
    Association,
    JobInfo,
    NodeInfo,
    PartitionInfo,
    QosInfo,
    SubmitResult,
    UsageRecord,
)
from hpcplat.slurm.parse import expand_hostlist, gres_gpu_count, parse_gpu_indices, parse_show_job
from hpcplat.slurm.state import parse_job_reason, parse_job_state, parse_node_state

SEP = "\x1f"
"""Field separator of our squeue/sacct formats: a control character no job name can contain."""

DEFAULT_TIMEOUT_S = float(os.environ.get("HPCPLAT_SLURM_TIMEOUT", "30"))

# (field, squeue %-code). %i gives array tasks as 12_3 or 12_[4-9%2].
SQUEUE_FIELDS: tuple[tuple[str, str], ...] = (
    ("job_id", "%i"),
    ("name", "%j"),
    ("user", "%u"),
    ("state", "%T"),
    ("reason", "%r"),
    ("partition", "%P"),
    ("account", "%a"),
    ("qos", "%q"),
    ("nodes", "%N"),
    ("num_nodes", "%D"),
    ("submit_time", "%V"),
    ("start_time", "%S"),
    ("end_time", "%e"),
    ("time_limit", "%l"),
    ("work_dir", "%Z"),
    ("comment", "%k"),
    ("tres", "%b"),
    ("command", "%o"),
)
SQUEUE_FORMAT = SEP.join(code for _, code in SQUEUE_FIELDS)

SACCT_FIELDS: tuple[str, ...] = (
    "JobID",
    "JobName",
    "User",
    "State",
    "Reason",
    "Partition",
    "Account",
    "QOS",
    "NodeList",
    "NNodes",
    "ExitCode",
    "Submit",
    "Start",
    "End",
    "ElapsedRaw",
    "Timelimit",
    "AllocTRES",
    "WorkDir",
    "ReqTRES",
    "Comment",
)
"""New fields go at the end: older recorded output (tests/data/slurm) still parses. ``Comment`` is
stored by slurmdbd only with ``AccountingStoreFlags=job_comment`` (the sandbox sets it); it is how a
finished job's run is found (``hpcplat:<run id>``) once the job has left squeue."""

_SLURM_TIME = "%Y-%m-%dT%H:%M:%S"
_PATH_KEYS = ("WorkDir", "StdOut", "StdErr", "StdIn")


def parse_time(text: str) -> datetime | None:
    """Slurm's ``2026-11-23T17:30:00``; ``Unknown``, ``N/A``, ``None`` and empty give None."""
    text = text.strip()
    if not text or text in {"Unknown", "N/A", "None", "(null)"}:
        return None
    try:
        return datetime.strptime(text, _SLURM_TIME)
    except ValueError:
        return None


def parse_tres(text: str) -> dict[str, str]:
    """``cpu=4,mem=8G,gres/gpu=2`` → dict; also squeue's ``gres:gpu:2`` / ``gres/gpu:2`` form."""
    result: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part or part in {"N/A", "(null)"}:
            continue
        if "=" in part:
            key, value = part.split("=", 1)
            result[key] = value
            continue
        # squeue %b: "gres/gpu:2", "gres:gpu:2" or "gres/gpu:tesla:2"
        pieces = part.replace("gres/", "gres:").split(":")
        if len(pieces) >= 3 and pieces[0] == "gres":
            result[f"gres/{pieces[1]}"] = pieces[-1]
    return result


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """``2:0`` → (2, 0); ``0:9`` → (0, 9) killed by signal 9."""
    if ":" not in text:
        return None, None
    code, sig = text.split(":", 1)
    try:
        return int(code), int(sig)
    except ValueError:
        return None, None


def parse_key_values(line: str, *, trailing: str | None = None) -> dict[str, str]:
    """One ``scontrol -o show ...`` record: ``Key=Value Key2=Value``.

    ``trailing`` names a field whose value may hold spaces and runs to the end of the line (a
    node's ``Reason``); job records have no such field at their end.
    """
    result: dict[str, str] = {}
    if trailing and f" {trailing}=" in line:
        line, rest = line.split(f" {trailing}=", 1)
        result[trailing] = rest.strip()
    for match in re.finditer(r"(\S+?)=(\S*)", line):
        result.setdefault(match.group(1), match.group(2))
    return result


def parse_minutes(text: str) -> int | None:
    """Slurm durations (``1-00:00:00``, ``30:00``, ``45``, ``UNLIMITED``) in whole minutes."""
    text = text.strip()
    if not text or text.upper() in {"UNLIMITED", "INFINITE", "NONE", "N/A"}:
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = 0, parts[0], 0
    if days and len(parts) == 1:  # "1-2" means 1 day 2 hours
        hours, minutes = parts[0], 0
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _times(count: str, nodes: int) -> str:
    """A per-node count for ``nodes`` nodes (``"2"``, 3 → ``"6"``); other values stay as they are."""
    return str(int(count) * nodes) if count.isdigit() and nodes > 1 else count


def _comment(text: str) -> str:
    return "" if text.strip() in {"(null)", "N/A"} else text


class CliBackend:
    """:class:`hpcplat.slurm.client.SlurmClient` over sbatch, squeue, sacct, scontrol, sacctmgr."""

    backend_name = "cli"

    def __init__(
        self,
        *,
        runner: Runner = run,
        timeout: float = DEFAULT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._run = runner
        self.timeout = timeout
        self.env = dict(env) if env is not None else None

    def _call(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        merged: dict[str, str] | None = None
        if self.env is not None or env is not None:
            merged = dict(self.env or {})
            merged.update(env or {})
        return self._run(
            argv, timeout=self.timeout, input=input, env=merged, cwd=cwd, check=check, error=SlurmError
        )

    # -- jobs ------------------------------------------------------------------------------------

    def submit(
        self,
        script: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        test_only: bool = False,
    ) -> SubmitResult:
        argv = ["sbatch", "--parsable", *args]
        if test_only:
            argv.append("--test-only")
        result = self._call(argv, input=script, cwd=cwd, env=env)
        if test_only:
            return SubmitResult(job_id="")
        text = result.stdout.strip().splitlines()
        if not text or not text[-1].split(";")[0].isdigit():
            raise SlurmError(
                f"sbatch printed no job id: {result.stdout!r} {result.stderr!r}",
                argv=argv,
                returncode=result.returncode,
                stdout=result.stdout,
                stderr=result.stderr,
            )
        job_id, _, cluster = text[-1].partition(";")
        return SubmitResult(job_id=job_id, cluster=cluster or None)

    def jobs(self, job_ids: Iterable[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        argv = ["squeue", "--noheader", "--array", f"--format={SQUEUE_FORMAT}"]
        if job_ids is not None:
            ids = sorted({str(j) for j in job_ids})
            if not ids:
                return []
            argv.append(f"--jobs={','.join(ids)}")
            argv.append("--states=all")
        if user:
            argv.append(f"--user={user}")
        try:
            result = self._call(argv)
        except SlurmError as exc:
            # squeue refuses the whole call when every id in --jobs is unknown.
            if job_ids is not None and "Invalid job id" in exc.stderr:
                return []
            raise
        return [self._job_from_squeue(line) for line in result.stdout.splitlines() if line.strip()]

    @staticmethod
    def _job_from_squeue(line: str) -> JobInfo:
        values = dict(zip((name for name, _ in SQUEUE_FIELDS), line.split(SEP), strict=False))
        get = values.get
        num_nodes = _int(get("num_nodes", "0"))
        # %b is TRES per node (gres:gpu:2); a JobInfo holds the whole job's, like sacct's AllocTRES.
        tres = {key: _times(value, num_nodes) for key, value in parse_tres(get("tres", "")).items()}
        state = parse_job_state(get("state", ""))
        return JobInfo(
            job_id=get("job_id", ""),
            name=get("name", ""),
            user=get("user", ""),
            state=state,
            raw_state=get("state", ""),
            reason=parse_job_reason(get("reason", ""), state, has_nodes=bool(get("nodes"))),
            partition=get("partition", ""),
            account=get("account", ""),
            qos=get("qos", ""),
            nodes=get("nodes", ""),
            num_nodes=num_nodes,
            submit_time=parse_time(get("submit_time", "")),
            start_time=parse_time(get("start_time", "")),
            end_time=parse_time(get("end_time", "")),
            time_limit=get("time_limit", ""),
            tres=tres,
            work_dir=get("work_dir", ""),
            comment=_comment(get("comment", "")),
        )

    def history(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        user: str | None = None,
        since: datetime | None = None,
        all_attempts: bool = False,
    ) -> list[JobInfo]:
        argv = [
            "sacct",
            "-X",
            "--noheader",
            "--parsable2",
            f"--delimiter={SEP}",
            f"--format={','.join(SACCT_FIELDS)}",
        ]
        if all_attempts:
            argv.append("--duplicates")
        if job_ids is not None:
            ids = sorted({str(j) for j in job_ids})
            if not ids:
                return []
            argv.append(f"--jobs={','.join(ids)}")
        if user:
            argv.append(f"--user={user}")
        else:
            argv.append("--allusers")
        if since is not None:
            argv.append(f"--starttime={since.strftime(_SLURM_TIME)}")
        result = self._call(argv)
        jobs: list[JobInfo] = []
        restarts: dict[str, int] = {}
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            info = self._job_from_sacct(line)
            count = restarts.get(info.job_id, -1) + 1
            restarts[info.job_id] = count
            if all_attempts and count:
                info = _replace(info, restarts=count)
            jobs.append(info)
        return jobs

    @staticmethod
    def _job_from_sacct(line: str) -> JobInfo:
        values = dict(zip(SACCT_FIELDS, line.split(SEP), strict=False))
        get = values.get
        code, sig = parse_exit_code(get("ExitCode", ""))
        elapsed = get("ElapsedRaw", "")
        state = parse_job_state(get("State", ""))
        nodes = get("NodeList", "") if get("NodeList") != "None assigned" else ""
        return JobInfo(
            job_id=get("JobID", ""),
            name=get("JobName", ""),
            user=get("User", ""),
            state=state,
            raw_state=get("State", ""),
            reason=parse_job_reason(get("Reason", ""), state, has_nodes=bool(nodes)),
            partition=get("Partition", ""),
            account=get("Account", ""),
            qos=get("QOS", ""),
            nodes=nodes,
            num_nodes=_int(get("NNodes", "0")),
            exit_code=code,
            signal=sig,
            submit_time=parse_time(get("Submit", "")),
            start_time=parse_time(get("Start", "")),
            end_time=parse_time(get("End", "")),
            elapsed_s=int(elapsed) if elapsed.isdigit() else None,
            time_limit=get("Timelimit", ""),
            # Nothing allocated (pending, or cancelled before it started): what it asked for.
            tres=parse_tres(get("AllocTRES", "")) or parse_tres(get("ReqTRES", "")),
            work_dir=get("WorkDir", ""),
            comment=_comment(get("Comment", "")),
        )

    def cancel(
        self,
        job_ids: Sequence[str],
        *,
        signal: str | None = None,
        batch_only: bool = False,
        full: bool = False,
    ) -> None:
        if not job_ids:
            return
        argv = ["scancel", "--verbose"]  # without it, scancel is silent about unknown ids
        if signal:
            argv.append(f"--signal={signal}")
        if batch_only:
            argv.append("--batch")
        elif full:
            argv.append("--full")
        argv.extend(str(j) for j in job_ids)
        result = self._call(argv, check=False)
        # scancel may exit 0 yet print errors (an unknown id, someone else's job); an id that has
        # already finished is not a problem for a cancel.
        problems = [
            line.strip()
            for line in result.stderr.splitlines()
            if "error:" in line and "already completing or completed" not in line
        ]
        if problems or (result.returncode != 0 and "already completing or completed" not in result.stderr):
            raise SlurmError(
                f"scancel refused: {'; '.join(problems) or result.stderr.strip()}",
                argv=argv,
                returncode=result.returncode,
                stderr=result.stderr,
            )

    def signal(self, job_id: str, signal: str, *, batch_only: bool = False, full: bool = False) -> None:
        self.cancel([job_id], signal=signal, batch_only=batch_only, full=full)

    def requeue(self, job_ids: Sequence[str], *, hold: bool = False) -> None:
        if not job_ids:
            return
        self._call(["scontrol", "requeuehold" if hold else "requeue", ",".join(str(j) for j in job_ids)])

    def job_details(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -d JOB`` as a dict (Requeue, Restarts, BatchFlag, Command...), read
        from the multi-line form (:func:`hpcplat.slurm.parse.parse_show_job`)."""
        result = self._call(["scontrol", "show", "job", "-d", str(job_id)])
        return parse_show_job(result.stdout)

    def job_paths(self, job_id: str) -> dict[str, str]:
        """``WorkDir``, ``StdOut``, ``StdErr`` and ``StdIn`` of one job as the controller holds
        them (``%j`` and the like already expanded); ``{}`` once Slurm has forgotten the job.

        Read from the multi-line ``scontrol show job``, where each of these ends its line, so a
        path with spaces arrives whole (the one-line ``-o`` form cannot be split reliably)."""
        result = self._call(["scontrol", "show", "job", str(job_id)], check=False)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return {}
            raise SlurmError(
                f"scontrol show job {job_id} failed: {result.stderr.strip()}",
                argv=["scontrol", "show", "job", str(job_id)],
                returncode=result.returncode,
                stderr=result.stderr,
            )
        record = parse_show_job(result.stdout)  # the first record (an array's base id lists every task)
        return {key: record[key] for key in _PATH_KEYS if key in record}

    def job_gpu_indices(self, job_id: str) -> dict[str, list[int]]:
        result = self._call(["scontrol", "show", "job", "-d", str(job_id)])
        return parse_gpu_indices(result.stdout)

    # -- cluster ---------------------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        result = self._call(["scontrol", "-o", "show", "node"])
        nodes = []
        for line in result.stdout.splitlines():
            if not line.startswith("NodeName="):
                continue
            kv = parse_key_values(line, trailing="Reason")
            alloc = parse_tres(kv.get("AllocTRES", ""))
            nodes.append(
                NodeInfo(
                    name=kv.get("NodeName", ""),
                    status=parse_node_state(kv.get("State", "UNKNOWN")),
                    cpus=_int(kv.get("CPUTot", "0")),
                    memory_mb=_int(kv.get("RealMemory", "0")),
                    gpus=gres_gpu_count(kv.get("Gres", "")),
                    gpus_used=_int(alloc.get("gres/gpu", "0")),
                    partitions=tuple(p for p in kv.get("Partitions", "").split(",") if p),
                    reason=kv.get("Reason", ""),
                    address=kv.get("NodeAddr", ""),
                )
            )
        return nodes

    def update_node(self, node: str, *, state: str, reason: str | None = None) -> None:
        argv = ["scontrol", "update", f"nodename={node}", f"state={state}"]
        if reason is not None:
            argv.append(f"reason={reason}")
        self._call(argv)

    def partitions(self) -> list[PartitionInfo]:
        result = self._call(["scontrol", "-o", "show", "partition"])
        node_gpus = {n.name: n.gpus for n in self.nodes()}
        parts = []
        for line in result.stdout.splitlines():
            if not line.startswith("PartitionName="):
                continue
            kv = parse_key_values(line)
            node_names = expand_hostlist(kv.get("Nodes", ""))
            allowed = kv.get("AllowQos", "ALL")
            parts.append(
                PartitionInfo(
                    name=kv["PartitionName"],
                    nodes=kv.get("Nodes", ""),
                    max_time_minutes=parse_minutes(kv.get("MaxTime", "UNLIMITED")),
                    default=kv.get("Default", "NO") == "YES",
                    state=kv.get("State", "UP"),
                    allowed_qos=() if allowed == "ALL" else tuple(allowed.split(",")),
                    priority_tier=_int(kv.get("PriorityTier", "1"), 1),
                    max_gpus_per_node=max((node_gpus.get(n, 0) for n in node_names), default=0),
                )
            )
        return parts

    def qos(self) -> list[QosInfo]:
        result = self._call(
            [
                "sacctmgr",
                "--noheader",
                "--parsable2",
                "show",
                "qos",
                "format=Name,Priority,Preempt,PreemptMode,GrpTRES,MaxWall,MaxTRES,MaxTRESPerNode,"
                "MaxTRESPU,MaxTRESPA",
            ]
        )
        items = []
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            name, prio, preempt, mode, grp, maxwall, max_tres, per_node, per_user, per_account = (
                line.split("|") + [""] * 10
            )[:10]
            items.append(
                QosInfo(
                    name=name,
                    priority=_int(prio),
                    preempt=tuple(p for p in preempt.split(",") if p),
                    preempt_mode=mode,
                    grp_tres=grp,
                    max_wall_minutes=parse_minutes(maxwall),
                    max_tres=max_tres,
                    max_tres_per_node=per_node,
                    max_tres_per_user=per_user,
                    max_tres_per_account=per_account,
                )
            )
        return items

    def associations(self, *, user: str | None = None, accounts: Sequence[str] = ()) -> list[Association]:
        argv = [
            "sacctmgr",
            "--noheader",
            "--parsable2",
            "show",
            "associations",
            "format=Account,User,QOS,DefaultQOS,GrpTRES,ParentName,MaxTRES,MaxTRESPerNode,MaxWall",
        ]
        where = ([f"user={user}"] if user else []) + ([f"account={','.join(accounts)}"] if accounts else [])
        if where:
            argv.extend(["where", *where])
        result = self._call(argv)
        items = []
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            account, usr, qos, defqos, grp, parent, max_tres, per_node, maxwall = (
                line.split("|") + [""] * 9
            )[:9]
            items.append(
                Association(
                    account=account,
                    user=usr,
                    qos=tuple(q for q in qos.split(",") if q),
                    default_qos=defqos,
                    grp_tres=grp,
                    parent=parent,
                    max_tres=max_tres,
                    max_tres_per_node=per_node,
                    max_wall_minutes=parse_minutes(maxwall) if maxwall else None,
                )
            )
        return items

    def usage(
        self,
        *,
        since: datetime,
        until: datetime | None = None,
        accounts: Sequence[str] = (),
        users: Sequence[str] = (),
    ) -> list[UsageRecord]:
        argv = [
            "sacct",
            "-X",
            "--noheader",
            "--parsable2",
            f"--delimiter={SEP}",
            "--format=JobID,User,Account,QOS,State,ElapsedRaw,AllocTRES,Start,End",
            f"--starttime={since.strftime(_SLURM_TIME)}",
        ]
        if until is not None:
            argv.append(f"--endtime={until.strftime(_SLURM_TIME)}")
        if accounts:
            argv.append(f"--accounts={','.join(accounts)}")
        if users:
            argv.append(f"--user={','.join(users)}")
        else:
            argv.append("--allusers")
        records = []
        for line in self._call(argv).stdout.splitlines():
            if not line.strip():
                continue
            job, usr, account, qos, state, elapsed, tres, start, end = (line.split(SEP) + [""] * 9)[:9]
            records.append(
                UsageRecord(
                    job_id=job,
                    user=usr,
                    account=account,
                    qos=qos,
                    state=parse_job_state(state),
                    elapsed_s=_int(elapsed),
                    alloc_tres=parse_tres(tres),
                    start_time=parse_time(start),
                    end_time=parse_time(end),
                )
            )
        return records

    def config(self) -> dict[str, str]:
        result = self._call(["scontrol", "show", "config"])
        config: dict[str, str] = {}
        for line in result.stdout.splitlines():
            if " = " in line:
                key, value = line.split(" = ", 1)
                config[key.strip()] = value.strip()
        return config


def _replace(info: JobInfo, **changes: object) -> JobInfo:
    from dataclasses import replace

    return replace(info, **changes)  # type: ignore[arg-type]
