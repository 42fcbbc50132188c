"""Code provenance: which repository, commit and branch, and the uncommitted diff.

Four ``git`` calls run at once (top level, status, ``origin`` URL, diff against ``HEAD``), each with
a deadline; the diff is stored only when status says the checkout is dirty. A directory that is
not a git checkout (or a machine without git) gives ``vcs = "none"`` with the reason, never an
error: a submission must not fail because its code is not under version control; the drift check
reports it instead.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpcplat.errors import CommandError
from hpcplat.redact import redact_url
from hpcplat.runner import Runner, run

GIT_TIMEOUT_S = 20.0
MAX_DIFF_BYTES = 16 * 1024 * 1024
"""A bigger diff is not stored (``diff_truncated``): it is almost always a data file checked in by mistake."""
MAX_UNTRACKED = 200
DIFF_ARGS = ("diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", "--no-relative")


@dataclass
class CodeState:
    vcs: str = "none"
    root: str = ""
    repo: str = ""
    """The ``origin`` remote URL with its credentials hidden (:func:`hpcplat.redact.redact_url`:
    ``https://<token>@host/...`` is recorded as ``https://<redacted>@host/...``), or empty."""
    commit: str | None = None
    branch: str | None = None
    """``None`` on a detached HEAD."""
    dirty: bool = False
    """Tracked files differ from ``commit`` (staged or not)."""
    diff: str = ""
    diff_truncated: bool = False
    untracked: list[str] = field(default_factory=list)
    reason: str = ""
    """Why nothing was captured, when ``vcs`` is ``none``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _git(runner: Runner, cwd: str, *args: str, check: bool = True) -> str:
    return runner(["git", "-C", cwd, *args], timeout=GIT_TIMEOUT_S, check=check).stdout


def capture_code(cwd: str | Path | None = None, *, runner: Runner = run) -> CodeState:
    """The git state of the checkout containing ``cwd`` (default: the current directory).

    The four calls run at once (waiting for a program releases the GIL): ``status`` here,
    ``rev-parse``, ``config`` and ``diff HEAD`` in worker threads. The diff is started before
    ``status`` says whether the checkout is dirty, so a dirty checkout costs no extra round; it is
    kept only when it is dirty (a clean checkout's diff is not waited for). ``status`` and
    ``diff --no-relative`` work from any directory of the checkout."""
    where = str(Path(cwd) if cwd is not None else Path.cwd())
    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="git")
    try:
        top = pool.submit(_git, runner, where, "rev-parse", "--show-toplevel")
        remote = pool.submit(
            runner,
            ["git", "-C", where, "config", "--get", "remote.origin.url"],
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        diff = pool.submit(runner, ["git", "-C", where, *DIFF_ARGS], timeout=GIT_TIMEOUT_S, check=False)
        status_error: CommandError | None = None
        try:
            status = _git(
                runner, where, "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal"
            )
        except CommandError as exc:
            status, status_error = "", exc  # not a checkout, or no git: rev-parse says which
        try:
            root = top.result().strip()
        except CommandError as exc:
            reason = "git is not installed" if exc.returncode is None else f"{where} is not in a git checkout"
            return CodeState(reason=reason)
        if status_error is not None:
            raise status_error
        state = CodeState(vcs="git", root=root)
        _parse_status(status, state)
        found = remote.result()
        state.repo = redact_url(found.stdout.strip()) if found.returncode == 0 else ""
        if state.commit is not None and state.dirty:
            early = diff.result() if diff.exception() is None else None
            # A failed early diff is run again, so that its error is raised as before.
            text = (
                early.stdout
                if early is not None and early.returncode == 0
                else _git(runner, root, *DIFF_ARGS)
            )
            if len(text.encode()) > MAX_DIFF_BYTES:
                state.diff_truncated = True
            else:
                state.diff = text
        return state
    finally:
        pool.shutdown(wait=False)


def _parse_status(text: str, state: CodeState) -> None:
    """``git status --porcelain=v2 --branch -z``: headers, then NUL-separated entries."""
    records = text.split("\0")
    i = 0
    while i < len(records):
        record = records[i]
        i += 1
        if not record:
            continue
        if record.startswith("# branch.oid "):
            oid = record.split(" ", 2)[2]
            state.commit = None if oid == "(initial)" else oid
        elif record.startswith("# branch.head "):
            head = record.split(" ", 2)[2]
            state.branch = None if head == "(detached)" else head
        elif record.startswith("#"):
            continue
        elif record.startswith("? "):
            if len(state.untracked) < MAX_UNTRACKED:
                state.untracked.append(record[2:])
        elif record[0] in "12u":
            state.dirty = True
            if record[0] == "2":
                i += 1  # a rename/copy entry is followed by its original path
        # "!" (ignored) entries are not requested
