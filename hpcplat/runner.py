"""The one way hpcplat runs an external program.

Every call has a deadline, never goes through a shell, and fails with a typed error that keeps the
command, the exit code and stderr. Code that runs programs takes a :class:`Runner` so tests and
callers can inject their own (for example one that records calls); nothing patches ``subprocess``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

from hpcplat.errors import CommandError, CommandNotFound, CommandTimeout
from hpcplat.redact import redact_text

DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float


class Runner(Protocol):
    def __call__(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = True,
        error: type[CommandError] = CommandError,
    ) -> CommandResult: ...


def _describe(argv: Sequence[str]) -> str:
    """The command line for a message, credentials of URLs in it hidden (:mod:`hpcplat.redact`)."""
    shown = redact_text(" ".join(argv))
    return shown if len(shown) <= 200 else shown[:197] + "..."


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    check: bool = True,
    error: type[CommandError] = CommandError,
) -> CommandResult:
    """Run ``argv`` (no shell) and return its output.

    ``env`` entries are added to the current environment. ``error`` is the class raised on a
    non-zero exit when ``check`` is true (``SlurmError`` for Slurm commands, say); a missing
    program raises :class:`CommandNotFound` and a deadline overrun :class:`CommandTimeout`.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandNotFound(
            f"{argv[0]}: command not found",
            argv=argv,
            returncode=None,
            hint=f"install the package that provides {argv[0]!r} or put it on PATH",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandTimeout(
            f"{_describe(argv)}: no answer within {timeout:g} s (killed)",
            argv=argv,
            returncode=None,
            stdout=out,
            stderr=err,
        ) from exc
    result = CommandResult(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
        duration_s=time.monotonic() - started,
    )
    if check and proc.returncode != 0:
        detail = redact_text(proc.stderr.strip() or proc.stdout.strip() or "(no output)")
        raise error(
            f"{_describe(argv)} failed with exit code {proc.returncode}: {detail}",
            argv=argv,
            returncode=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
        )
    return result


def run_streaming(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    check: bool = True,
    error: type[CommandError] = CommandError,
) -> int:
    """Run ``argv`` with its output going straight to this process's stdout/stderr (a live
    progress display, say). Same deadline and typed errors as :func:`run`; returns the exit code."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.Popen(list(argv), env=full_env, cwd=cwd)
    except FileNotFoundError as exc:
        raise CommandNotFound(f"{argv[0]}: command not found", argv=argv, returncode=None) from exc
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise CommandTimeout(
            f"{_describe(argv)}: no answer within {timeout:g} s (killed)", argv=argv, returncode=None
        ) from exc
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if check and code != 0:
        raise error(f"{_describe(argv)} failed with exit code {code}", argv=argv, returncode=code)
    return code


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived child (a node agent, the training command under ``hpcplat.launch``) that
    the caller owns: it has no deadline here because its caller stops it (and waits for it) itself.
    ``env`` replaces the environment. A missing program raises :class:`CommandNotFound`."""
    try:
        return subprocess.Popen(
            list(argv), env=dict(env) if env is not None else None, cwd=cwd, stdout=stdout, stderr=stderr
        )
    except FileNotFoundError as exc:
        raise CommandNotFound(f"{argv[0]}: command not found", argv=argv, returncode=None) from exc
