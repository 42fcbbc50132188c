"""Lmod: which modules exist on this machine (for the rerun drift check).

One ``bash`` process sources Lmod's init file and asks ``module is-avail`` for every module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from hpcplat.errors import HpcplatError
from hpcplat.runner import Runner, run

LMOD_TIMEOUT_S = 60.0
_INIT_CANDIDATES = (
    "/usr/share/lmod/lmod/init/bash",
    "/opt/lmod/lmod/init/bash",
    "/opt/apps/lmod/lmod/init/bash",
    "/usr/local/lmod/lmod/init/bash",
)
_SCRIPT = (
    'source "$1" >/dev/null 2>&1 || exit 97; shift; '
    'for m in "$@"; do '
    'if module is-avail "$m" >/dev/null 2>&1; then echo "yes $m"; else echo "no $m"; fi; '
    "done"
)


class LmodUnavailable(HpcplatError):
    """Lmod is not installed here, so module availability cannot be checked."""


def find_lmod_init(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    pkg = env.get("LMOD_PKG")
    candidates = ([f"{pkg}/init/bash"] if pkg else []) + list(_INIT_CANDIDATES)
    for candidate in candidates:
        if Path(candidate).is_file():
            return candidate
    return None


def module_availability(
    modules: Sequence[str],
    *,
    modulepath: str | None = None,
    environ: Mapping[str, str] | None = None,
    runner: Runner = run,
    init: str | None = None,
    timeout: float = LMOD_TIMEOUT_S,
) -> dict[str, bool]:
    """``{module: available}`` for each of ``modules`` under ``modulepath`` (default: $MODULEPATH),
    with Lmod's init script ``init`` (default: found with :func:`find_lmod_init`)."""
    if not modules:
        return {}
    init = init or find_lmod_init(environ)
    if init is None:
        raise LmodUnavailable(
            "Lmod is not installed on this machine: cannot check that the recorded modules exist",
            hint="run on a login node with Lmod, or pass --allow-drift",
        )
    env = dict(os.environ if environ is None else environ)
    if modulepath is not None:
        env["MODULEPATH"] = modulepath
    result = runner(
        ["bash", "--noprofile", "--norc", "-c", _SCRIPT, "bash", init, *modules],
        timeout=timeout,
        env=env,
        check=False,
    )
    if result.returncode == 97:
        raise LmodUnavailable(
            f"sourcing {init} failed", hint="check the Lmod installation, or pass --allow-drift"
        )
    answer = {m: False for m in modules}
    for line in result.stdout.splitlines():
        verdict, _, name = line.partition(" ")
        if name in answer:
            answer[name] = verdict == "yes"
    return answer
