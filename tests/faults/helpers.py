"""What the fault-injection scenarios share: a harness that submits through the real submission
service to the shared sandbox and cleans up after itself, the deterministic workload, daemon
kill/restore, process scans for orphans, and the per-trial outcome recording that regenerates
``docs/fault-injection.md`` (see :mod:`tests.faults.report`).

Every scenario module imports the ``fault_report`` fixture from here (no conftest needed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hpcplat.errors import HpcplatError
from hpcplat.runner import CommandResult, run
from hpcplat.sandbox import Sandbox
from hpcplat.siteconfig import SiteConfig
from hpcplat.siteconfig import load as load_config
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.models import SubmitResult
from hpcplat.spec import JobSpec
from hpcplat.spec.model import Resources
from tests.faults import report

WORKLOAD = Path(__file__).with_name("workload.py")
REPEATS = 2
"""How many times each scenario is tried (the ``rep`` parameter)."""
T = TypeVar("T")


# -- waiting ---------------------------------------------------------------------------------------


def wait_for(
    what: str,
    check: Callable[[], T],
    *,
    timeout: float = 90.0,
    every: float = 0.3,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something true; fail with ``describe()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"; {describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {value!r}){extra}")
        time.sleep(every)


def eventually(check: Callable[[], T], done: Callable[[T], bool], *, timeout: float, every: float = 0.5) -> T:
    """Poll ``check`` until ``done(value)`` or ``timeout``; returns the last value either way."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(every)


# -- the job's own progress ----------------------------------------------------------------------------


class Events:
    """The JSON lines a workload appends to its ``--events`` file (all attempts)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def of(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.all() if e["event"] == event and all(e.get(k) == v for k, v in match.items())]

    def wait(self, event: str, *, timeout: float = 90.0, **match: Any) -> dict[str, Any]:
        found = wait_for(
            f"event {event!r} {match or ''} in {self.path}",
            lambda: self.of(event, **match),
            timeout=timeout,
            every=0.1,
            describe=lambda: (
                f"events so far: {[(e['event'], e.get('step'), e['restart']) for e in self.all()]}"
            ),
        )
        return found[-1]


def workload_command(
    *,
    steps: int,
    events: Path,
    result: Path | None = None,
    step_sleep: float = 0.2,
    checkpoint_every: int = 5,
    resume_delay: float = 0.0,
    pad_bytes: int = 0,
    file_size_limit: int = 0,
) -> tuple[str, ...]:
    argv = [
        sys.executable,
        str(WORKLOAD),
        "--steps",
        str(steps),
        "--step-sleep",
        str(step_sleep),
        "--checkpoint-every",
        str(checkpoint_every),
        "--events",
        str(events),
    ]
    if result is not None:
        argv += ["--result", str(result)]
    if resume_delay:
        argv += ["--resume-delay", str(resume_delay)]
    if pad_bytes:
        argv += ["--pad-bytes", str(pad_bytes)]
    if file_size_limit:
        argv += ["--file-size-limit", str(file_size_limit)]
    return tuple(argv)


# -- Slurm clients -------------------------------------------------------------------------------------


class PlacedClient(CliBackend):
    """The real CLI backend, adding placement options (``-w``/``--exclude``...) to every sbatch.

    The job spec has no node list, and these scenarios need to know (or choose) where a job runs on
    a sandbox shared with other people's tests."""

    def __init__(self, env: Mapping[str, str], extra_args: Sequence[str] = ()) -> None:
        super().__init__(env=env)
        self.extra_args = list(extra_args)
        self.submitted: list[str] = []

    def submit(
        self,
        script: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        test_only: bool = False,
    ) -> SubmitResult:
        result = super().submit(script, args=[*self.extra_args, *args], env=env, cwd=cwd, test_only=test_only)
        if result.job_id:
            self.submitted.append(result.job_id)
        return result


# -- the harness ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class JobState:
    state: str
    nodes: str
    restarts: int
    reason: str


