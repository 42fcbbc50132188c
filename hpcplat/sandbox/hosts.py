"""The sandbox's lines in /etc/hosts, so node names resolve (``127.0.1.3 n3``).

Each line ends with a comment naming the sandbox; :func:`update` replaces exactly those lines and
keeps every other line as it was. The file is rewritten atomically (:func:`hpcplat.files.atomic_write`).
"""

from __future__ import annotations

import errno
from pathlib import Path

from hpcplat.files import atomic_write

HOSTS = Path("/etc/hosts")


def marker(sandbox: str) -> str:
    return f"# hpcplat-sandbox:{sandbox}"


def rewrite(text: str, sandbox: str, entries: list[tuple[str, str]]) -> str:
    """``text`` with the sandbox's lines replaced by one line per (address, name) in ``entries``.

    The new lines go where the sandbox's first line was (at the end when there was none), so
    rewriting with the same entries gives the same text.
    """
    tag = marker(sandbox)
    lines = text.splitlines()
    ours = [i for i, line in enumerate(lines) if line.rstrip().endswith(tag)]
    at = ours[0] if ours else len(lines)
    kept = [line for i, line in enumerate(lines) if i not in set(ours)]
    new = [f"{addr}\t{name}\t{tag}" for addr, name in entries]
    result = kept[:at] + new + kept[at:]
    return "\n".join(result) + "\n"


def update(sandbox: str, entries: list[tuple[str, str]], path: Path = HOSTS) -> bool:
    """Make ``path`` hold exactly ``entries`` for ``sandbox``; False when nothing changed."""
    current = path.read_text()
    wanted = rewrite(current, sandbox, entries)
    if wanted == current:
        return False
    try:
        atomic_write(path, wanted, mode=path.stat().st_mode & 0o777)
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        # A bind-mounted /etc/hosts (containers) cannot be replaced: write it in place.
        path.write_text(wanted)
    return True
