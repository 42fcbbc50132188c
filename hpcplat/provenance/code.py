"""Code provenance: which repository, commit and branch, and the uncommitted diff.

Four ``git`` calls, each with a deadline. A directory that is not a git checkout (or a machine
without git) gives ``vcs = "none"`` with the reason, never an error: a submission must not fail
because its code is not under version control; the drift check reports it instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpcplat.errors import CommandError
from hpcplat.runner import Runner, run

GIT_TIMEOUT_S = 20.0
MAX_DIFF_BYTES = 16 * 1024 * 1024
"""A bigger diff is not stored (``diff_truncated``): it is almost always a data file checked in by mistake."""
MAX_UNTRACKED = 200


@dataclass
class CodeState:
    vcs: str = "none"
    root: str = ""
    repo: str = ""
    """The ``origin`` remote URL, or empty."""
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
    """The git state of the checkout containing ``cwd`` (default: the current directory)."""
    where = str(Path(cwd) if cwd is not None else Path.cwd())
    try:
        root = _git(runner, where, "rev-parse", "--show-toplevel").strip()
    except CommandError as exc:
        reason = "git is not installed" if exc.returncode is None else f"{where} is not in a git checkout"
        return CodeState(reason=reason)
    state = CodeState(vcs="git", root=root)
    status = _git(runner, root, "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal")
    _parse_status(status, state)
    remote = runner(
        ["git", "-C", root, "config", "--get", "remote.origin.url"], timeout=GIT_TIMEOUT_S, check=False
    )
    state.repo = remote.stdout.strip() if remote.returncode == 0 else ""
    if state.commit is not None and state.dirty:
        diff = _git(runner, root, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
        if len(diff.encode()) > MAX_DIFF_BYTES:
            state.diff_truncated = True
        else:
            state.diff = diff
    return state


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