class Harness:
    """Submits to the shared sandbox with a private catalog and job root; cancels what it submitted."""

    def __init__(self, sandbox: Sandbox, tmp: Path, *, catalog_url: str | None = None) -> None:
        self.sandbox = sandbox
        self.tmp = tmp
        tmp.chmod(0o755)
        self.env = sandbox.env()
        self.tag = f"fi-{uuid.uuid4().hex[:6]}"
        self.catalog_url = catalog_url or f"sqlite:///{tmp / 'catalog.db'}"
        self.config: SiteConfig = dataclasses.replace(
            load_config(self.env), catalog_url=self.catalog_url, job_root=str(tmp / "jobs")
        )
        self.client = PlacedClient(self.env)
        self.job_ids: list[str] = []
        self._catalog: Any = None

    # -- Slurm ------------------------------------------------------------------------------------

    def slurm(self, *argv: str, check: bool = True, timeout: float = 30.0) -> CommandResult:
        return run(list(argv), timeout=timeout, env=self.env, check=check)

    def job(self, job_id: str) -> JobState | None:
        """The job as ``squeue`` sees it (None when squeue no longer lists it)."""
        out = self.slurm(
            "squeue", "-h", "-j", job_id, "--states=all", "-o", "%T|%N|%r", check=False
        ).stdout.strip()
        if not out:
            return None
        state, nodes, reason = [*out.splitlines()[0].split("|"), "", ""][:3]
        detail = self.slurm("scontrol", "-o", "show", "job", job_id, check=False).stdout
        restarts = 0
        for token in detail.split():
            if token.startswith("Restarts="):
                restarts = int(token.partition("=")[2])
        return JobState(state, nodes, restarts, reason)

    def wait_running(self, job_id: str, timeout: float = 90.0) -> JobState:
        def running() -> JobState | None:
            current = self.job(job_id)
            return current if current is not None and current.state == "RUNNING" else None

        found = wait_for(f"job {job_id} to run", running, timeout=timeout)
        assert found is not None
        return found

    def final_state(self, job_id: str, timeout: float = 120.0) -> str:
        """Wait until the job ended; its state from ``sacct``."""

        terminal = {
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "BOOT_FAIL",
            "DEADLINE",
        }

        def ended() -> str:
            current = self.job(job_id)
            if current is not None and current.state not in terminal:
                return ""
            # slurmdbd may lag slurmctld by a moment (still RUNNING there): wait for it too.
            state = self.accounting_state(job_id)
            return state if state in terminal else ""

        return wait_for(
            f"job {job_id} to end", ended, timeout=timeout, every=0.5, describe=lambda: str(self.job(job_id))
        )

    def accounting_state(self, job_id: str) -> str:
        out = self.slurm("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State", check=False).stdout
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        return lines[-1].split()[0] if lines else ""

    def cancel(self, *job_ids: str) -> None:
        if job_ids:
            self.slurm("scancel", *job_ids, check=False)

    def cleanup(self) -> None:
        ids = sorted(set(self.job_ids) | set(self.client.submitted))
        if ids:
            self.cancel(*ids)
        for held in (self._catalog,):
            if held is not None:
                held.close()

    # -- submission -------------------------------------------------------------------------------

    def spec(
        self,
        command: Sequence[str],
        *,
        name: str = "job",
        tier: str = "normal",
        gpus: int = 1,
        time_min: int = 10,
        checkpoint_dir: str | None = None,
        max_requeues: int | None = None,
    ) -> JobSpec:
        return JobSpec(
            command=tuple(command),
            name=f"{self.tag}-{name}",
            tier=tier,
            resources=Resources(gpus_per_node=gpus, time_limit_min=time_min),
            workdir=str(self.tmp),
            checkpoint_dir=checkpoint_dir,
            max_requeues=max_requeues,
        )

    def submit(self, spec: JobSpec, *, sbatch_args: Sequence[str] = ()) -> Any:
        """``hpcplat.submission.submit`` with this harness's configuration and catalog."""
        from hpcplat.submission import submit

        client = PlacedClient(self.env, sbatch_args)
        try:
            done = submit(spec, client=client, config=self.config, catalog=self.catalog())
        finally:
            self.job_ids.extend(client.submitted)
        return done

    def catalog(self) -> Any:
        if self._catalog is None:
            from hpcplat.catalog import Catalog

            self._catalog = Catalog.open(self.catalog_url)
        return self._catalog

    def reconcile(self, **kwargs: Any) -> Any:
        return self.catalog().reconcile(self.client, **kwargs)

    def job_dir(self, job_id: str) -> Path:
        return self.config.job_root_path() / job_id

    def output(self, job_id: str) -> str:
        path = self.config.job_root_path() / f"{job_id}.out"
        return path.read_text(errors="replace") if path.exists() else f"(no output file {path})"


