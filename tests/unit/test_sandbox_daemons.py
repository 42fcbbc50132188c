"""Daemon bookkeeping with real processes: pid files, ownership checks, start/stop deadlines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcplat.errors import SandboxError
from hpcplat.sandbox import daemons
from hpcplat.sandbox.daemons import Daemon, Ownership
from hpcplat.sandbox.processes import is_alive

SLEEPER = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, {handler}); print('ready', flush=True); "
    "time.sleep(60)"
)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def sleeper(
    spawned: list[subprocess.Popen[bytes]], marker: str, *, ignore_term: bool = False
) -> tuple[subprocess.Popen[bytes], tuple[str, ...]]:
    handler = "signal.SIG_IGN" if ignore_term else "signal.SIG_DFL"
    argv = (sys.executable, "-c", SLEEPER.format(handler=handler), marker)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    spawned.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"  # its SIGTERM handler is in place
    return proc, argv


def daemon_for(tmp_path: Path, argv: tuple[str, ...], marker: str) -> Daemon:
    return Daemon(
        name="sleeper",
        program=Path(argv[0]).name,
        argv=argv,
        pid_file=tmp_path / "sleeper.pid",
        log_file=tmp_path / "sleeper.log",
        marker=marker,
    )


def test_ownership_tells_ours_from_stale_foreign_and_recycled(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    proc, argv = sleeper(spawned, str(tmp_path))
    daemon = daemon_for(tmp_path, argv, str(tmp_path))
    assert daemon.ownership() == (Ownership.NONE, None)
    daemon.pid_file.write_text(f"{proc.pid}\n")
    daemons.wait_until(
        lambda: daemon.ownership()[0] is Ownership.OURS,
        deadline_s=5,
        on_timeout=lambda: SandboxError("never became ours"),
    )
    # The same program for another state directory: a different sandbox.
    other = daemon_for(tmp_path, (*argv[:-1], "/elsewhere"), "/elsewhere")
    other.pid_file.write_text(f"{proc.pid}\n")
    assert other.ownership() == (Ownership.FOREIGN, proc.pid)
    # Started by another name of the same interpreter (python3 vs python3.11): still ours.
    renamed = Daemon("sleeper", "python", argv, tmp_path / "sleeper.pid", tmp_path / "r.log", str(tmp_path))
    assert Path(argv[0]).name != "python" and renamed.ownership() == (Ownership.OURS, proc.pid)
    # A pid now used by another program: recycled.
    recycled = Daemon("x", "munged", ("munged",), tmp_path / "x.pid", tmp_path / "x.log", str(tmp_path))
    recycled.pid_file.write_text(f"{proc.pid}\n")
    assert recycled.ownership() == (Ownership.RECYCLED, proc.pid)
    # A pid that is gone: stale.
    proc.kill()
    proc.wait()
    assert daemon.ownership() == (Ownership.NONE, proc.pid)


def test_stop_terminates_waits_and_removes_the_pid_file(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    proc, argv = sleeper(spawned, str(tmp_path))
    daemon = daemon_for(tmp_path, argv, str(tmp_path))
    daemon.pid_file.write_text(str(proc.pid))
    daemons.wait_until(
        lambda: daemon.running_pid() == proc.pid, deadline_s=5, on_timeout=lambda: SandboxError("not started")
    )
    assert daemons.stop([daemon]) == [proc.pid]
    assert not is_alive(proc.pid)
    assert not daemon.pid_file.exists()


def test_stop_sends_sigkill_after_the_deadline(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemons, "STOP_DEADLINE_S", 0.5)
    proc, argv = sleeper(spawned, str(tmp_path), ignore_term=True)
    daemon = daemon_for(tmp_path, argv, str(tmp_path))
    daemon.pid_file.write_text(str(proc.pid))
    daemons.wait_until(
        lambda: daemon.running_pid() == proc.pid, deadline_s=5, on_timeout=lambda: SandboxError("not started")
    )
    daemons.stop([daemon])
    assert proc.wait(timeout=5) == -9


def test_stop_leaves_a_process_it_does_not_own_alone(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    proc, argv = sleeper(spawned, "/another/sandbox")
    daemon = daemon_for(tmp_path, (*argv[:-1], str(tmp_path)), str(tmp_path))
    daemon.pid_file.write_text(str(proc.pid))
    assert daemons.stop([daemon]) == []
    assert is_alive(proc.pid)


def test_a_daemon_that_fails_to_start_reports_its_log_tail_and_path(tmp_path: Path) -> None:
    log = tmp_path / "broken.log"
    log.write_text("line one\nfatal: no such thing\n")
    daemon = Daemon("broken", "false", ("false",), tmp_path / "broken.pid", log, str(tmp_path))
    with pytest.raises(SandboxError) as info:
        daemons.start(daemon, ready=lambda: True, deadline_s=1)
    text = str(info.value)
    assert "fatal: no such thing" in text
    assert str(log) in text


def test_a_daemon_that_never_writes_its_pid_file_times_out_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "silent.log"
    log.write_text("still starting\n")
    daemon = Daemon("silent", "true", ("true",), tmp_path / "silent.pid", log, str(tmp_path))
    with pytest.raises(SandboxError, match=r"did not write its pid file .* in 0.3 s") as info:
        daemons.start(daemon, ready=lambda: True, deadline_s=0.3)
    assert "still starting" in str(info.value)
