"""Every command and Python block of README.md and docs/*.md runs against the live sandbox.

A fenced block whose info string is ``sh``, ``bash``, ``console`` or ``python`` is one test case,
named ``file:line`` (the line of its opening fence), run in the order of the file:

- ``sh`` and ``bash``: the block is a bash script (``set -euo pipefail`` first);
- ``console``: the lines starting with a prompt, ``$ `` or ``# ``, are the commands (prompt
  removed, run as one bash script like ``sh``); every other line is output and is not run;
- ``python``: the block is a program for ``.venv/bin/python``.

Each block runs in a fresh temporary directory, with the sandbox's environment (``hpcplat
sandbox env``) and the repository's ``.venv/bin`` first on ``PATH``, under a deadline. It fails
on a non-zero exit (its output is in the message) and when it leaves a Slurm job of its directory
queued or running (blocks wait for or cancel what they submit; the test cancels the leftovers).

An HTML comment on the line right before the fence changes that:

- ``<!-- doc-test: skip REASON -->``: not run; the test is skipped with REASON (only for what
  needs hardware or hosts this machine does not have);
- ``<!-- doc-test: cwd repository -->``: run in the repository root instead (a block that
  documents commands typed in a clone, such as ``.venv/bin/hpcplat``).

Blocks that only show syntax or a file layout use ``text`` (or no info string) and are not run.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcplat.errors import CommandTimeout
from hpcplat.runner import run
from hpcplat.sandbox import Sandbox

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_LANGUAGES = {"sh", "bash", "console", "python"}
BLOCK_TIMEOUT_S = 180
PROMPT = re.compile(r"^[$#] ")
FENCE = re.compile(r"^```\s*([\w+-]*)")
DIRECTIVE = re.compile(r"^<!--\s*doc-test:\s*(?P<word>\w+)\s*(?P<arg>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip: str | None = None
    in_repository: bool = False

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The runnable fenced blocks of one Markdown file, with the directive before each."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{path.relative_to(REPO)}:{i + 1}: the code block is never closed")
        language = match.group(1).lower()
        if language in RUN_LANGUAGES:
            skip, in_repository = directive_before(path, lines, i)
            code = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(Block(path, i + 1, language, code, skip, in_repository))
        i = end + 1
    return found


def directive_before(path: Path, lines: list[str], fence: int) -> tuple[str | None, bool]:
    """``(skip reason, in repository)`` from a ``<!-- doc-test: ... -->`` line right above the fence."""
    if fence == 0 or "doc-test" not in lines[fence - 1]:
        return None, False
    where = f"{path.relative_to(REPO)}:{fence}"
    match = DIRECTIVE.match(lines[fence - 1].strip())
    if match is None:
        raise ValueError(
            f"{where}: malformed directive {lines[fence - 1]!r} (<!-- doc-test: skip REASON -->)"
        )
    word, arg = match.group("word"), match.group("arg")
    if word == "skip" and arg:
        return arg, False
    if word == "cwd" and arg == "repository":
        return None, True
    raise ValueError(f"{where}: unknown directive {word!r} {arg!r} (use 'skip REASON' or 'cwd repository')")


def script_of(block: Block) -> tuple[list[str], str]:
    """The program to run a block with, and its text."""
    if block.language == "python":
        return [str(REPO / ".venv" / "bin" / "python"), "-"], block.code
    lines = block.code.splitlines()
    if block.language == "console":
        lines = [PROMPT.sub("", line, count=1) for line in lines if PROMPT.match(line)]
    return ["bash", "-s"], "set -euo pipefail\n" + "\n".join(lines) + "\n"


ALL_BLOCKS = [block for path in DOCS for block in blocks_of(path)]


def test_blocks_are_found() -> None:
    """The collection itself works: the docs do have runnable blocks, and ids are unique."""
    assert len(ALL_BLOCKS) >= 10
    assert len({b.name for b in ALL_BLOCKS}) == len(ALL_BLOCKS)


def test_console_blocks_have_commands() -> None:
    """A console block without a prompt line would silently run nothing."""
    empty = [
        b.name
        for b in ALL_BLOCKS
        if b.language == "console" and not any(map(PROMPT.match, b.code.splitlines()))
    ]
    assert not empty, f"console blocks with no '$ ' or '# ' command line: {empty}"


def test_console_convention() -> None:
    """Prompt lines are the commands (prompt removed, the rest kept as typed); the others are output."""
    block = Block(REPO / "README.md", 1, "console", "# echo 'a  b'   # note\noutput line\n$ true\n")
    assert script_of(block)[1] == "set -euo pipefail\necho 'a  b'   # note\ntrue\n"


def jobs_in(directory: Path, env: dict[str, str], grace_s: float = 5) -> list[str]:
    """Ids of jobs of ``directory`` (or below it) still queued or running once ``grace_s`` has
    passed (a job that just ended or was cancelled is COMPLETING for a moment)."""
    deadline = time.monotonic() + grace_s
    while True:
        out = run(["squeue", "--noheader", "--format=%i %T %Z"], timeout=30, env=env, check=False).stdout
        ids = []
        for line in out.splitlines():
            job_id, state, workdir = [*line.strip().split(" ", 2), "", ""][:3]
            inside = workdir == str(directory) or workdir.startswith(f"{directory}/")
            if inside and state != "COMPLETING":
                ids.append(job_id)
        if not ids or time.monotonic() > deadline:
            return ids
        time.sleep(0.5)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.name for b in ALL_BLOCKS])
def test_doc_block_runs(block: Block, sandbox: Sandbox) -> None:
    if block.skip:
        pytest.skip(f"{block.name}: {block.skip}")
    env = dict(sandbox.env())
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    argv, script = script_of(block)
    with tempfile.TemporaryDirectory(prefix="doc-test-") as tmp:
        workdir = REPO if block.in_repository else Path(tmp)
        try:
            result = run(argv, timeout=BLOCK_TIMEOUT_S, input=script, env=env, cwd=str(workdir), check=False)
        except CommandTimeout as exc:
            leftover = jobs_in(workdir, env) if not block.in_repository else []
            if leftover:
                run(["scancel", *leftover], timeout=30, env=env, check=False)
            pytest.fail(
                f"{block.name}: did not finish within {BLOCK_TIMEOUT_S} s\n--- script\n{script}"
                f"--- stdout\n{exc.stdout}--- stderr\n{exc.stderr}"
            )
        leftover = [] if block.in_repository else jobs_in(workdir, env)
        if leftover:
            run(["scancel", *leftover], timeout=30, env=env, check=False)
        output = f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
        assert result.returncode == 0, (
            f"{block.name} ({block.language}) exited {result.returncode}\n--- script\n{script}{output}"
        )
        assert not leftover, (
            f"{block.name} left jobs {' '.join(leftover)} queued or running (now cancelled): "
            f"a block must wait for or cancel what it submits\n{output}"
        )