def site_file(h: Harness, extra: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """The sandbox's site TOML with this harness's catalog and job root (for subprocesses), plus
    ``extra`` tables (``{"node_agent": {...}, "node_agent.idle": {...}}``)."""
    import tomllib

    data = tomllib.loads(Path(h.env["HPCPLAT_CONFIG"]).read_text())
    data.setdefault("catalog", {})["url"] = h.catalog_url
    data.setdefault("submission", {})["job_root"] = h.config.job_root
    lines: list[str] = []

    def table(name: str, values: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, Mapping)}
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in scalars.items())
        lines.append("")
        for key, value in values.items():
            if isinstance(value, Mapping):
                table(f"{name}.{key}", value)

    for name, values in data.items():
        table(name, values)
    for name, values in (extra or {}).items():
        table(name, values)
    path = h.tmp / f"site-{uuid.uuid4().hex[:6]}.toml"
    path.write_text("\n".join(lines))
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


@contextlib.contextmanager
def harness(sandbox: Sandbox, tmp: Path, **kwargs: Any) -> Iterator[Harness]:
    h = Harness(sandbox, tmp, **kwargs)
    try:
        yield h
    finally:
        h.cleanup()


# -- daemons -------------------------------------------------------------------------------------------


def daemon_pid(sandbox: Sandbox, name: str) -> int:
    for daemon in sandbox.status().daemons:
        if daemon.name == name:
            assert daemon.pid is not None and daemon.alive, f"{name} is not running: {daemon}"
            return daemon.pid
    raise AssertionError(f"no daemon {name!r} in the sandbox")


def kill_daemon(sandbox: Sandbox, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
    """Signal one sandbox daemon by the pid of its pid file; wait until it is gone."""
    pid = daemon_pid(sandbox, name)
    os.kill(pid, sig)
    wait_for(f"{name} (pid {pid}) to exit", lambda: not _alive(pid), timeout=30, every=0.1)
    return pid


def restore(sandbox: Sandbox) -> None:
    """Bring every daemon of the shared sandbox back (``up`` starts only the missing ones)."""
    last: Exception | None = None
    for _ in range(3):
        try:
            status = sandbox.up()
            if all(d.alive for d in status.daemons):
                return
        except HpcplatError as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"could not restore the sandbox: {last}")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def job_processes(job_id: str, *, node: str | None = None, restart: int | None = None) -> list[int]:
    """Live processes whose environment names ``job_id`` (optionally: on ``node``, of attempt
    ``restart``): what would be an orphan once the job, or that attempt, is over."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        if env.get(b"SLURM_JOB_ID") != job_id.encode():
            continue
        if node is not None and env.get(b"SLURMD_NODENAME") != node.encode():
            continue
        if restart is not None and int(env.get(b"SLURM_RESTART_COUNT", b"0") or 0) != restart:
            continue
        if _alive(pid):
            found.append(pid)
    return sorted(found)


def node_state(h: Harness, node: str) -> str:
    out = h.slurm("sinfo", "-h", "-n", node, "-o", "%T", check=False).stdout.strip()
    return out.splitlines()[0] if out else ""


def free_node(h: Harness, gpus: int = 4, exclude: Sequence[str] = ()) -> str:
    """A node with ``gpus`` free GPUs now (prefer the idle ones), for pinning a job."""
    out = h.slurm("sinfo", "-h", "-N", "-p", "gpu", "-o", "%N %T").stdout
    states = {}
    for line in out.splitlines():
        name, _, state = line.partition(" ")
        states[name] = state.strip()
    alloc = h.slurm("squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%N %b").stdout
    used: dict[str, int] = {}
    for line in alloc.splitlines():
        nodes, _, gres = line.partition(" ")
        count = int(gres.rsplit(":", 1)[-1]) if gres.strip().startswith("gres") and gres[-1:].isdigit() else 0
        for n in _expand_nodes(nodes):
            used[n] = used.get(n, 0) + count
    candidates = [
        n
        for n, s in sorted(states.items(), key=lambda kv: (used.get(kv[0], 0), kv[0]))
        if n not in exclude and s in {"idle", "mixed"} and 4 - used.get(n, 0) >= gpus
    ]
    assert candidates, f"no node with {gpus} free GPUs: {states} {used}"
    return candidates[0]


def _expand_nodes(text: str) -> list[str]:
    text = text.strip()
    if "[" not in text:
        return [t for t in text.split(",") if t]
    prefix, _, rest = text.partition("[")
    out = []
    for part in rest.rstrip("]").split(","):
        lo, _, hi = part.partition("-")
        out += [f"{prefix}{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


# -- outcome recording ---------------------------------------------------------------------------------


_TMP = re.compile(r"/tmp/pytest-of-[^/]+/pytest-[^/]+/[^/\s']+/")


class Trial:
    """One try of one scenario: what was expected, what came back, whether it survived."""

    def __init__(self, scenario: str, rep: int) -> None:
        self.scenario = scenario
        self.rep = rep
        self.lost = 0
        self.duplicated = 0
        self.items = 0
        self.notes: list[str] = []
        self.started = time.monotonic()

    def count(self, what: str, *, expected: int, found: int, duplicated: int = 0) -> None:
        """``expected`` items of a kind should be there; ``found`` are (each at most once)."""
        self.items += expected
        self.lost += max(0, expected - found)
        self.duplicated += duplicated
        if found != expected or duplicated:
            self.note(f"{what}: expected {expected}, found {found}, duplicated {duplicated}")

    def note(self, text: str) -> None:
        self.notes.append(_TMP.sub("<tmp>/", text))


class FaultReport:
    """Outcomes of this session's trials; merged into docs/fault-injection.md at the end."""

    def __init__(self) -> None:
        self.trials: list[dict[str, Any]] = []
        self.started = time.time()

    @contextlib.contextmanager
    def trial(self, scenario: str, rep: int) -> Iterator[Trial]:
        assert scenario in report.SCENARIOS, f"add {scenario!r} to tests.faults.report.SCENARIOS"
        trial = Trial(scenario, rep)
        survived = False
        try:
            yield trial
            survived = trial.lost == 0 and trial.duplicated == 0
        except pytest.skip.Exception:
            raise
        except BaseException as exc:
            trial.note(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
            raise
        finally:
            self.trials.append(
                {
                    "scenario": scenario,
                    "rep": rep,
                    "survived": survived,
                    "items": trial.items,
                    "lost": trial.lost,
                    "duplicated": trial.duplicated,
                    "seconds": round(time.monotonic() - trial.started, 1),
                    "notes": trial.notes,
                }
            )

    def write(self) -> None:
        if self.trials:
            report.update(self.trials, session_seconds=time.time() - self.started)


_REPORT = FaultReport()


@pytest.fixture(scope="session")
def fault_report() -> Iterator[FaultReport]:
    """The session's outcome recorder; renders the report when the session ends."""
    yield _REPORT
    _REPORT.write()
